"""Flat-field (shading) correction: the paper's formula, the fast method, streaming means."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from i2o_utils.imaging.flatfield import (MeanAccumulator, correct_image, default_step, flatfield_from_mean,
                                         grid_percentile, percentile_filter_exact)
from tests.support.imaging import relative_deviation, vignetting_field


def _plate_images(n: int, shape=(128, 128), seed: int = 0, cells: int = 40):
    """Images of one plate: blobs on a background, all under the same vignetting (the truth)."""
    rng = np.random.default_rng(seed)
    vig = vignetting_field(shape, strength=0.45)
    for _ in range(n):
        img = np.full(shape, 200.0)
        ys, xs = rng.integers(0, shape[0], cells), rng.integers(0, shape[1], cells)
        img[ys, xs] += rng.uniform(2e3, 8e3, cells)
        img = ndi.gaussian_filter(img, 2.0)
        yield np.clip(rng.poisson(img * vig) + rng.normal(0, 3, shape), 0, 65535).astype(np.uint16)


def _streamed_mean(images) -> np.ndarray:
    """The plate mean as the pipeline takes it: one image at a time into a running sum."""
    acc = MeanAccumulator()
    for img in images:
        acc.add(img)
    return acc.mean


def test_exact_is_the_papers_formula():
    """F = G_sigma * (P_k * mean), computed independently with scipy on the stacked mean."""
    stack = np.stack(list(_plate_images(6, (64, 64))))
    expected = ndi.gaussian_filter(ndi.percentile_filter(stack.mean(axis=0), 10, size=21), 5.0)
    got = flatfield_from_mean(_streamed_mean(iter(stack)), percentile=10, size=21, sigma=5.0, method="exact")
    assert got.dtype == np.float32 and got.shape == (64, 64)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_row_wise_exact_filter_equals_scipy():
    img = np.random.default_rng(1).normal(100, 10, (40, 47))
    for size in (6, 9):
        ref = ndi.percentile_filter(img, 10, size=size, mode="reflect")
        np.testing.assert_array_equal(percentile_filter_exact(img, 10, size, rows=slice(None)), ref)
        np.testing.assert_array_equal(percentile_filter_exact(img, 10, size, rows=slice(3, 8)), ref[3:8])


def test_grid_percentile_matches_the_filter_at_grid_points():
    img = np.random.default_rng(2).gamma(3.0, 50.0, (90, 90))
    step, offset, size = 3, 1, 24
    ref = ndi.percentile_filter(img, 10, size=size, mode="reflect")[offset::step, offset::step]
    got = grid_percentile(img, 10, size, step, offset)
    assert got.shape == ref.shape
    err = np.abs(got - ref) / ref
    # read off a 256-bin histogram: within a bin of the exact order statistic
    assert err.mean() < 0.01 and err.max() < 0.05


def test_fast_within_one_percent_of_exact():
    """The fast method on a realistic plate mean (cells, noise, vignetting) and on a smooth field."""
    mean = np.mean(list(_plate_images(8, (128, 128), seed=3)), axis=0)
    size, sigma = 40, 8.0
    assert default_step(size) == 2
    dev = relative_deviation(flatfield_from_mean(mean, 10, size, sigma, "fast"),
                             flatfield_from_mean(mean, 10, size, sigma, "exact"))
    assert dev <= 0.01
    smooth = 1000.0 * vignetting_field((128, 128))
    dev_smooth = relative_deviation(flatfield_from_mean(smooth, 10, size, sigma, "fast", step=4),
                                    flatfield_from_mean(smooth, 10, size, sigma, "exact"))
    assert dev_smooth <= 0.01


def test_streaming_mean_never_needs_the_stack():
    images = list(_plate_images(5, (32, 32), seed=4))
    acc = MeanAccumulator()
    for img in images:  # one at a time
        acc.add(img)
    np.testing.assert_allclose(acc.mean, np.mean(images, axis=0))
    batch = MeanAccumulator()
    batch.add(np.stack(images[:2]), batch=True)
    other = MeanAccumulator()
    other.add(np.stack(images[2:]), batch=True)
    batch.merge(other)
    np.testing.assert_allclose(batch.mean, np.mean(images, axis=0))
    with pytest.raises(ValueError, match="well X1"):
        acc.add(np.zeros((8, 8)), where="well X1")


def test_correction_flattens_the_shading():
    images = list(_plate_images(30, (96, 96), seed=5))
    ff = flatfield_from_mean(_streamed_mean(iter(images)), size=31, sigma=6.0)
    vig = vignetting_field((96, 96), strength=0.45)
    inner = (slice(10, -10), slice(10, -10))
    left = (vig / ff)[inner]  # the shading that remains after I / F
    raw_range, left_range = np.ptp(vig[inner]) / vig[inner].mean(), np.ptp(left) / left.mean()
    assert raw_range > 0.18 and left_range < raw_range / 2
    out = correct_image(images[0], ff)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, images[0] / ff, rtol=1e-5)


def test_bad_inputs_are_named():
    ff = np.ones((8, 8), np.float32)
    with pytest.raises(ValueError, match="RAW/A1.h5"):
        correct_image(np.ones((9, 9)), ff, where="RAW/A1.h5")
    with pytest.raises(ValueError, match="non-positive"):
        correct_image(np.ones((8, 8)), np.zeros((8, 8)), where="plate P")
    with pytest.raises(ValueError, match="method"):
        flatfield_from_mean(np.ones((8, 8)), method="slow")
    with pytest.raises(ValueError, match="NaN"):
        flatfield_from_mean(np.full((8, 8), np.nan))
    assert np.allclose(flatfield_from_mean(np.full((40, 40), 7.0), 10, 20, 3.0), 7.0)
