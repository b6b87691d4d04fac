"""The compiled (numba) paths of the omics pipeline against NumPy computations of the same formulas.

Matrices above a size threshold take the compiled kernels; these tests run both paths (or the
kernel against NumPy directly) on the same data.
"""

import anndata as ad
import h5py
import numpy as np
import pytest

from i2o_utils.omics import OmicsInputError, remove_batch_effect, vsn_fit
from i2o_utils.omics import _kernels as K
from i2o_utils.omics.normalise import log_normalised, median_of_ratios
from i2o_utils.omics.pipeline import _take_columns32, write_set


def test_log_is_within_one_ulp_of_numpy():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.exp(rng.uniform(-700, 700, 200_000)), rng.uniform(1, 2, 100_000),
                        [1.0, 2.0, 0.5, np.sqrt(2), np.nextafter(np.sqrt(2), 0), 1 + 1e-15, 2.2250738585072014e-308,
                         np.finfo(float).max]])
    out = np.empty_like(x)
    K.log_array(x, out)
    ref = np.log(x)
    ulp = np.abs(out - ref) / np.spacing(np.abs(np.where(ref == 0, 1, ref)))
    assert ulp.max() <= 1.0
    assert out[-8] == 0.0 and out[-7] == np.log(2.0)


def test_compiled_size_factors_match_the_formula():
    rng = np.random.default_rng(1)
    k = rng.poisson(rng.lognormal(2, 1.5, 12_000) * rng.lognormal(0, 0.3, (90, 1))).astype(np.float32)
    assert k.size >= 1_000_000  # the compiled path
    usable = (k > 0).all(axis=0)  # DESeq2: genes with a zero are left out of the geometric means
    assert 0 < usable.sum() < k.shape[1]
    logk = np.log(k[:, usable].astype(np.float64))
    expect = np.exp(np.median(logk - logk.mean(axis=0), axis=1))
    np.testing.assert_allclose(median_of_ratios(k), expect, rtol=1e-12)


def test_compiled_log_normalisation_matches_numpy():
    rng = np.random.default_rng(2)
    k = rng.poisson(5, (80, 14_000)).astype(np.float32)
    cols = np.flatnonzero(rng.random(14_000) < 0.9)
    sf = rng.lognormal(0, 0.2, 80)
    got = log_normalised(k, cols, sf, 1.0, 2.0)
    np.testing.assert_allclose(got, np.log2(k[:, cols].astype(np.float64) / sf[:, None] + 1.0), rtol=1e-14, atol=1e-15)
    with pytest.raises(OmicsInputError, match="pseudocount"):
        log_normalised(k, cols, sf, 0.0)


def test_compiled_column_take_matches_numpy():
    x = np.random.default_rng(3).random((70, 20_000)).astype(np.float32)
    cols = np.arange(0, 20_000, 3)
    np.testing.assert_array_equal(_take_columns32(x, cols), x[:, cols])
    assert _take_columns32(x, np.arange(20_000)) is x


def test_batch_correction_in_place_equals_the_copy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 9000))
    x[rng.random(x.shape) < 0.01] = np.nan
    batch = np.repeat(["a", "b", "c", "d"], 10)
    expect = remove_batch_effect(x, batch=batch, allow_nan=True)
    y = x.copy()
    assert remove_batch_effect(y, batch=batch, allow_nan=True, out=y) is y
    np.testing.assert_array_equal(y, expect)
    with pytest.raises(OmicsInputError, match="out must be"):
        remove_batch_effect(x, batch=batch, allow_nan=True, out=np.empty((40, 9000), np.float32))


def test_compiled_vsn_fit_matches_numpy_engine():
    rng = np.random.default_rng(5)
    mu = rng.normal(9, 1.5, 400)
    y = np.exp(mu + rng.normal(0, 0.2, (60, 400))) * rng.lognormal(0, 0.3, (60, 1)) + rng.normal(0, 50, (60, 400))
    y = np.abs(y)
    y[rng.random(y.shape) < 0.02] = np.nan
    a = vsn_fit(y, engine="numpy")
    b = vsn_fit(y, engine="numba")  # trimmed rounds copy their proteins into reused buffers
    assert a.n_rounds == b.n_rounds == 7 and a.n_fitted == b.n_fitted
    np.testing.assert_allclose(b.offset, a.offset, atol=1e-7)
    np.testing.assert_allclose(b.log_scale, a.log_scale, atol=1e-7)
    np.testing.assert_allclose(b.transform(y), a.transform(y), atol=1e-7)


def test_written_set_stores_corrected_once(tmp_path):
    x = np.random.default_rng(6).random((6, 4)).astype(np.float32)
    a = ad.AnnData(X=x, layers={"raw": x * 2, "normalised": x + 1, "corrected": x})
    write_set(a, tmp_path / "s.h5ad")
    assert a.layers["corrected"] is a.X and list(a.layers) == ["raw", "normalised", "corrected"]
    with h5py.File(tmp_path / "s.h5ad") as f:
        assert f["layers/corrected"].id == f["X"].id  # one dataset, two names
    b = ad.read_h5ad(tmp_path / "s.h5ad")
    assert set(b.layers) == {"raw", "normalised", "corrected"}
    np.testing.assert_array_equal(b.layers["corrected"], x)
    np.testing.assert_array_equal(b.X, x)
