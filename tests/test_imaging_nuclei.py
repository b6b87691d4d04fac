"""Nuclei centres: Otsu + LoG on the binary mask, validated on real and on simulated nuclei.

Real images: the fluorescence nuclei image and its hand-made instance annotation shipped in the
``stardist`` package (``stardist/data/images/img2d.tif`` and ``mask2d.tif``, stardist 0.9.2,
BSD-3-Clause). They come from the 2018 Data Science Bowl, stage-1 training set (Broad Bioimage
Benchmark Collection BBBC038v1, released under CC0): Caicedo et al., "Nucleus segmentation across
imaging experiments: the 2018 Data Science Bowl", Nature Methods 16, 1247-1253 (2019). True
centres are the centroids of the annotated nuclei; the nucleus diameter given to the detector is
the median equivalent diameter of the annotated nuclei.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from skimage.measure import regionprops

from i2o_utils.data.simulate import acquire, render_field, vignetting
from i2o_utils.imaging.flatfield import correct_image
from i2o_utils.imaging.nuclei import (detection_scores, find_nuclei_centres, log_sigma, match_points,
                                      sum_scores)

TARGET_F1 = 0.85


def _dsb_image():
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("stardist (which ships the annotated DSB 2018 image) is not installed")
    import tifffile

    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
    return tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")


def test_real_annotated_nuclei_f1():
    img, mask = _dsb_image()
    props = regionprops(mask)
    truth = np.array([p.centroid for p in props])
    d = float(np.median([p.equivalent_diameter_area for p in props]))
    assert len(truth) > 100 and 20 < d < 30  # the image we think it is
    found = find_nuclei_centres(img, d)
    s = detection_scores(found, truth, radius=d / 2)
    print(f"DSB 2018 image: {len(truth)} nuclei, d = {d:.1f} px: precision {s['precision']:.3f}, "
          f"recall {s['recall']:.3f}, F1 {s['f1']:.3f}")
    assert s["f1"] >= TARGET_F1


def test_simulated_nuclei_f1():
    """Fields rendered by the simulator (shading, gains, photon and read noise), then corrected."""
    rng = np.random.default_rng(7)
    d = 12.0
    shape = (160, 160)
    shading = vignetting(shape, 0.45, (70.0, 90.0))
    scores = []
    for k in range(4):
        z = rng.normal(0, 1, 4)
        signal, truth = render_field(z, shape, 35.0, d, 34.0, rng)
        raw = acquire(signal, shading, np.array([1800.0, 1400.0, 1600.0]), rng)
        hoechst = correct_image(raw[0], shading * 100 + 20)
        scores.append(detection_scores(find_nuclei_centres(hoechst, d), truth, radius=d / 2))
    s = sum_scores(scores)
    print(f"simulated: {s['tp'] + s['fn']} nuclei: precision {s['precision']:.3f}, recall "
          f"{s['recall']:.3f}, F1 {s['f1']:.3f}")
    assert s["tp"] + s["fn"] > 60
    assert s["f1"] >= TARGET_F1


def test_downsampled_log_agrees_with_full_resolution():
    img, _ = _dsb_image()
    full = find_nuclei_centres(img, 24.0, downsample=1)
    fast = find_nuclei_centres(img, 24.0)  # blocks of 4 px
    r, c = match_points(fast, full, radius=6.0)  # a quarter diameter
    assert len(r) >= 0.95 * max(len(full), len(fast))


def test_blobs_of_known_positions():
    yy, xx = np.mgrid[0:100, 0:120]
    centres = np.array([[20, 20], [50, 70], [80, 30], [30, 100]])
    img = np.full((100, 120), 10.0)
    for r, c in centres:
        img[(yy - r) ** 2 + (xx - c) ** 2 <= 36] = 200.0
    found = find_nuclei_centres(img, 12.0, downsample=1)
    assert found.shape == (4, 2) and found.dtype == np.int64
    r, c = match_points(found, centres, radius=1.5)
    assert len(r) == 4
    assert log_sigma(12.0) == pytest.approx(12.0 / (2 * np.sqrt(2)))


@pytest.mark.parametrize("field", [np.zeros((64, 64), np.uint16), np.full((64, 64), 500, np.uint16)])
def test_dark_or_constant_field_has_no_nuclei(field):
    assert find_nuclei_centres(field, 10.0).shape == (0, 2)


def test_noise_only_field_has_few_nuclei():
    noise = np.random.default_rng(0).normal(100, 5, (128, 128))
    assert len(find_nuclei_centres(noise, 10.0)) <= 2


def test_detection_scores():
    truth = np.array([[10, 10], [30, 30], [50, 50]])
    det = np.array([[11, 10], [30, 36], [80, 80], [10, 11]])
    s = detection_scores(det, truth, radius=5)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 3, 2)  # one-to-one: the second hit on (10, 10) is a FP
    assert s["precision"] == pytest.approx(0.25) and s["recall"] == pytest.approx(1 / 3)
    nothing = detection_scores(np.zeros((0, 2)), np.zeros((0, 2)), 5)
    assert nothing["precision"] == 1 and nothing["recall"] == 1
    empty = detection_scores(np.zeros((0, 2)), truth, 5)
    assert empty["recall"] == 0 and empty["f1"] == 0
