"""SER texture filters on synthetic structures, and the Harmony per-well export reader."""

from __future__ import annotations

import numpy as np
import pytest

from i2o_utils.imaging.features import SER_KINDS, cell_features, read_harmony_plate_results, ser_filters

N = 64
Y, X = np.mgrid[0:N, 0:N].astype(float)


def _g(d2, s=1.5):
    return np.exp(-d2 / (2 * s**2))


STRUCTURES = {
    "Ridge": 100 + 50 * _g((X - 32) ** 2),
    "Valley": 100 - 50 * _g((X - 32) ** 2),
    "Spot": 100 + 50 * _g((X - 32) ** 2 + (Y - 32) ** 2),
    "Hole": 100 - 50 * _g((X - 32) ** 2 + (Y - 32) ** 2),
    "Edge": 100 + 50 * (X >= 32),
    "Saddle": 100 + 50 * (_g((X - 29) ** 2 + (Y - 32) ** 2) + _g((X - 35) ** 2 + (Y - 32) ** 2)
                          - _g((X - 32) ** 2 + (Y - 29) ** 2) - _g((X - 32) ** 2 + (Y - 35) ** 2)),
}


@pytest.mark.parametrize("kind", list(STRUCTURES))
def test_ser_filter_responds_to_its_structure(kind):
    r = ser_filters(STRUCTURES[kind], sigma=1.5)
    assert set(r) == set(SER_KINDS)
    at = {k: float(v[32, 32]) for k, v in r.items()}
    shape_kinds = ["Spot", "Hole", "Ridge", "Valley", "Saddle", "Edge"]
    # at the structure's centre its own filter is the strongest of the shape filters
    assert max(shape_kinds, key=at.get) == kind, at
    # and it responds far more there than on a flat image
    flat = ser_filters(np.full((N, N), 100.0), 1.5)[kind]
    assert at[kind] > 5 and np.abs(flat).max() < 1e-3


def test_bright_and_dark_follow_local_contrast():
    r = ser_filters(STRUCTURES["Spot"], 1.5)
    assert r["Bright"][32, 32] > 10 and r["Dark"][32, 32] == 0
    r = ser_filters(STRUCTURES["Hole"], 1.5)
    assert r["Dark"][32, 32] > 10 and r["Bright"][32, 32] == 0


def test_cell_features_carry_ser_columns():
    rng = np.random.default_rng(0)
    field = rng.poisson(20, (3, 64, 64)).astype(np.float32)
    field[:, 20:40, 20:40] += 200
    t = cell_features(field, np.array([[30, 30]]), 10.0)
    cols = [c for c in t.columns if "SER-" in c]
    assert len(cols) == 8 * 3 and "Cells_Texture_SER-Ridge_Phalloidin" in cols
    assert np.isfinite(t[cols].to_numpy()).all()
    assert not any("SER-" in c for c in cell_features(field, np.array([[30, 30]]), 10.0, ser_sigma=None).columns)


HARMONY = """[General]
Version\t1.0
Kind\tPlate Results
Plate Name\tG212LFO
Measurement\tMeasurement 1
Evaluation\tEvaluation1
Evaluation Signature\t
[Data]
Row\tColumn\tPlane\tTimepoint\tCompound\tCell Type\tCell Count\tNuclei - Nucleus Area [px²] - Mean per Well\tCytoplasm - MitoTracker SER Ridge 1 px - Mean per Well\t
7\t13\t1\t0\tNT\tiMac\t210\t301.5\t0.0123\t
8\t15\t1\t0\tSTAT1\tiMac\t188\t287.25\tNaN\t
"""


def test_harmony_reader(tmp_path):
    p = tmp_path / "PlateResults.txt"
    p.write_text(HARMONY)
    df = read_harmony_plate_results(p)
    assert df["Metadata_Plate"].tolist() == ["G212LFO"] * 2
    assert df["Metadata_Well"].tolist() == ["G13", "H15"]
    assert df["Metadata_Compound"].tolist() == ["NT", "STAT1"]
    assert df["Cells_Count"].tolist() == [210, 188]
    assert df["Nuclei - Nucleus Area [px²] - Mean per Well"].tolist() == [301.5, 287.25]
    assert np.isnan(df["Cytoplasm - MitoTracker SER Ridge 1 px - Mean per Well"].iloc[1])
    assert read_harmony_plate_results(p, plate="P1")["Metadata_Plate"].iloc[0] == "P1"


@pytest.mark.parametrize("bad, match", [
    (HARMONY.replace("[Data]\n", ""), "no '\\[Data\\]' line"),
    (HARMONY.replace("8\t15\t1", "8\t15"), r"line 11: 8 tab-separated fields, the header has 9"),
    (HARMONY.replace("7\t13\t1", "G\t13\t1"), r"line 10: Row 'G' is not a positive integer"),
    (HARMONY.replace("Row\tColumn", "R\tC"), r"line 9: the table header needs 'Row' and 'Column'"),
])
def test_harmony_reader_names_the_line(tmp_path, bad, match):
    p = tmp_path / "PlateResults.txt"
    p.write_text(bad)
    with pytest.raises(ValueError, match=match):
        read_harmony_plate_results(p)


def test_hessian_eigenvalues_equal_skimage():
    from skimage.feature import hessian_matrix, hessian_matrix_eigvals

    img = np.random.default_rng(0).gamma(2.0, 30.0, (48, 40)).astype(np.float32)
    H = hessian_matrix(img, sigma=1.5, order="rc", mode="reflect", use_gaussian_derivatives=True)
    l1, l2 = hessian_matrix_eigvals(H) * 1.5**2
    r = ser_filters(img, 1.5)
    # the two handle the image border differently, and skimage keeps the small bias of the truncated
    # second-derivative kernel on the mean level (about 2e-4 sigma² x level), which ser_filters removes
    inner = (slice(6, -6), slice(6, -6))
    np.testing.assert_allclose(r["Spot"][inner], np.maximum(-l1, 0)[inner], rtol=2e-2, atol=5e-2)
    np.testing.assert_allclose(r["Hole"][inner], np.maximum(l2, 0)[inner], rtol=2e-2, atol=5e-2)
    np.testing.assert_allclose(r["Saddle"][inner], np.minimum(np.maximum(l1, 0), np.maximum(-l2, 0))[inner],
                               rtol=2e-2, atol=5e-2)
