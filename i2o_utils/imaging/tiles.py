"""Cell-centred tiles (paper: "a 128x128 tile for each nuclei").

A tile of size ``s`` around a nucleus centre ``(row, col)`` has its top-left corner at
``(r0, c0) = (row - s // 2, col - s // 2)`` and is ``field[:, r0:r0 + s, c0:c0 + s]``; the corner
indexes the field's first and second array axes, as in the authors' TILES files
(:func:`i2o_utils.data.layout.write_well_tiles`).

Border rule (``border``):

``"drop"`` (default)
    A nucleus whose tile would reach outside the field is dropped: every tile is made of image
    pixels only, and every corner in a TILES file satisfies ``0 <= r0 <= H - s`` and
    ``0 <= c0 <= W - s`` (the authors' reader slices without padding). A band of ``s / 2`` px
    along the border yields no tiles (about 22% of a 1080x1080 field's area for ``s = 128``).
``"pad"``
    Every nucleus gets a tile; pixels outside the field are filled with ``pad_value`` (0, i.e.
    no signal). Corners may then be negative or beyond ``H - s``.

Stored tiles are integers: :func:`to_tile_dtype`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

BorderRule = Literal["drop", "pad"]


def tile_corners(centres: np.ndarray, field_shape: tuple[int, int], tile_size: int,
                 border: BorderRule = "drop") -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of the tiles (side ``tile_size`` px) centred on ``centres`` (``(N, 2)``,
    ``(row, col)``) in a field of shape ``field_shape`` ``(H, W)``, under the ``border`` rule.

    Returns
    -------
    corners, kept
        ``(M, 2)`` int64 corners ``(r0, c0)`` and the indices into ``centres`` they belong to.
    """
    centres = np.asarray(centres).reshape(-1, 2)
    s = int(tile_size)
    if s < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if border not in ("drop", "pad"):
        raise ValueError(f"border must be 'drop' or 'pad', got {border!r}")
    corners = np.rint(centres).astype(np.int64) - s // 2
    ok = ((corners >= 0).all(axis=1) & (corners + s <= np.asarray(field_shape[:2])).all(axis=1)
          if border == "drop" else np.ones(len(corners), bool))
    return corners[ok], np.flatnonzero(ok)


def extract_tiles(field: np.ndarray, corners: np.ndarray, tile_size: int,
                  pad_value: float = 0) -> np.ndarray:
    """The tiles ``field[:, r0:r0+s, c0:c0+s]`` of a ``(C, H, W)`` field at the ``(M, 2)`` corners of
    :func:`tile_corners` (``s = tile_size``): ``(M, C, s, s)`` of the field's dtype. Pixels outside
    the field (``border="pad"``) get ``pad_value``.
    """
    field = np.asarray(field)
    corners = np.asarray(corners, dtype=np.int64).reshape(-1, 2)
    s = int(tile_size)
    _, h, w = field.shape
    reach = int(max(0, -corners.min(), (corners + s - (h, w)).max())) if len(corners) else 0  # px outside
    if reach > s:
        raise ValueError("a tile corner lies more than a tile outside the field")
    if reach:
        field = np.pad(field, ((0, 0), (s, s), (s, s)), constant_values=pad_value)
        corners = corners + s
    windows = np.lib.stride_tricks.sliding_window_view(field, (s, s), axis=(1, 2))  # (C, H-s+1, W-s+1, s, s)
    return np.ascontiguousarray(windows[:, corners[:, 0], corners[:, 1]].transpose(1, 0, 2, 3))  # (M, C, s, s)


def dtype_max(dtype) -> int:
    """The value that maps to 1.0 for a tile dtype (255 for uint8, 65535 for uint16)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"tile dtype must be uint8 or uint16, got {dtype}")
    return int(np.iinfo(dtype).max)


def to_tile_dtype(tiles: np.ndarray, scale: np.ndarray, dtype="uint8") -> np.ndarray:
    """Corrected float intensities -> stored integers: ``round(clip(I / scale[c], 0, 1) * M)``.

    Parameters
    ----------
    tiles
        ``(..., C, s, s)`` corrected intensities.
    scale
        ``(C,)`` intensity of each channel stored as the maximum value.
    dtype
        ``"uint8"`` (``M = 255``) or ``"uint16"`` (``M = 65535``); ``stored / M`` lies in ``[0, 1]``.
    """
    m = dtype_max(dtype)
    scale = np.asarray(scale, dtype=np.float32).reshape(-1, 1, 1)
    if not (scale > 0).all():
        raise ValueError(f"channel scales must be positive, got {scale.ravel().tolist()}")
    x = np.asarray(tiles, dtype=np.float32) * (np.float32(m) / scale)
    np.clip(x, 0, m, out=x)
    return np.rint(x).astype(dtype)


def intensity_scale(fields: np.ndarray, quantile: float = 99.9) -> np.ndarray:
    """Per-channel scale for :func:`to_tile_dtype`: the ``quantile`` (percent) of the corrected
    intensities of ``fields``, ``(N, C, H, W)`` (a sample of the screen); 1 where it is not positive."""
    fields = np.asarray(fields)
    if fields.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) fields, got shape {fields.shape}")
    q = np.percentile(fields.transpose(1, 0, 2, 3).reshape(fields.shape[1], -1), quantile, axis=1)
    return np.where(q > 0, q, 1.0).astype(np.float32)
