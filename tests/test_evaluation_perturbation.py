"""The calibrated perturbation-level test: exact permutation p-values, split combination, OOS R²."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from i2o_utils.evaluation.perturbation import (
    block_permutation,
    combine_splits,
    group_indicator,
    group_means,
    inversions_cdf,
    kendall_greater,
    oos_r2,
)
from i2o_utils.evaluation.predictions import SplitPredictions
from i2o_utils.evaluation.significance import benjamini_hochberg, min_attainable_pvalue
from i2o_utils.evaluation.summaries import evaluate_split, summarise_genes


def _split(targets, measured, predicted, train_mean, split=0):
    wells = pd.DataFrame({"plate_barcode": "P1", "well_id": [f"A{i + 1:02d}" for i in range(len(targets))],
                          "target": targets, "fold": "test"})
    genes = pd.Index([f"G{j}" for j in range(measured.shape[1])], name="gene")
    return SplitPredictions("transcriptomics", "m1", split, wells, genes, measured, predicted, train_mean)


def test_inversions_distribution_is_the_mahonian_one():
    for n in (1, 2, 3, 5, 7):
        counts = np.zeros(n * (n - 1) // 2 + 1)
        for perm in itertools.permutations(range(n)):
            inv = sum(perm[i] > perm[j] for i in range(n) for j in range(i + 1, n))
            counts[inv] += 1
        np.testing.assert_allclose(inversions_cdf(n), np.cumsum(counts) / math.factorial(n), rtol=1e-12)
    assert inversions_cdf(200)[-1] == pytest.approx(1.0)  # stays a distribution for large n
    assert min_attainable_pvalue(10, "perturbation") == pytest.approx(1 / math.factorial(10))


@pytest.mark.parametrize("n", [4, 9, 31, 45])
def test_kendall_matches_scipy_exact_and_ties_fall_back_to_scipy(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(40, n))
    y = 0.4 * x + rng.normal(size=(40, n))
    p, tau, method, used = kendall_greater(x, y)
    ref = [stats.kendalltau(a, b, alternative="greater", method="exact") for a, b in zip(x, y)]
    np.testing.assert_allclose(p, [r.pvalue for r in ref], rtol=1e-10)
    np.testing.assert_allclose(tau, [r.statistic for r in ref], rtol=1e-12)
    assert set(method) == {"exact"} and (used == n).all()
    # ties and missing units
    x[0, :2] = 1.0
    y[1, 3] = np.nan
    p2, tau2, method2, used2 = kendall_greater(x, y)
    assert method2[0] == "asymptotic (ties)" and used2[1] == n - 1
    r0 = stats.kendalltau(x[0], y[0], alternative="greater")
    assert p2[0] == pytest.approx(r0.pvalue) and tau2[0] == pytest.approx(r0.statistic)
    keep = np.isfinite(y[1])
    assert p2[1] == pytest.approx(stats.kendalltau(x[1, keep], y[1, keep], alternative="greater",
                                                   method="exact").pvalue)


def test_permutation_machinery_against_a_slow_loop_over_block_permutations():
    """The split p-value equals the share of all block permutations of the predictions (whole
    perturbations moved at once) whose concordance is at least the observed one."""
    rng = np.random.default_rng(1)
    targets = np.array(["A", "A", "B", "C", "C", "C", "D", "E", "E", "F"])
    n_genes = 6
    effect = rng.normal(size=(6, n_genes))
    inv = pd.factorize(targets, sort=True)[0]
    measured = effect[inv] + rng.normal(0, 0.05, (len(targets), n_genes))
    predicted = 0.5 * effect[inv] * np.arange(n_genes) / n_genes + rng.normal(0, 0.5, (len(targets), n_genes))
    measured[3, 2] = np.nan  # one well missing for one gene
    res = evaluate_split(_split(targets, measured, predicted, np.zeros(n_genes)), "perturbation")

    groups = sorted(set(targets))
    for g in range(n_genes):
        ok = np.isfinite(measured[:, g])
        ym = np.array([measured[ok & (targets == t), g].mean() for t in groups])
        fm = np.array([predicted[ok & (targets == t), g].mean() for t in groups])

        def s_stat(f):
            return sum(np.sign(ym[i] - ym[j]) * np.sign(f[i] - f[j])
                       for i in range(len(groups)) for j in range(i + 1, len(groups)))

        observed = s_stat(fm)
        perms = list(itertools.permutations(range(len(groups))))
        p_slow = np.mean([s_stat(fm[list(pi)]) >= observed for pi in perms])
        assert res.loc[g, "pvalue"] == pytest.approx(p_slow, rel=1e-12)
        assert res.loc[g, "n_perturbations"] == len(groups)


def test_calibration_on_many_null_genes_with_clustered_wells():
    """Wells of a perturbation share one label: the well-level tests reject far too often, the
    perturbation-level test holds its level (within binomial error)."""
    rng = np.random.default_rng(7)
    n_pert, wells, n_genes = 30, 4, 4000
    targets = np.repeat([f"T{i:02d}" for i in range(n_pert)], wells)
    label = np.repeat(rng.normal(size=(n_pert, n_genes)), wells, axis=0) + 10
    # predictions near the train mean, clustered by perturbation, independent of the labels
    pred = np.repeat(rng.normal(size=(n_pert, n_genes)), wells, axis=0) * 0.05 + 10 \
        + rng.normal(0, 0.02, (n_pert * wells, n_genes))
    sp = _split(targets, label, pred, np.full(n_genes, 10.0))
    alpha = 0.05
    se = math.sqrt(alpha * (1 - alpha) / n_genes)
    p = evaluate_split(sp, "perturbation")["pvalue"].to_numpy()
    assert abs(np.mean(p < alpha) - alpha) < 3 * se
    assert abs(np.mean(p < 0.2) - 0.2) < 3 * math.sqrt(0.2 * 0.8 / n_genes)
    p_wilcoxon = evaluate_split(sp, "wilcoxon")["pvalue"].to_numpy()
    assert np.mean(p_wilcoxon < alpha) > alpha + 10 * se  # the paired test is not calibrated here


def test_signal_is_found():
    rng = np.random.default_rng(3)
    n_pert, wells, n_genes = 30, 4, 50
    targets = np.repeat([f"T{i:02d}" for i in range(n_pert)], wells)
    eff = rng.normal(size=(n_pert, n_genes))
    label = np.repeat(eff, wells, axis=0)
    pred = np.repeat(eff + rng.normal(0, 0.5, eff.shape), wells, axis=0) + rng.normal(0, 0.3, label.shape)
    res = evaluate_split(_split(targets, label, pred, np.zeros(n_genes)), "perturbation")
    assert (res["pvalue"] < 1e-3).all() and (res["r2_oos"] > 0.3).all()


def test_split_combination_known_answers_and_validity():
    p = np.array([[0.01] * 6 + [0.5] * 4,          # median 0.01 -> 0.02
                  [0.3] * 10,                       # 0.6
                  [0.9] * 10,                       # capped at 1
                  [np.nan] * 10,                    # untested
                  [0.001] * 5 + [np.nan] * 5])      # missing splits count as 1: median 0.5005 -> 1
    np.testing.assert_allclose(combine_splits(p), [0.02, 0.6, 1.0, np.nan, 1.0])
    assert combine_splits(np.array([[0.04, 0.01, 0.02]]))[0] == pytest.approx(0.04)
    # valid under independence and under complete dependence between splits
    rng = np.random.default_rng(0)
    u = rng.uniform(size=(20000, 10))
    assert np.mean(combine_splits(u) < 0.05) <= 0.05
    same = np.repeat(rng.uniform(size=(20000, 1)), 10, axis=1)
    assert np.mean(combine_splits(same) < 0.05) == pytest.approx(0.025, abs=0.005)
    with pytest.raises(ValueError):
        combine_splits(np.zeros(3))


def test_summary_uses_the_combination_and_bh():
    rng = np.random.default_rng(5)
    rows = []
    for k in range(10):
        for g in range(20):
            rows.append({"omics": "proteomics", "stimulus": "m2", "split": k, "gene": f"G{g}", "test": "perturbation",
                         "pvalue": 1e-4 if g < 5 else rng.uniform(), "n_wells": 40, "r2": 0.5, "r2_oos": 0.2,
                         "smape": 10.0, "smape_mean_predictor": 12.0, "flags": ""})
    pg = summarise_genes(pd.DataFrame(rows)).set_index("gene")
    assert pg.loc["G0", "p_gene"] == pytest.approx(2e-4)
    np.testing.assert_allclose(pg["p_gene"], np.minimum(1, 2 * pg["p_median"]))
    np.testing.assert_allclose(pg["q"], benjamini_hochberg(pg["p_gene"].to_numpy()))
    assert pg.loc[[f"G{g}" for g in range(5)], "significant_bh"].all()
    assert pg["r2_oos"].eq(0.2).all()


def test_oos_r2_and_group_means_by_hand():
    a = np.array([[1.0, 2.0, 3.0, np.nan]])
    f = np.array([[1.5, 2.0, 2.0, 9.0]])
    m = np.array([2.0])
    # SSE model 0.25 + 0 + 1 = 1.25; SSE mean 1 + 0 + 1 = 2
    assert oos_r2(a, f, m)[0] == pytest.approx(1 - 1.25 / 2)
    uniq, ind = group_indicator(["b", "a", "b"])
    assert list(uniq) == ["a", "b"]
    np.testing.assert_allclose(group_means(np.array([[1.0, 2.0, np.nan]]), ind), [[2.0, 1.0]])


def test_block_permutation_moves_whole_perturbations():
    targets = np.array(["A", "A", "B", "C", "C", "C"])
    for seed in range(20):
        order = block_permutation(targets, np.random.default_rng(seed))
        for t in set(targets):
            src = set(targets[order[targets == t]])
            assert len(src) == 1  # every well of a perturbation takes its prediction from one perturbation
        assert sorted(set(targets[order])) == ["A", "B", "C"]


def _crossfit_screen(n_pert=60, wells=2, n_genes=2000, signal=0.0, seed=0, n_splits=10):
    """Ridge on per-well 'image' features, refitted on the train perturbations of each split."""
    from i2o_utils.data.splits import make_splits

    rng = np.random.default_rng(seed)
    targets = np.array([f"T{i:03d}" for i in range(n_pert)])
    well_t = np.repeat(targets, wells)
    z = rng.normal(size=(n_pert, 5))  # what the images show
    x = np.repeat(z, wells, axis=0) + rng.normal(0, 0.3, (n_pert * wells, 5))
    w = rng.normal(size=(5, n_genes))
    y_pert = signal * z @ w / np.sqrt(5) + rng.normal(size=(n_pert, n_genes))  # labels: per perturbation
    y = np.repeat(y_pert, wells, axis=0)
    table = make_splits(targets, n_splits)
    out = []
    for k in range(n_splits):
        fold = pd.Series(well_t).map(table[table["split"] == k].set_index("target")["fold"]).to_numpy()
        tr, te = fold == "train", fold == "test"
        xt = np.column_stack([np.ones(tr.sum()), x[tr]])
        beta = np.linalg.solve(xt.T @ xt + np.eye(6), xt.T @ y[tr])
        pred = np.column_stack([np.ones(te.sum()), x[te]]) @ beta
        out.append(_split(well_t[te], y[te], pred, y[tr].mean(axis=0), split=k))
    return out


def test_pooled_test_equals_its_definition_on_a_fixture():
    from i2o_utils.evaluation.perturbation import pooled_perturbation_test

    splits = _crossfit_screen(n_pert=12, n_genes=5, signal=1.0, n_splits=3)
    genes, p, tau, n = pooled_perturbation_test(splits)
    preds, meas = {}, {}
    for s in splits:
        for t in sorted(set(s.wells["target"])):
            rows = (s.wells["target"] == t).to_numpy()
            preds.setdefault(t, []).append(s.predicted[rows].mean(axis=0))
            meas[t] = s.measured[rows].mean(axis=0)
    ts = sorted(preds)
    f = np.array([np.mean(preds[t], axis=0) for t in ts])
    y = np.array([meas[t] for t in ts])
    for g in range(5):
        ref = stats.kendalltau(f[:, g], y[:, g], alternative="greater", method="exact")
        assert p[g] == pytest.approx(ref.pvalue, rel=1e-10) and tau[g] == pytest.approx(ref.statistic)
    assert (n == len(ts)).all() and list(genes) == [f"G{j}" for j in range(5)]


def test_pooled_test_holds_its_level_under_cross_fitting_and_finds_signal():
    """Null labels, a model refitted per split: the pooled test rejects at most alpha (within
    binomial error), although out-of-fold predictions share training labels; with signal it has power."""
    from i2o_utils.evaluation.perturbation import pooled_perturbation_test

    n_genes, alpha = 3000, 0.05
    _, p, _, _ = pooled_perturbation_test(_crossfit_screen(n_genes=n_genes, seed=1))
    assert np.mean(p < alpha) <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_genes)
    _, p1, _, _ = pooled_perturbation_test(_crossfit_screen(n_genes=200, signal=0.7, seed=2))
    assert np.mean(p1 < alpha) > 0.8
