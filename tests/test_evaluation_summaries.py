"""Aggregation over splits, denominators, BH, calibration without signal, truth recovery."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from i2o_utils.evaluation.predictions import SplitPredictions
from i2o_utils.evaluation.summaries import (
    PAPER_RESULTS,
    evaluate_predictions,
    evaluate_split,
    evidence_statement,
    headline_table,
    null_by_shuffling,
    paper_fraction,
    predictability_fractions,
    row_nanquantile,
    summarise_genes,
)
from i2o_utils.evaluation.truth import read_truth_genes, truth_recovery


def synthetic_splits(n_genes=400, n_wells=60, n_splits=3, frac_signal=0.3, pred_noise=0.3,
                     null_noise=0.5, seed=0, omics="transcriptomics", stimulus="m1", n_perturbations=12):
    """Splits of a screen where the first ``frac_signal`` of the genes are predicted from the truth.

    Other genes are predicted by the train mean plus noise independent of the truth (no signal).
    """
    rng = np.random.default_rng(seed)
    mu = rng.uniform(4, 12, n_genes)
    n_sig = int(frac_signal * n_genes)
    genes = pd.Index([f"G{i:04d}" for i in range(n_genes)], name="gene")
    out = []
    for k in range(n_splits):
        truth = mu + rng.normal(0, 1, (n_wells, n_genes))
        train_mean = mu + rng.normal(0, 0.05, n_genes)
        pred = train_mean + rng.normal(0, null_noise, (n_wells, n_genes))
        pred[:, :n_sig] = truth[:, :n_sig] + rng.normal(0, pred_noise, (n_wells, n_sig))
        wells = pd.DataFrame({"plate_barcode": "P1", "well_id": [f"A{i % 24 + 1}" for i in range(n_wells)],
                              "target": [f"KO{i % n_perturbations}" for i in range(n_wells)], "fold": "test"})
        out.append(SplitPredictions(omics, stimulus, k, wells, genes, truth, pred, train_mean))
    return out, n_sig


# --------------------------------------------------------------------------------------------
def test_paper_fraction_arithmetic():
    assert round(4927 / 26317 * 100, 2) == 18.72
    assert round(4927 / 26137 * 100, 2) != 18.72  # the abstract's 26,137 is a typo
    for key, r in PAPER_RESULTS.items():
        assert round(paper_fraction(*key), 2) == r["pct"]
    assert PAPER_RESULTS[("proteomics", "m1")]["n_genes"] == 4986


@pytest.mark.parametrize("q", [0.025, 0.5, 0.975, 0.0, 1.0])
def test_row_nanquantile_equals_numpy(q):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 10))
    a[rng.random(a.shape) < 0.2] = np.nan
    a[0] = np.nan
    a[1, :] = 3.0
    with pytest.warns(RuntimeWarning):  # numpy warns on the all-NaN row
        want = np.nanquantile(a, q, axis=1)
    np.testing.assert_allclose(row_nanquantile(a, q), want, rtol=0, atol=1e-14)
    assert np.isnan(row_nanquantile(a, q)[0])


def _per_split_rows():
    p = {"g1": [0.01, 0.02, 0.03], "g2": [0.01, 0.2, 0.04], "g3": [0.5, 0.6, np.nan],
         "g6": [0.9, 0.9, 0.9]}
    rows = []
    for gene, ps in p.items():
        for k, pv in enumerate(ps):
            rows.append({"omics": "proteomics", "stimulus": "m2", "split": k, "gene": gene,
                         "n_test_wells": 10, "n_wells": 10 if np.isfinite(pv) else 0,
                         "r2": 0.1 * (k + 1), "smape": 10.0 + k, "smape_mean_predictor": 20.0,
                         "pvalue": pv, "statistic": 1.0, "method": "asymptotic", "test": "wilcoxon",
                         "flags": "" if np.isfinite(pv) else "no usable test well"})
    return pd.DataFrame(rows)


def test_summarise_genes_median_quantiles_and_denominators():
    table = pd.DataFrame({"gene": ["g1", "g2", "g3", "g4", "g5"],
                          "kept": [True, True, True, True, False],
                          "reason": ["", "", "", "", "low expression"]})
    with pytest.warns(UserWarning, match="not in the gene table"):
        pg = summarise_genes(_per_split_rows(), table, alpha=0.05)
    pg = pg.set_index("gene")
    assert pg.loc["g1", "p_median"] == pytest.approx(0.02)
    assert pg.loc["g1", "p_q975"] == pytest.approx(np.quantile([0.01, 0.02, 0.03], 0.975))
    assert pg.loc["g2", "p_median"] == pytest.approx(0.04)
    assert pg.loc["g3", "p_median"] == pytest.approx(0.6)  # the missing split counts as p = 1
    assert "counted as p = 1" in pg.loc["g3", "flags"] and "split 2" in pg.loc["g3", "flags"]
    assert pg.loc["g4", "category"] == "not evaluated" and "not predicted" in pg.loc["g4", "flags"]
    assert pg.loc["g5", "category"] == "filtered (low/no expression)"
    assert "not in gene table" in pg.loc["g6", "flags"]
    assert pg.loc["g1", "r2"] == pytest.approx(0.2)
    assert pg.loc["g1", "r2_lo"] == pytest.approx(np.quantile([0.1, 0.2, 0.3], 0.025))
    assert pg.loc["g1", "smape_mean_predictor"] == 20.0
    assert pg["significant"].sum() == 2

    fr = predictability_fractions(pg.reset_index()).iloc[0]
    assert fr["n_genes"] == 6  # filtered, not evaluated and the extra gene stay in the denominator
    assert (fr["n_significant"], fr["n_significant_lo"], fr["n_significant_hi"]) == (2, 1, 2)
    assert (fr["n_filtered"], fr["n_not_evaluated"], fr["n_tested"]) == (1, 1, 4)
    assert fr["pct_significant"] == pytest.approx(100 * 2 / 6)
    assert fr["pct_significant"] + fr["pct_not_significant"] + fr["pct_filtered"] + fr["pct_not_evaluated"] \
        == pytest.approx(100)
    # BH over the 4 tested median p-values 0.02, 0.04, 0.6, 0.9: q = 0.08, 0.08, 0.8, 0.9
    np.testing.assert_allclose(pg.loc[["g1", "g2", "g3", "g6"], "q"], [0.08, 0.08, 0.8, 0.9])
    assert fr["n_significant_bh"] == 0


def test_evaluate_split_reports_bad_genes_per_gene():
    splits, _ = synthetic_splits(n_genes=8, n_wells=12, n_splits=1)
    sp = splits[0]
    sp.measured[:3, 0] = np.nan
    sp.measured[:, 1] = 7.0
    sp.predicted[:, 2] = 3.0
    sp.train_mean[3] = np.nan
    sp.predicted[:, 4] = np.nan
    ps = evaluate_split(sp, "mannwhitney").set_index("gene")
    assert ps.loc["G0000", "n_wells"] == 9 and "3 test well(s)" in ps.loc["G0000", "flags"]
    assert np.isnan(ps.loc["G0001", "r2"]) and "constant measured" in ps.loc["G0001", "flags"]
    assert np.isfinite(ps.loc["G0001", "pvalue"])  # the test is still defined
    assert "constant predicted" in ps.loc["G0002", "flags"]
    assert "no train mean" in ps.loc["G0003", "flags"] and np.isnan(ps.loc["G0003", "pvalue"])
    assert "no usable test well" in ps.loc["G0004", "flags"]
    assert ps.loc["G0005", "flags"] == ""
    assert len(ps) == 8  # nobody dropped


@pytest.mark.parametrize("test", ["mannwhitney", "wilcoxon"])
@pytest.mark.parametrize("null_noise", [1e-3, 0.5])
def test_no_signal_is_at_or_below_alpha(test, null_noise):
    splits, _ = synthetic_splits(n_genes=1500, n_wells=60, n_splits=3, frac_signal=0.0,
                                 null_noise=null_noise, seed=4)
    per_split, per_gene = evaluate_predictions(splits, test=test, progress=False)
    fr = predictability_fractions(per_gene).iloc[0]
    # per split and after the median over splits, no more than alpha plus binomial noise
    margin = 3 * np.sqrt(0.05 * 0.95 / 1500)
    assert (per_split["pvalue"] < 0.05).mean() <= 0.05 + margin
    assert fr["pct_significant"] / 100 <= 0.05 + margin
    assert fr["n_significant_bh"] <= 3
    if test == "wilcoxon" and null_noise < 0.01:
        # predictions a hair off the mean predictor: paired differences symmetric about 0, so the
        # per-split test is calibrated (near alpha), not merely conservative
        assert (per_split["pvalue"] < 0.05).mean() >= 0.05 - margin


@pytest.mark.parametrize("test", ["mannwhitney", "wilcoxon"])
def test_signal_is_recovered_and_shuffling_removes_it(test, tmp_path):
    splits, n_sig = synthetic_splits(n_genes=600, n_wells=60, n_splits=3, frac_signal=0.3, seed=5)
    per_split, per_gene = evaluate_predictions(splits, test=test, progress=False)
    truth = pd.DataFrame({"omics": "transcriptomics", "gene": per_gene["gene"],
                          "kind": np.where(np.arange(600) < n_sig, "visible", "noise"),
                          "r2_expected": np.where(np.arange(600) < n_sig, 0.9, 0.0)})
    truth.to_csv(tmp_path / "truth_genes.csv", index=False)
    rec = truth_recovery(per_gene, read_truth_genes(tmp_path / "truth_genes.csv"), per_split).set_index("call")
    assert rec.loc["raw", "recall"] > 0.95
    assert rec.loc["raw", "precision"] > 0.95
    assert rec.loc["BH", "recall"] > 0.9
    assert rec.loc["raw", "false_positive_rate"] <= 0.05
    # single split tests: independent wells here, so at or below alpha among the noise genes
    assert rec.loc["raw", "split_tests_false_positive_rate"] <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1260)
    assert rec.loc["raw", "split_tests_true_positive_rate"] > 0.9
    null_gene, null_fr = null_by_shuffling(splits, test=test, seed=1)
    assert null_fr.iloc[0]["pct_significant"] <= 5.0
    assert null_fr.iloc[0]["n_significant_bh"] <= 3
    assert null_fr.iloc[0]["pct_split_tests_below_alpha"] <= 5.0 + 300 * np.sqrt(0.05 * 0.95 / 1800)


def test_truth_recovery_hand_computed():
    per_gene = pd.DataFrame({
        "omics": "proteomics", "stimulus": "m1", "gene": ["a", "b", "c", "d", "e", "x"],
        "kept": [True, True, True, True, False, True],
        "category": ["significant", "significant", "not significant", "not significant",
                     "filtered (low/no expression)", "significant"],
        "significant": [True, True, False, False, False, True],
        "significant_bh": [True, False, False, False, False, False],
        "r2": [0.9, 0.1, 0.5, 0.0, np.nan, 0.2], "test": "mannwhitney"})
    truth = pd.DataFrame({"omics": "proteomics", "gene": ["a", "b", "c", "d", "e", "z"],
                          "kind": ["visible", "noise", "visible", "hidden", "visible", "visible"],
                          "r2_expected": [0.8, 0, 0.4, 0, 0.3, 0.5]})
    rec = truth_recovery(per_gene, truth).set_index("call")
    raw = rec.loc["raw"]
    assert (raw["tp"], raw["fp"], raw["n_visible"], raw["n_visible_kept"]) == (1, 2, 3, 2)
    assert raw["precision"] == pytest.approx(1 / 3)
    assert raw["recall"] == pytest.approx(1 / 3) and raw["recall_kept"] == pytest.approx(1 / 2)
    assert raw["false_positive_rate"] == pytest.approx(2 / 3)  # b, x of the tested non-visible b, d, x
    assert raw["n_not_in_truth"] == 1 and raw["n_truth_not_measured"] == 1
    assert rec.loc["BH", "precision"] == 1.0


def test_headline_table_names_profile_source_and_test():
    splits, _ = synthetic_splits(n_genes=50, n_wells=20, n_splits=2)
    _, pg = evaluate_predictions(splits, test="wilcoxon", progress=False)
    head = headline_table(predictability_fractions(pg), profile="quick", source="simulated")
    row = head.iloc[0]
    assert row["paper"] == "18.72% (95% CI: 6.52%, 35.52%); 4927 / 26317"
    assert row["profile"] == "quick" and row["data source"] == "simulated"
    assert "Wilcoxon" in row["test"]
    assert row["this run"].endswith(f"/ {50}")


def test_evidence_statement_flags_small_data():
    splits, _ = synthetic_splits(n_genes=30, n_wells=3, n_splits=2)
    _, pg = evaluate_predictions(splits, test="mannwhitney", progress=False)
    fr = predictability_fractions(pg)
    ok, msgs = evidence_statement(fr, pg, profile="smoke", n_splits_expected=2)
    assert not ok
    text = " ".join(msgs)
    assert "too small to conclude" in text and "smoke" in text
    splits, _ = synthetic_splits(n_genes=60, n_wells=40, n_splits=2, n_perturbations=1)
    _, pg = evaluate_predictions(splits, test="mannwhitney", progress=False)
    ok, msgs = evidence_statement(predictability_fractions(pg), pg, profile="quick", n_splits_expected=2)
    assert not ok and "only 1 test perturbation" in " ".join(msgs)
    splits, _ = synthetic_splits(n_genes=200, n_wells=60, n_splits=10)
    _, pg = evaluate_predictions(splits, test="mannwhitney", progress=False)
    ok, msgs = evidence_statement(predictability_fractions(pg), pg, profile="quick", n_splits_expected=10)
    assert ok and msgs == []
