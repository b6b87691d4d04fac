"""Nuclei centres (paper: "we binarize the nucleus images using Otsu's method and apply Laplacian
of Gaussian filter on the binarized image").

:func:`find_nuclei_centres` follows the paper's two steps and makes the unstated choices
explicit:

1. Otsu binarisation of the Hoechst image (at full resolution after a light Gaussian smoothing
   of 1 px, which only removes single-pixel noise from the mask). A field whose two Otsu classes
   are less than ``min_contrast`` background standard deviations apart holds only noise and
   gets no nuclei (Otsu always splits, even a histogram with one mode).
2. The scale-normalised Laplacian of Gaussian of the binary mask, ``-sigma^2 LoG``, with
   ``sigma = d / (2 sqrt 2)`` for a nucleus diameter ``d``: the scale at which a disk of
   diameter ``d`` gives the strongest response (``2/e`` at its centre).
3. Centres are the local maxima of that response that lie inside the foreground, at least
   ``min_distance`` apart (default ``d / 2``), and whose response exceeds ``min_response``
   (default ``0.25``, about a third of a full disk's), so foreground noise and slivers at the
   border of the field are not taken for nuclei.

For speed the LoG is computed on the mask averaged over ``k x k`` blocks when nuclei are large
(``k = floor(d / 6)``, so that a nucleus still spans at least 6 pixels); centres are mapped back
to full-resolution pixels (within ``k / 2`` px). ``downsample=1`` forces full resolution.

:func:`detection_scores` matches detected to true centres one-to-one (Hungarian assignment) and
returns precision, recall and F1.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import block_reduce


def log_sigma(nucleus_diameter_px: float) -> float:
    """The LoG scale tied to a nucleus diameter: ``d / (2 sqrt 2)`` (a disk's radius is sqrt 2 sigma)."""
    return float(nucleus_diameter_px) / (2.0 * np.sqrt(2.0))


def otsu_threshold(img: np.ndarray, nbins: int = 256) -> tuple[float, float]:
    """Otsu's threshold of an image and the separation of its two classes.

    The histogram is counted on the image quantised to ``nbins`` levels over its range (as
    ``skimage.filters.threshold_otsu`` does, with a faster count). Returns the threshold and
    ``(mean of the upper class - mean of the lower class) / standard deviation of the lower
    class`` (both from the histogram).
    """
    lo, hi = float(img.min()), float(img.max())
    width = (hi - lo) / nbins
    q = np.minimum((img - np.float32(lo)) * np.float32(1.0 / width), nbins - 1).astype(np.int32)
    counts = np.bincount(q.ravel(), minlength=nbins)[:nbins]
    centres = lo + (np.arange(nbins) + 0.5) * width
    t = float(threshold_otsu(hist=(counts, centres)))
    below = centres <= t
    if counts[below].sum() == 0 or counts[~below].sum() == 0:
        return t, 0.0
    m0, m1 = (float(np.average(centres[m], weights=counts[m])) for m in (below, ~below))
    sd0 = float(np.sqrt(np.average((centres[below] - m0) ** 2, weights=counts[below])))
    return t, (m1 - m0) / max(sd0, width / np.sqrt(12.0))


def otsu_mask(hoechst: np.ndarray, smoothing: float = 1.0, min_contrast: float = 0.0) -> np.ndarray:
    """Otsu foreground of a nucleus image (after Gaussian smoothing of ``smoothing`` px).

    A constant image has no foreground (all False), and so has an image whose Otsu classes are
    less than ``min_contrast`` background standard deviations apart (noise alone: Otsu splits
    a unimodal histogram into halves about 1.6 standard deviations apart).
    """
    img = np.asarray(hoechst, dtype=np.float32)
    if smoothing > 0:
        img = ndi.gaussian_filter(img, smoothing)
    if not float(img.max()) > float(img.min()):
        return np.zeros(img.shape, bool)
    t, contrast = otsu_threshold(img)
    if min_contrast > 0 and contrast < min_contrast:
        return np.zeros(img.shape, bool)
    return img > t


def find_nuclei_centres(hoechst: np.ndarray, nucleus_diameter_px: float, *,
                        min_distance: float | None = None, min_response: float = 0.25,
                        smoothing: float | None = None, min_contrast: float = 4.0,
                        downsample: int | None = None) -> np.ndarray:
    """Nuclei centres of one Hoechst field: Otsu, LoG on the binary mask, foreground maxima.

    Parameters
    ----------
    hoechst
        The nucleus channel of one field (2-D; flat-field corrected preferably).
    nucleus_diameter_px
        Typical nucleus diameter in pixels; sets the LoG scale ``d / (2 sqrt 2)``.
    min_distance
        Minimum distance between two centres in pixels (default ``d / 2``).
    min_response
        Minimum scale-normalised LoG response of a centre (a full disk gives ``2/e = 0.74``).
    smoothing
        Gaussian smoothing (px) before Otsu's threshold; default 1 px at full resolution and none
        when the mask is block-averaged for the LoG (the averaging removes single-pixel noise).
    min_contrast
        A field whose Otsu foreground is less than this many background standard deviations
        brighter than its background holds no nuclei (noise only).
    downsample
        Block size for the LoG (default ``max(1, floor(d / 6))``; 1 for full resolution).

    Returns
    -------
    numpy.ndarray
        ``(N, 2)`` int64 array of ``(row, col)`` centres, ordered by decreasing response; ``N = 0``
        for a field without foreground (all dark or constant).
    """
    img = np.asarray(hoechst)
    if img.ndim != 2:
        raise ValueError(f"the nucleus image must be 2-D, got shape {img.shape}")
    d = float(nucleus_diameter_px)
    if not d > 0:
        raise ValueError(f"nucleus_diameter_px must be positive, got {nucleus_diameter_px}")
    k = int(downsample) if downsample is not None else max(1, int(d // 6))
    if k < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    mask = otsu_mask(img, (1.0 if k == 1 else 0.0) if smoothing is None else smoothing, min_contrast)
    # the fraction of foreground pixels in each k x k block (partial blocks padded with background)
    small = block_reduce(mask, k, np.sum, func_kwargs={"dtype": np.uint16}).astype(np.float32) * np.float32(1 / k**2)
    sigma = log_sigma(d) / k
    # -sigma^2 LoG as Gaussian smoothing followed by the discrete Laplacian (two separable passes)
    response = -(sigma**2) * ndi.laplace(ndi.gaussian_filter(small, sigma, truncate=3.0))
    md = max(1, int(round((min_distance if min_distance is not None else d / 2) / k)))
    peaks = peak_local_max(response, min_distance=md, threshold_abs=min_response,
                           exclude_border=False)
    peaks = np.minimum(peaks * k + (k - 1) // 2, np.array(img.shape) - 1)  # block centres, full-resolution px
    return peaks[mask[peaks[:, 0], peaks[:, 1]]].astype(np.int64).reshape(-1, 2)


def match_points(detected: np.ndarray, truth: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of detected to true points within ``radius`` (minimum total distance, by
    the Hungarian assignment): the indices into ``detected`` and into ``truth`` of the matched pairs."""
    detected = np.asarray(detected, dtype=float).reshape(-1, 2)
    truth = np.asarray(truth, dtype=float).reshape(-1, 2)
    dist = cdist(detected, truth)
    cand = dist <= radius
    r, c = linear_sum_assignment(np.where(cand, dist, radius * 1e6 + 1e6))  # pairs beyond radius dropped below
    keep = cand[r, c]
    return r[keep], c[keep]


def detection_scores(detected: np.ndarray, truth: np.ndarray, radius: float) -> dict[str, float]:
    """Precision, recall and F1 of detected points against true ones (matching within ``radius``).

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1`` (precision or recall of an empty
        set is 1 when the other set is empty too, else 0).
    """
    n_det, n_true = len(np.asarray(detected).reshape(-1, 2)), len(np.asarray(truth).reshape(-1, 2))
    tp = len(match_points(detected, truth, radius)[0])
    return sum_scores([{"tp": tp, "fp": n_det - tp, "fn": n_true - tp}])


def sum_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """Pool per-field :func:`detection_scores` (sums of tp/fp/fn, then precision/recall/F1)."""
    tp, fp, fn = (sum(s[k] for s in scores) for k in ("tp", "fp", "fn"))
    precision = tp / (tp + fp) if tp + fp else float(fn == 0)
    recall = tp / (tp + fn) if tp + fn else float(fp == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}
