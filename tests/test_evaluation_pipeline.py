"""Notebook 50's calls on a small results tree built here (predictions, gene tables, GT, truth)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from test_evaluation_predictions import make_prediction_file

from i2o_utils.data import layout
from i2o_utils.evaluation import pipeline
from i2o_utils.evaluation.predictions import PredictionsMissing, gene_table_path, read_prediction_split
from i2o_utils.evaluation.summaries import evidence_statement, headline_table
from i2o_utils.evaluation.tables import paper_tables, table_files, tables_html
from i2o_utils.evaluation.truth import truth_recovery

GENES = tuple(f"G{i}" for i in range(12))


@pytest.fixture()
def roots(tmp_path, monkeypatch):
    data, results = tmp_path / "data", tmp_path / "results"
    monkeypatch.setenv("I2O_DATA_DIR", str(data))
    monkeypatch.setenv("I2O_RESULTS_DIR", str(results))
    folder = results / "40_finetune_omics" / "predictions"
    for omics, stim in (("transcriptomics", "m1"), ("proteomics", "m2")):
        for k in range(2):
            path = make_prediction_file(folder, omics, stim, k, n_val=2, n_test=9, genes=GENES, seed=3)
            a = ad.read_h5ad(path)  # test wells of 5 perturbations (2 wells each, one alone)
            a.obs["target"] = ["NT", "NT"] + [f"KO{i // 2}" for i in range(9)]
            a.write_h5ad(path)
        table = pd.DataFrame({"gene": list(GENES) + ["LOW1", "LOW2"], "kept": [True] * 12 + [False] * 2,
                              "reason": [""] * 12 + ["low expression"] * 2})
        path = gene_table_path(omics, stim, results / "10_preprocess_omics")
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
        # the truth: every well and gene of split 0 but the last gene
        sp = read_prediction_split(folder / f"{omics}_{stim}_split00.h5ad")
        rows = [(w.plate_barcode, w.well_id, g, "test", float(sp.measured[i, j]))
                for i, w in enumerate(sp.wells.itertuples()) for j, g in enumerate(GENES[:-1])]
        gt = pd.DataFrame(rows, columns=list(layout.GT_COLUMNS))
        layout.write_gt(gt, layout.gt_path(omics, stim, data))
    (data / "SCREEN.json").write_text(json.dumps({"source": "simulated", "profile": "smoke", "seed": 0,
                                                  "null": False}))
    (data / "simulation").mkdir()
    pd.DataFrame({"omics": "transcriptomics", "gene": list(GENES),
                  "kind": ["visible"] * 6 + ["noise"] * 6, "r2_expected": [0.5] * 6 + [0.0] * 6}
                 ).to_csv(data / "simulation" / "truth_genes.csv", index=False)
    return data, results


def test_inputs_are_gathered_and_gaps_noted(roots):
    inputs = pipeline.load_evaluation_inputs(n_splits=3, check_gt=True)
    assert set(inputs.predictions) == {("transcriptomics", "m1"), ("proteomics", "m2")}
    assert set(inputs.missing) == {("transcriptomics", "m2"), ("proteomics", "m1")}
    assert any("2 of 3 splits" in n for n in inputs.notes)
    ov = inputs.overview()
    assert ov.loc[0, "genes measured (gene table)"] == 14 and ov.loc[0, "genes filtered"] == 2
    check = inputs.truth_check()
    assert (check["genes missing from truth"] == 1).all()
    # the truth was written from split 0; split 1's file carries other measured values
    assert check.set_index("split")["values disagreeing"].to_dict() == {0: 0, 1: 9 * 11}
    assert pipeline.screen_label(inputs.screen) == "simulated screen (seed 0, smoke scale)"
    assert inputs.truth is not None


def test_evaluate_save_and_explain(roots):
    data, results = roots
    inputs = pipeline.load_evaluation_inputs(n_splits=2, check_gt=True)
    result = pipeline.evaluate_screen(inputs, test="wilcoxon", progress=False)
    pg = result.per_gene
    assert len(pg) == 2 * 14  # filtered genes stay in
    tm1 = pg[(pg["omics"] == "transcriptomics")].set_index("gene")
    assert tm1.loc["LOW1", "category"] == "filtered (low/no expression)"
    # the gene missing from the truth has no usable well in split 0: flagged, still counted
    assert "no usable test well" in tm1.loc["G11", "flags"]
    fr = result.fractions
    assert (fr["n_genes"] == 14).all() and (fr["test"] == "wilcoxon").all()

    ok, msgs = evidence_statement(fr, pg, profile="smoke", n_splits_expected=2)
    text = pipeline.evidence_markdown(ok, msgs, inputs.notes)
    assert not ok and "too small to conclude" in text

    null = pipeline.null_check(inputs, test="wilcoxon")
    assert len(null) == 2 and null["pct_split_tests_below_alpha"].between(0, 100).all()
    both = pipeline.compare_tests(inputs)
    assert len(both) == 6 and both["test"].tolist() == ["perturbation", "mannwhitney", "wilcoxon"] * 2
    assert both["omics"].tolist() == ["transcriptomics"] * 3 + ["proteomics"] * 3
    assert tuple(both.columns) == pipeline.TESTS_COMPARED_COLUMNS
    # the truth lists transcripts only: proteomics has nothing to recover
    assert both.loc[both["omics"] == "proteomics", "recall"].isna().all()
    assert "Shuffled predictions" in pipeline.null_markdown(inputs.screen, result, null)
    assert "null screen" in pipeline.null_markdown({"null": True}, result, null)
    loose = null.assign(pct_split_tests_below_alpha=20.0)
    assert "far more often than alpha" in pipeline.null_markdown({}, result, loose)
    assert "far more often" not in pipeline.null_markdown({}, result, null.assign(pct_split_tests_below_alpha=4.0))

    tabs = paper_tables(pg)
    html = tables_html(tabs, pg)
    assert "Table 1" in html and "Table 4" in html and "Wilcoxon" in html
    out = results / "50_evaluate"
    written = pipeline.save_evaluation(out, result, headline=headline_table(fr, "smoke", "simulated"),
                                       truth_recovery=truth_recovery(pg, inputs.truth), null_shuffled=null,
                                       absent=None, **table_files(tabs))
    names = {p.name for p in written}
    assert {"per_gene.parquet", "per_split.parquet", "fractions.csv", "headline.csv",
            "truth_recovery.csv", "null_shuffled.csv", "table1_transcriptomics_m1.csv"} <= names
    back = pd.read_parquet(out / "per_gene.parquet")
    assert len(back) == len(pg) and {"p_median", "q", "r2_lo", "flags", "test"} <= set(back.columns)


def test_no_predictions_at_all_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("I2O_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("I2O_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(PredictionsMissing, match="fine-tuning notebook"):
        pipeline.load_evaluation_inputs()


def test_without_gene_table_the_denominator_is_said_to_be_partial(roots):
    data, results = roots
    gene_table_path("proteomics", "m2", results / "10_preprocess_omics").unlink()
    inputs = pipeline.load_evaluation_inputs()
    assert inputs.gene_tables[("proteomics", "m2")] is None
    assert any("no gene table" in n for n in inputs.notes)
    result = pipeline.evaluate_screen(inputs, progress=False)
    assert int(result.fractions.set_index("omics").loc["proteomics", "n_genes"]) == 12
    assert np.isfinite(result.per_gene["p_median"]).any()


def test_truth_check_summary_sums_the_splits(roots):
    inputs = pipeline.load_evaluation_inputs(n_splits=3, check_gt=True)
    per_split, summary = inputs.truth_check(), inputs.truth_check_summary()
    assert len(summary) == per_split.groupby(["omics", "stimulus"]).ngroups
    assert summary["values disagreeing"].sum() == per_split["values disagreeing"].sum()
    assert (summary["splits"] == per_split.groupby(["omics", "stimulus"], sort=False)["split"].nunique().values).all()


def test_null_calibration_from_a_null_screens_pvalues(roots, tmp_path):
    data, results = roots
    inputs = pipeline.load_evaluation_inputs(n_splits=2)
    res = pipeline.evaluate_all_tests(inputs)
    assert set(res) == {"perturbation", "mannwhitney", "wilcoxon"}
    pv = pipeline.pvalues_by_test(res)
    assert set(pv["level"]) == {"split", "gene"} and pv["pvalue"].between(0, 1).all()
    cal = pipeline.null_calibration(pv)
    assert tuple(cal.columns) == pipeline.NULL_CALIBRATION_COLUMNS and len(cal) == 6
    # by hand for one row
    g = pv[(pv["omics"] == "proteomics") & (pv["test"] == "wilcoxon")]
    row = cal[(cal["omics"] == "proteomics") & (cal["test"] == "wilcoxon")].iloc[0]
    assert row["pct_p_below_alpha"] == pytest.approx(100 * (g.loc[g["level"] == "gene", "pvalue"] < 0.05).mean())
    assert row["split_tests_false_positive_rate"] == pytest.approx((g.loc[g["level"] == "split", "pvalue"] < 0.05).mean())

    # where i2o book puts the null screen; absent -> None; a screen that is not null -> error
    from i2o_utils.paths import null_screen_dirs

    assert pipeline.load_null_screen(results) is None
    dirs = null_screen_dirs(results)
    (dirs["results"] / "50_evaluate").mkdir(parents=True)
    pv.to_parquet(dirs["results"] / "50_evaluate" / pipeline.NULL_PVALUES_FILE)
    dirs["data"].mkdir(parents=True)
    (dirs["data"] / "SCREEN.json").write_text(json.dumps({"source": "simulated", "null": False}))
    with pytest.raises(layout.LayoutError, match="not a null screen"):
        pipeline.load_null_screen(results)
    (dirs["data"] / "SCREEN.json").write_text(json.dumps({"source": "simulated", "null": True, "seed": 5}))
    info, back = pipeline.load_null_screen(results)
    assert info["seed"] == 5 and len(back) == len(pv)


def test_predictions_must_follow_the_split_table(roots):
    targets = ["NT"] + [f"KO{i}" for i in range(5)]
    table = pd.DataFrame([(k, t, "val" if t == "NT" else "test") for k in range(2) for t in targets],
                         columns=["split", "target", "fold"])
    inputs = pipeline.load_evaluation_inputs(n_splits=2, split_table=table)
    assert inputs.predictions
    moved = table.copy()
    moved.loc[(moved["split"] == 1) & (moved["target"] == "KO3"), "fold"] = "train"
    with pytest.raises(layout.LayoutError, match=r"_split01\.h5ad: perturbation KO3 is predicted as a test "
                                                 r"perturbation, but split 1 of the split table puts it in 'train'"):
        pipeline.load_evaluation_inputs(n_splits=2, split_table=moved)
