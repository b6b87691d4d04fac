"""The vectorised tests against scipy's per-gene results (to 1e-10), ties and zeros included."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from i2o_utils.evaluation.significance import (
    average_ranks,
    benjamini_hochberg,
    check_test,
    mannwhitney_less,
    min_attainable_pvalue,
    scipy_pvalues_per_gene,
    test_vs_mean_predictor,
    wilcoxon_less,
)

TOL = 1e-10


def _scipy_rows(fn, x, y):
    out = np.full(x.shape[0], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(x.shape[0]):
            ok = np.isfinite(x[i]) & np.isfinite(y[i])
            if ok.any():
                try:
                    out[i] = fn(x[i, ok], y[i, ok], alternative="less").pvalue
                except ValueError:
                    pass
    return out


def _samples(rng, kind: str, g: int, n: int, missing: float = 0.05):
    """Per-well SMAPE-like samples: continuous, coarse (many ties) or paired with zero differences."""
    if kind == "continuous":
        x = rng.random((g, n)) * 40
        y = rng.random((g, n)) * 40 + rng.normal(0, 8, (g, 1))
    elif kind == "ties":
        x = rng.integers(0, 4, (g, n)).astype(float)
        y = rng.integers(0, 4, (g, n)).astype(float)
    else:  # paired, with exact zero differences and tied |differences|
        x = rng.integers(0, 20, (g, n)) / 4
        y = x + rng.integers(-3, 4, (g, n)) / 2
    x[rng.random((g, n)) < missing] = np.nan
    return x, y


def _assert_same(p, want):
    np.testing.assert_array_equal(np.isnan(p), np.isnan(want))
    ok = np.isfinite(want)
    assert np.abs(p[ok] - want[ok]).max(initial=0) <= TOL


def test_average_ranks_equal_rankdata():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, (30, 17)).astype(float)
    np.testing.assert_array_equal(average_ranks(a, axis=1), stats.rankdata(a, axis=1))
    np.testing.assert_array_equal(average_ranks(a, axis=0), stats.rankdata(a, axis=0))


# sizes cover scipy's branches: Mann-Whitney exact (<= 8, untied) / asymptotic
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9, 15, 60, 250])
@pytest.mark.parametrize("kind", ["continuous", "ties", "zeros"])
def test_mannwhitney_equals_scipy(n, kind):
    rng = np.random.default_rng([n, len(kind)])
    x, y = _samples(rng, kind, 60, n)
    p, u1, method, n_used = mannwhitney_less(x, y)
    _assert_same(p, _scipy_rows(stats.mannwhitneyu, x, y))
    np.testing.assert_array_equal(n_used, (np.isfinite(x) & np.isfinite(y)).sum(1))
    if n <= 8 and kind == "continuous":
        assert "exact" in set(method)


# Wilcoxon: exact (<= 50, no ties/zeros), permutation (<= 13 with ties/zeros), asymptotic.
# scipy's permutation test is slow (5 s a gene at 13 wells), so few genes go through it here;
# 11-13 wells are checked against a brute-force enumeration below and against scipy (slow).
@pytest.mark.parametrize("n", [1, 2, 4, 7, 10, 14, 30, 50, 51, 250])
@pytest.mark.parametrize("kind", ["continuous", "ties", "zeros"])
def test_wilcoxon_equals_scipy(n, kind):
    rng = np.random.default_rng([n, len(kind), 7])
    permutation = kind != "continuous" and n <= 14
    g = {7: 15, 10: 3}.get(n, 25) if permutation else 60
    x, y = _samples(rng, kind, g, n, missing=0.0 if n >= 11 and permutation else 0.05)
    p, t_plus, method, n_used = wilcoxon_less(x, y)
    _assert_same(p, _scipy_rows(stats.wilcoxon, x, y))
    if 2 <= n <= 13 and kind == "zeros":
        assert "permutation" in set(method)
    if 14 <= n <= 50 and kind == "continuous":
        assert "exact" in set(method)


def _brute_force_sign_flip_p(d: np.ndarray) -> float:
    """scipy's permutation p-value for alternative='less', by enumerating every sign flip."""
    d = d[d != 0]
    ranks = stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    signs = (np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1
    null = signs @ ranks
    return float(np.mean(null <= observed + 100 * np.finfo(float).eps * abs(observed)))


@pytest.mark.parametrize("n", [11, 12, 13])
def test_wilcoxon_permutation_branch_by_enumeration(n):
    rng = np.random.default_rng(n)
    x, y = _samples(rng, "zeros", 40, n, missing=0.0)
    p, _, method, _ = wilcoxon_less(x, y)
    assert set(method) == {"permutation"}
    want = np.array([_brute_force_sign_flip_p(x[i] - y[i]) for i in range(40)])
    assert np.abs(p - want).max() <= TOL
    x14, y14 = _samples(rng, "zeros", 5, 14, missing=0.0)
    assert set(wilcoxon_less(x14, y14)[2]) == {"asymptotic"}  # scipy's switch above 13 wells


@pytest.mark.slow
def test_wilcoxon_permutation_branch_at_13_equals_scipy():
    rng = np.random.default_rng(13)
    x, y = _samples(rng, "zeros", 2, 13, missing=0.0)
    _assert_same(wilcoxon_less(x, y)[0], _scipy_rows(stats.wilcoxon, x, y))


def test_wilcoxon_statistic_is_scipys_t_plus():
    rng = np.random.default_rng(3)
    x, y = _samples(rng, "zeros", 20, 70)
    x = np.where(np.isnan(x), 1.0, x)
    _, t_plus, _, _ = wilcoxon_less(x, y)
    want = [stats.wilcoxon(x[i], y[i], alternative="less").statistic for i in range(20)]
    np.testing.assert_allclose(t_plus, want)


@pytest.mark.parametrize("test", ["mannwhitney", "wilcoxon"])
def test_vs_mean_predictor_equals_scipy_loop_with_bad_genes(test):
    rng = np.random.default_rng(11)
    wells, genes = 40, 120
    truth = rng.normal(8, 1, (wells, genes))
    signal = rng.random(genes) < 0.4
    pred = np.where(signal, truth + rng.normal(0, 0.3, (wells, genes)), 8 + rng.normal(0, 0.5, (wells, genes)))
    pred = np.round(pred, 1)  # ties in the SMAPEs
    train_mean = np.full(genes, 8.0)
    truth[:5, 0] = np.nan  # wells missing from the truth for gene 0
    pred[:, 1] = 8.0  # a constant prediction equal to the train mean: all differences zero
    truth[:, 2] = 7.0  # a constant gene
    train_mean[3] = np.nan  # no mean predictor
    pred[:, 4] = np.nan  # no prediction at all
    res = test_vs_mean_predictor(truth, pred, train_mean, test, chunk_size=37)
    want = scipy_pvalues_per_gene(truth, pred, train_mean, test)
    _assert_same(res.pvalue, want)
    assert res.n_wells[0] == wells - 5
    assert res.n_wells[3] == 0 and np.isnan(res.pvalue[3]) and res.method[3] == "none"
    assert np.isnan(res.pvalue[4])
    # the planted signal is found
    assert (res.pvalue[5:][signal[5:]] < 0.05).mean() > 0.9


def test_chunks_and_threads_do_not_change_results():
    rng = np.random.default_rng(5)
    truth = rng.normal(5, 1, (30, 500))
    pred = truth + rng.normal(0, 1, truth.shape)
    m = truth.mean(0)
    a = test_vs_mean_predictor(truth, pred, m, "wilcoxon", chunk_size=10_000)
    b = test_vs_mean_predictor(truth, pred, m, "wilcoxon", chunk_size=64, n_jobs=2)
    np.testing.assert_array_equal(a.pvalue, b.pvalue)
    np.testing.assert_array_equal(a.method, b.method)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="train_mean"):
        test_vs_mean_predictor(np.ones((3, 2)), np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match="same shape|one shape"):
        test_vs_mean_predictor(np.ones((3, 2)), np.ones((3, 3)), np.ones(2))
    with pytest.raises(ValueError, match="unknown test"):
        check_test("ttest")
    assert check_test("Mann-Whitney") == "mannwhitney"


def test_min_attainable_pvalue():
    # Mann-Whitney exact: 1 / C(2n, n); Wilcoxon exact: 1 / 2**n
    assert min_attainable_pvalue(3, "mannwhitney") == pytest.approx(1 / 20)
    assert min_attainable_pvalue(4, "mannwhitney") == pytest.approx(1 / 70)
    assert min_attainable_pvalue(4, "wilcoxon") == pytest.approx(1 / 16)
    assert min_attainable_pvalue(5, "wilcoxon") == pytest.approx(1 / 32)
    assert min_attainable_pvalue(250, "mannwhitney") < 1e-50


def test_benjamini_hochberg_hand_computed():
    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan])
    q = benjamini_hochberg(p)
    np.testing.assert_allclose(q[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert np.isnan(q[4])
