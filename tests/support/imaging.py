"""Test and benchmark images of the flat-field correction, and its accuracy criterion."""

from __future__ import annotations

import numpy as np


def relative_deviation(approx: np.ndarray, reference: np.ndarray) -> float:
    """``max |approx - reference| / |reference|`` over pixels (the fast-vs-exact criterion)."""
    reference = np.asarray(reference, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(approx, dtype=np.float64) - reference) / np.abs(reference)))


def vignetting_field(shape: tuple[int, int], strength: float = 0.4, centre: tuple[float, float] | None = None,
                     tilt: float = 0.1) -> np.ndarray:
    """A smooth, realistic illumination profile (radial cos^4-like fall-off plus a linear tilt).

    Used to build test and benchmark images: values are 1 at the optical centre and about
    ``1 - strength`` in the corners.
    """
    h, w = shape
    cy, cx = centre if centre is not None else ((h - 1) / 2 * 1.1, (w - 1) / 2 * 0.93)
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (0.5 * (h**2 + w**2))
    return ((1.0 - strength * r2 * (1.0 + 0.3 * r2)) * (1.0 + tilt * (xx - cx) / w)).astype(np.float64)
