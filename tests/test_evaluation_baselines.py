"""Baselines fit on the model's train wells and score on its test wells, under the same test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from i2o_utils.evaluation.baselines import baseline_splits, beyond_baselines, read_well_features
from i2o_utils.evaluation.pipeline import EvaluationInputs
from i2o_utils.evaluation.predictions import SplitPredictions
from i2o_utils.evaluation.baselines import evaluate_baselines
from i2o_utils.data.layout import LayoutError, normalise_well_id
from i2o_utils.data.splits import make_splits


def _screen(n_targets=40, wells=3, seed=0):
    rng = np.random.default_rng(seed)
    targets = [f"KO{i:02d}" for i in range(n_targets)]
    rows = [("IMG01", normalise_well_id(f"{chr(65 + (k // 24) % 16)}{k % 24 + 1:02d}"), t)
            for k, t in enumerate(t for t in targets for _ in range(wells))]
    store = pd.DataFrame(rows, columns=["plate", "well_id", "target"]).assign(cell_state="m1", n_tiles=10)
    count = {t: rng.uniform(50, 150) for t in targets}
    shape = {t: rng.normal() for t in targets}
    feats = pd.DataFrame({"Cells_Count": [count[t] + rng.normal(0, 2) for t in store["target"]],
                          "Cells_AreaShape_Area": [shape[t] + rng.normal(0, 0.1) for t in store["target"]]},
                         index=pd.MultiIndex.from_frame(store[["plate", "well_id"]]))
    # G0 follows the cell count, G1 the cell area, G2 neither
    y = np.column_stack([[count[t] / 50 for t in store["target"]], [shape[t] for t in store["target"]],
                         rng.normal(size=len(store))])
    wide = pd.DataFrame(y, index=pd.MultiIndex.from_frame(store[["plate", "well_id"]].rename(
        columns={"plate": "plate_barcode"})), columns=pd.Index(["G0", "G1", "G2"], name="gene"))
    splits = make_splits(targets, 3)
    model = []
    for k in range(3):
        fold = store["target"].map(splits[splits["split"] == k].set_index("target")["fold"])
        test = store[fold == "test"].reset_index(drop=True)
        train_mean = y[(fold == "train").to_numpy()].mean(axis=0)
        w = test.rename(columns={"plate": "plate_barcode"})[["plate_barcode", "well_id", "target"]].assign(fold="test")
        model.append(SplitPredictions("transcriptomics", "m1", k, w, wide.columns, y[(fold == "test").to_numpy()],
                                      np.repeat(train_mean[None], len(w), axis=0), train_mean))
    return store, feats, {("transcriptomics", "m1"): (wide, "gt.csv")}, splits, {("transcriptomics", "m1"): model}


def test_each_baseline_fits_on_train_wells_and_scores_the_model_test_wells():
    store, feats, labels, splits, model = _screen()
    cc = baseline_splits("cell_count", feats, labels, store, splits, model)[("transcriptomics", "m1")]
    mo = baseline_splits("morphology", feats, labels, store, splits, model)[("transcriptomics", "m1")]
    for got, ref in zip(cc, model[("transcriptomics", "m1")]):
        assert got.predicted.shape == ref.measured.shape and np.isfinite(got.predicted).all()
        assert got.wells.equals(ref.wells) and np.array_equal(got.train_mean, ref.train_mean)
    # the cell count predicts G0 and not G1; the morphology features predict both
    def oos(s, g):
        return 1 - ((s.measured[:, g] - s.predicted[:, g]) ** 2).sum() / ((s.measured[:, g] - s.train_mean[g]) ** 2).sum()

    assert all(oos(s, 0) > 0.9 for s in cc) and all(oos(s, 1) < 0.3 for s in cc)
    assert all(oos(s, 0) > 0.9 and oos(s, 1) > 0.9 for s in mo)

    inputs = EvaluationInputs(predictions=model, gene_tables={}, symbols={}, truth=None, screen={})
    res = evaluate_baselines(inputs, {"cell_count": {k: v for k, v in
                                                     baseline_splits("cell_count", feats, labels, store, splits,
                                                                     model).items()}},
                             test="perturbation", alpha=0.05, fdr=0.05)
    pg = res["cell_count"].per_gene.set_index("gene")
    assert pg.loc["G0", "r2_oos"] > 0.9 and pg.loc["G0", "p_gene"] < 1e-3
    fake_model = pg.reset_index().assign(significant_bh=True)
    summary, per_gene = beyond_baselines(fake_model, res)
    assert summary.loc[0, "significant (images)"] == 3
    assert set(per_gene.loc[per_gene["beyond_all"], "gene"]) == set(pg.index[~pg["significant_bh"]])


def test_well_features_reader_names_the_file(tmp_path):
    with pytest.raises(LayoutError, match="notebook 20"):
        read_well_features(tmp_path / "features_wells.parquet")
    pd.DataFrame({"Metadata_Plate": ["P"], "Metadata_Well": ["A1"]}).to_parquet(tmp_path / "f.parquet")
    with pytest.raises(LayoutError, match="Cells_Count"):
        read_well_features(tmp_path / "f.parquet")
