"""Flat-field (shading) correction per plate and channel (paper: "Image Preprocessing").

The paper estimates, for the images of plate ``i`` (one channel at a time),

.. math::

    F^i = G_\\sigma * \\Big(P_k * \\frac{1}{N} \\sum_{n=1}^{N} I_{measured,n}\\Big), \\qquad
    I_{corrected} = I_{measured} / F^i

with :math:`G_\\sigma` a Gaussian of standard deviation :math:`\\sigma = 50` px and :math:`P_k` a
10th-percentile filter of size :math:`k = 250` px. :math:`F` is used as estimated (it is not
rescaled), so corrected intensities are in units of the plate's local background level and a
plate-wide brightness shift divides out with the shading.

Two ways to compute the same :math:`F`:

``method="exact"``
    The literal computation at full resolution: ``scipy.ndimage.percentile_filter`` with a
    ``k x k`` window, then ``scipy.ndimage.gaussian_filter``. Tens of minutes for one
    1080x1080 image on one core (``benchmarks/bench_imaging.py`` times it).
``method="fast"`` (default)
    The flat field is smooth on the scale of ``k`` and ``sigma``, so the same operators are
    applied on the mean image subsampled every ``step`` pixels (``step = k // 25`` by default:
    the percentile of a ``k x k`` window is estimated from the ``(k/step)^2`` pixels of its
    subsampled grid, the Gaussian is applied with ``sigma / step``) and the result is brought
    back to full resolution by separable cubic (Keys) interpolation. Well under a second for
    1080x1080; ``benchmarks/bench_imaging.py`` reports the deviation from ``"exact"`` and the
    speed ratio.

The mean image is accumulated in one streaming pass (:class:`MeanAccumulator`), so a plate is
never held in memory.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage as ndi

FlatfieldMethod = Literal["fast", "exact"]

#: Subsampled window size targeted by ``method="fast"`` (``step = size // FAST_WINDOW``).
FAST_WINDOW = 25


class MeanAccumulator:
    """Running mean of equally shaped arrays (one image, or the channels of a field), accumulated
    in float64 without keeping them."""

    def __init__(self) -> None:
        self.sum: np.ndarray | None = None
        self.count: int = 0

    def add(self, image: np.ndarray, *, batch: bool = False, where: str = "") -> None:
        """Add one image of the accumulated shape, or with ``batch=True`` a stack ``(n, *shape)``;
        ``where`` (a file or well) is named in the error on a shape mismatch."""
        image = np.asarray(image)
        if batch:  # astype and sum both copy: the first part can become the running sum
            self._add(image.sum(axis=0, dtype=np.float64), image.shape[0], where or "image")
        else:
            self._add(image.astype(np.float64), 1, where or "image")

    def merge(self, other: "MeanAccumulator") -> None:
        """Add the images accumulated by another accumulator (e.g. on another worker)."""
        if other.sum is not None:
            self._add(other.sum.copy() if self.sum is None else other.sum, other.count, "merged mean")

    def _add(self, part: np.ndarray, n: int, where: str) -> None:
        if self.sum is None:
            self.sum = part
        elif part.shape != self.sum.shape:
            raise ValueError(f"{where}: shape {part.shape} differs from the accumulated images' shape "
                             f"{self.sum.shape}")
        else:
            self.sum += part
        self.count += n

    @property
    def mean(self) -> np.ndarray:
        """The mean of the images added so far (float64)."""
        if self.sum is None or self.count == 0:
            raise ValueError("no image was accumulated")
        return self.sum / self.count


def _keys_weights(n_out: int, n_in: int, step: int, offset: int) -> np.ndarray:
    """Matrix (n_out, n_in) interpolating samples at ``offset + step * j`` onto pixels ``0..n_out-1``.

    Keys' cubic convolution (a = -0.5); indices beyond the grid are clamped to its edge.
    """
    u = (np.arange(n_out) - offset) / step
    base = np.floor(u).astype(int)
    t = u - base
    w = np.zeros((n_out, n_in))
    a = -0.5
    for k in (-1, 0, 1, 2):
        d = np.abs(t - k)
        wk = np.where(d <= 1, (a + 2) * d**3 - (a + 3) * d**2 + 1,
                      np.where(d < 2, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, 0.0))
        idx = np.clip(base + k, 0, n_in - 1)
        np.add.at(w, (np.arange(n_out), idx), wk)
    return w


def default_step(size: int) -> int:
    """Subsampling step of the fast method: about ``size / 25`` (at least 2 for windows of 16 px or
    more), lowered to a divisor of ``size`` when there is one, so the window is exactly ``size``."""
    size = int(size)
    step = max(2 if size >= 16 else 1, size // FAST_WINDOW)
    return next((s for s in range(step, 1, -1) if size % s == 0), step)


def flatfield_from_mean(mean: np.ndarray, percentile: float = 10, size: int = 250,
                        sigma: float = 50, method: FlatfieldMethod = "fast",
                        step: int | None = None) -> np.ndarray:
    """``G_sigma * (P_size * mean)``: the flat field of a plate's mean image (one channel).

    Parameters
    ----------
    mean
        The mean image (2-D).
    percentile, size, sigma
        The percentile filter (percentile in 0-100, window ``size x size``) and the Gaussian's
        standard deviation, in full-resolution pixels.
    method
        ``"fast"`` (subsampled grid, see the module docstring) or ``"exact"`` (literal).
    step
        Subsampling step for ``"fast"``; default :func:`default_step`.

    Returns
    -------
    numpy.ndarray
        The flat field, float32, same shape as ``mean``.
    """
    mean = np.asarray(mean, dtype=np.float64)
    if mean.ndim != 2:
        raise ValueError(f"the mean image must be 2-D, got shape {mean.shape}")
    if not np.isfinite(mean).all():
        raise ValueError("the mean image holds NaN or infinite values")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be within 0-100, got {percentile}")
    size = int(size)
    if size < 1 or sigma < 0:
        raise ValueError(f"size must be >= 1 and sigma >= 0, got size={size}, sigma={sigma}")
    if method not in ("fast", "exact"):
        raise ValueError(f"method must be 'fast' or 'exact', got {method!r}")
    step = int(step) if step is not None else default_step(size)
    if method == "exact" or step <= 1:
        p = percentile_filter_exact(mean, percentile, size)
        return ndi.gaussian_filter(p, sigma, mode="reflect").astype(np.float32)
    offset = step // 2
    p = grid_percentile(mean, percentile, size, step, offset)
    p = ndi.gaussian_filter(p, sigma / step, mode="reflect")
    wr = _keys_weights(mean.shape[0], p.shape[0], step, offset)
    wc = _keys_weights(mean.shape[1], p.shape[1], step, offset)
    return (wr @ p @ wc.T).astype(np.float32)


def percentile_filter_exact(image: np.ndarray, percentile: float, size: int,
                            rows: slice | None = None, max_bytes: int = 2**28) -> np.ndarray:
    """The literal percentile filter of a 2-D image, identical to ``scipy.ndimage.percentile_filter``
    (``mode="reflect"``, rank ``int(size**2 * percentile / 100)``), as float64; only the output
    ``rows`` if given (a timing or a spot check).

    SciPy precomputes ``size**4`` offsets for a square window (31 GB for ``size = 250``), so for
    large windows the same order statistic is taken row by row from explicit windows
    (``numpy.partition``), in column chunks of at most ``max_bytes``.
    """
    image = np.asarray(image, dtype=np.float64)
    h, w = image.shape
    if rows is None and size**4 * 8 <= 2**31:
        return ndi.percentile_filter(image, percentile, size=size, mode="reflect")
    n = size * size
    rank = n - 1 if percentile >= 100 else int(n * percentile / 100.0)
    before = size // 2
    padded = np.pad(image, ((before, size - 1 - before),) * 2, mode="symmetric")
    out_rows = range(h)[rows] if rows is not None else range(h)
    out = np.empty((len(out_rows), w))
    chunk = max(1, int(max_bytes // (n * 8)))
    for i, y in enumerate(out_rows):
        band = padded[y:y + size]
        windows = np.lib.stride_tricks.sliding_window_view(band, size, axis=1)  # (size, w, size)
        for c0 in range(0, w, chunk):
            vals = windows[:, c0:c0 + chunk].transpose(1, 0, 2).reshape(-1, n)
            out[i, c0:c0 + chunk] = np.partition(vals, rank, axis=1)[:, rank]
    return out


def grid_percentile(image: np.ndarray, percentile: float, size: int, step: int, offset: int = 0,
                    n_bins: int = 256) -> np.ndarray:
    """The percentile filter of ``image`` evaluated only at the grid points ``offset + step * j``.

    Each grid point's window is ``round(size / step)`` blocks of ``step x step`` pixels wide
    (exactly ``size`` when ``step`` divides it, else within ``step / 2``) and holds every
    full-resolution pixel, so no pixel is skipped. Counting is done on histograms: pixels are binned once (``n_bins`` bins, three quarters with
    edges at quantiles of the image, narrow where values are dense, a quarter evenly spaced), block histograms are
    summed over each window with cumulative sums, and the percentile is read off the window's
    cumulative histogram with linear interpolation inside the bin. Borders are reflected as in
    ``scipy.ndimage`` (``mode="reflect"``); the rank follows ``scipy.ndimage.percentile_filter``.

    Returns
    -------
    numpy.ndarray
        ``(len(range(offset, H, step)), len(range(offset, W, step)))`` float64 values.
    """
    image = np.asarray(image, dtype=np.float64)
    h, w = image.shape
    kb = max(1, int(round(size / step)))
    win = kb * step
    ny, nx = len(range(offset, h, step)), len(range(offset, w, step))
    origin = offset - win // 2  # first row/column of the first window, in image coordinates
    end_y, end_x = origin + step * (ny + kb - 1), origin + step * (nx + kb - 1)
    pads = ((max(0, -origin), max(0, end_y - h)), (max(0, -origin), max(0, end_x - w)))
    padded = np.pad(image, pads, mode="symmetric")
    y0, x0 = origin + pads[0][0], origin + pads[1][0]
    region = padded[y0:y0 + step * (ny + kb - 1), x0:x0 + step * (nx + kb - 1)]

    # edges at quantiles (narrow bins where values are dense) and evenly spaced (the tails)
    sample = image[::2, ::2].ravel()
    edges = np.unique(np.concatenate([np.quantile(sample, np.linspace(0.0, 1.0, n_bins - n_bins // 4 + 1)),
                                      np.linspace(image.min(), image.max(), n_bins // 4 + 1)]))
    edges[0], edges[-1] = image.min(), image.max()
    if len(edges) < 2:  # a constant image
        return np.full((ny, nx), image.flat[0])
    nb = len(edges) - 1
    bins = np.clip(np.searchsorted(edges, region, side="right") - 1, 0, nb - 1)
    by, bx = ny + kb - 1, nx + kb - 1
    block = (np.arange(by * step) // step)[:, None] * bx + (np.arange(bx * step) // step)[None, :]
    hist = np.bincount((block * nb + bins).ravel(), minlength=by * bx * nb)
    hist = hist.reshape(by, bx, nb).astype(np.int32)
    # window sums over kb blocks along rows, then columns (cumulative-sum differences)
    c = np.concatenate([np.zeros((1, bx, nb), np.int32), np.cumsum(hist, axis=0, dtype=np.int32)])
    hist = c[kb:] - c[:-kb]
    c = np.concatenate([np.zeros((ny, 1, nb), np.int32), np.cumsum(hist, axis=1, dtype=np.int32)], axis=1)
    hist = c[:, kb:] - c[:, :-kb]
    cum = np.cumsum(hist, axis=2, dtype=np.int32)
    rank = int(win * win * percentile / 100.0)
    rank = min(max(rank, 0), win * win - 1)
    i = np.argmax(cum > rank, axis=2)
    count = np.take_along_axis(hist, i[..., None], axis=2)[..., 0].astype(np.float64)
    before = np.take_along_axis(cum, i[..., None], axis=2)[..., 0] - count
    frac = (rank + 0.5 - before) / np.maximum(count, 1.0)
    return edges[i] + frac * (edges[i + 1] - edges[i])


def correct_image(image: np.ndarray, flatfield: np.ndarray, *, dark_offset: float = 0.0,
                  where: str = "") -> np.ndarray:
    """``(I - d) / (F - d)`` as float32 (``d``: ``dark_offset``, the camera offset; 0 gives the
    paper's ``I / F``); ``image`` (..., H, W) broadcasts against ``flatfield`` (..., H, W).

    Raises
    ------
    ValueError
        When the shapes do not broadcast or the flat field has non-positive values, naming
        ``where`` (a file or well).
    """
    image = np.asarray(image)
    d = np.float32(dark_offset)
    flatfield = np.asarray(flatfield, dtype=np.float32) - d
    if image.shape[-2:] != flatfield.shape[-2:]:
        raise ValueError(f"{where or 'image'}: field shape {image.shape[-2:]} differs from the "
                         f"flat field's {flatfield.shape[-2:]}")
    if not (flatfield > 0).all():
        raise ValueError(f"{where or 'flat field'}: the flat field has non-positive values "
                         "(an all-dark plate or channel?)")
    out = image.astype(np.float32)  # a copy: corrected in place, one float32 array in memory
    if d:
        out -= d
    out *= np.float32(1.0) / flatfield
    return out
