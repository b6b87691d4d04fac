"""The compiled (numba) vsn likelihood against NumPy, and the pipeline's steps at sizes where they
work block by block or on views, against the same formulas on whole arrays."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from i2o_utils.omics import OmicsInputError, remove_batch_effect, vsn_fit
from i2o_utils.omics import _kernels as K
from i2o_utils.omics.normalise import log_normalised, median_of_ratios
from i2o_utils.omics.pipeline import write_set


def test_log_is_within_one_ulp_of_numpy():
    from numba import njit, prange

    @njit(parallel=True)
    def log_array(x, out):
        for i in prange(x.size):
            out[i] = K.flog(x[i])

    rng = np.random.default_rng(0)
    x = np.concatenate([np.exp(rng.uniform(-700, 700, 200_000)), rng.uniform(1, 2, 100_000),
                        [1.0, 2.0, 0.5, np.sqrt(2), np.nextafter(np.sqrt(2), 0), 1 + 1e-15, 2.2250738585072014e-308,
                         np.finfo(float).max]])
    out = np.empty_like(x)
    log_array(x, out)
    ref = np.log(x)
    ulp = np.abs(out - ref) / np.spacing(np.abs(np.where(ref == 0, 1, ref)))
    assert ulp.max() <= 1.0
    assert out[-8] == 0.0 and out[-7] == np.log(2.0)


def test_size_factors_match_the_formula():
    rng = np.random.default_rng(1)
    k = rng.poisson(rng.lognormal(2, 1.5, 12_000) * rng.lognormal(0, 0.3, (90, 1))).astype(np.float32)
    usable = (k > 0).all(axis=0)  # DESeq2: genes with a zero are left out of the geometric means
    assert 0 < usable.sum() < k.shape[1]
    logk = np.log(k[:, usable].astype(np.float64))
    expect = np.exp(np.median(logk - logk.mean(axis=0), axis=1))
    np.testing.assert_allclose(median_of_ratios(k), expect, rtol=1e-12)


def test_log_normalisation_matches_numpy():
    rng = np.random.default_rng(2)
    k = rng.poisson(5, (80, 14_000)).astype(np.float32)
    cols = np.flatnonzero(rng.random(14_000) < 0.9)
    sf = rng.lognormal(0, 0.2, 80)
    got = log_normalised(k, cols, sf, 1.0, 2.0)
    np.testing.assert_allclose(got, np.log2(k[:, cols].astype(np.float64) / sf[:, None] + 1.0), rtol=1e-14, atol=1e-15)
    with pytest.raises(OmicsInputError, match="pseudocount"):
        log_normalised(k, cols, sf, 0.0)


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
    b = vsn_fit(y, engine="numba")
    assert a.n_rounds == b.n_rounds == 7 and a.n_fitted == b.n_fitted
    np.testing.assert_allclose(b.offset, a.offset, atol=1e-7)
    np.testing.assert_allclose(b.log_scale, a.log_scale, atol=1e-7)
    np.testing.assert_allclose(b.transform(y), a.transform(y), atol=1e-7)


@pytest.mark.parametrize("fault, message", [
    (None, None), ("nan", "NaN value in sample 's7', gene 'g901' \\(2 non-finite"),
    ("inf", "infinite value in sample 's7', gene 'g901'"), ("neg", "negative count -3 in sample 's7', gene 'g901'"),
    ("frac", "non-integer count 2.5 in sample 's7', gene 'g901'"), ("empty", "all-zero .*sample.*'s9'")])
def test_count_check_names_the_first_fault(fault, message):
    from i2o_utils.omics import _checks

    rng = np.random.default_rng(7)
    k = rng.poisson(3, (20, 60_000)).astype(np.float32)
    samples = pd.Index([f"s{i}" for i in range(20)])
    genes = pd.Index([f"g{j}" for j in range(60_000)])
    if fault == "nan":
        k[7, 901] = k[12, 5] = np.nan  # the first in row-major order is named, both are counted
    elif fault in ("inf", "neg", "frac"):
        k[7, 901] = {"inf": np.inf, "neg": -3, "frac": 2.5}[fault]
        k[2, 7] = {"inf": -1, "neg": 0.5, "frac": 0.5}[fault]  # an earlier fault of a later-checked kind
        if fault == "frac":
            k[2, 7] = 3
    elif fault == "empty":
        k[9] = 0
    if message is None:
        _checks.check_counts(k, "counts", samples, genes)
    else:
        with pytest.raises(OmicsInputError, match=message):
            _checks.check_counts(k, "counts", samples, genes)


def test_counts_normalised_and_corrected_block_by_block_equal_the_whole_matrix():
    from i2o_utils.config import OmicsConfig
    from i2o_utils.omics import pipeline

    rng = np.random.default_rng(8)
    k = rng.poisson(rng.lognormal(2, 1, 10_500), (60, 10_500)).astype(np.float32)
    kept = np.flatnonzero(rng.random(10_500) < 0.95)
    assert len(kept) > 2 * pipeline._GENE_BLOCK  # several blocks, the last one partial
    sf = rng.lognormal(0, 0.2, 60)
    plates = np.repeat(["p1", "p2", "p3"], 20)
    norm, corr = pipeline._normalise_and_correct_counts(k, kept, sf, plates, None, OmicsConfig())
    whole = log_normalised(k, kept, sf, 1.0, 2.0)
    np.testing.assert_array_equal(norm, whole.astype(np.float32))
    np.testing.assert_allclose(corr, remove_batch_effect(whole, batch=plates), rtol=0, atol=2e-6)
    assert norm.dtype == corr.dtype == np.float32


def test_rows_of_one_stimulus_are_a_view_when_consecutive():
    from i2o_utils.omics.pipeline import _rows

    x = np.arange(40.0).reshape(10, 4)
    sel = np.zeros(10, bool)
    sel[3:7] = True
    v = _rows(x, sel)
    assert np.shares_memory(v, x) and np.array_equal(v, x[sel])
    sel[8] = True
    c = _rows(x, sel)
    assert not np.shares_memory(c, x) and np.array_equal(c, x[sel])


def test_written_set_reads_back_as_anndata_wrote_it(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(9)
    x = rng.random((300, 200)).astype(np.float32)
    obs = pd.DataFrame({"target": rng.choice(["NT", "KO1"], 300)}, index=[f"s{i}" for i in range(300)])
    a = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(200)]),
                   layers={"raw": np.round(x * 100), "normalised": x + 1, "corrected": x,
                           "mask": (x > 0.5).astype(np.uint8)},
                   uns={"preprocessing": {"omics": "proteomics"}, "label_draws": np.array([[1, 2], [3, 4]])})
    ref = tmp_path / "anndata.h5ad"
    a.copy().write_h5ad(ref)
    write_set(a, tmp_path / "s.h5ad")
    got, expect = ad.read_h5ad(tmp_path / "s.h5ad"), ad.read_h5ad(ref)
    np.testing.assert_array_equal(got.X, expect.X)
    for name in ("raw", "normalised", "corrected", "mask"):
        np.testing.assert_array_equal(got.layers[name], expect.layers[name])
    pd.testing.assert_frame_equal(got.obs, expect.obs)
    pd.testing.assert_frame_equal(got.var, expect.var)
    assert got.uns["preprocessing"] == {"omics": "proteomics"}
    np.testing.assert_array_equal(got.uns["label_draws"], [["1", "2"], ["3", "4"]])
    assert a.uns["label_draws"].dtype.kind == "i"  # the set itself is left as it was
    assert not list(tmp_path.glob("*.part"))
