"""The loader of the fine-tuning step's predictions and of the omics gene tables."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from i2o_utils.data import layout

from i2o_utils.data.layout import LayoutError
from i2o_utils.evaluation.predictions import (
    PredictionsMissing,
    attach_gt,
    find_prediction_files,
    gene_symbols,
    gene_table_path,
    load_predictions,
    prediction_path,
    read_gene_table,
    read_prediction_split,
    read_screen_info,
)


def make_prediction_file(folder, omics="transcriptomics", stimulus="m1", split=0, n_val=3, n_test=5,
                         genes=("G1", "G2", "G3", "G4"), seed=0, symbols=False, **overrides):
    """A small prediction file following the results contract; ``overrides`` break it on purpose."""
    rng = np.random.default_rng([seed, split])
    n = n_val + n_test
    obs = pd.DataFrame({
        "plate_barcode": ["P1"] * n,
        "well_id": [f"{chr(65 + i)}0{1 + i % 9}" for i in range(n)],  # zero-padded on purpose
        "target": ["NT"] * n,
        "fold": ["val"] * n_val + ["test"] * n_test,
    })
    obs.index = obs["plate_barcode"] + ":" + obs["well_id"]
    var = pd.DataFrame({"train_mean": np.arange(len(genes), dtype=float) + 5,
                        "train_std": np.ones(len(genes))}, index=pd.Index(list(genes), name="gene"))
    if symbols:
        var["symbol"] = [f"SYM{g}" for g in genes]
    measured = rng.normal(5, 1, (n, len(genes))).astype(np.float32)
    layers = {"measured": measured, "predicted": (measured + rng.normal(0, 0.1, measured.shape)).astype(np.float32)}
    obs = overrides.pop("obs", obs)
    var = overrides.pop("var", var)
    layers = overrides.pop("layers", layers)
    a = ad.AnnData(obs=obs, var=var, layers=layers)
    a.uns["omics"], a.uns["stimulus"], a.uns["split"] = omics, stimulus, split
    path = prediction_path(omics, stimulus, split, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    a.write_h5ad(path)
    return path


def test_read_prediction_split_keeps_test_wells(tmp_path):
    path = make_prediction_file(tmp_path, split=3, symbols=True)
    sp = read_prediction_split(path)
    assert (sp.omics, sp.stimulus, sp.split) == ("transcriptomics", "m1", 3)
    assert sp.n_wells == 5 and sp.n_genes == 4
    assert (sp.wells["fold"] == "test").all()
    assert sp.wells["well_id"].iloc[0] == "D4"  # 'D04' normalised to the authors' form
    assert sp.measured.dtype == np.float64 and sp.measured.shape == (5, 4)
    np.testing.assert_array_equal(sp.train_mean, [5, 6, 7, 8])
    assert sp.symbols["G2"] == "SYMG2"
    val = read_prediction_split(path, fold="val")
    assert val.n_wells == 3


def test_load_predictions_orders_splits_and_reports_missing(tmp_path):
    for k in (2, 0, 1):
        make_prediction_file(tmp_path, split=k)
    make_prediction_file(tmp_path, omics="proteomics", stimulus="m2", split=0)
    (tmp_path / "notes.h5ad").write_text("not a prediction file name")
    files = find_prediction_files(tmp_path)
    assert len(files) == 4
    splits = load_predictions("transcriptomics", "m1", tmp_path)
    assert [s.split for s in splits] == [0, 1, 2]
    assert len(load_predictions("transcriptomics", "m1", tmp_path, n_splits=2)) == 2
    with pytest.raises(LayoutError, match="transcriptomics_m1_split03.h5ad"):
        load_predictions("transcriptomics", "m1", tmp_path, n_splits=4)
    with pytest.raises(PredictionsMissing, match="40_finetune_omics"):
        load_predictions("proteomics", "m1", tmp_path)
    with pytest.raises(PredictionsMissing):
        load_predictions("proteomics", "m1", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown omics"):
        load_predictions("metabolomics", "m1", tmp_path)


def test_contract_violations_name_file_and_fault(tmp_path):
    good = read_prediction_split(make_prediction_file(tmp_path / "ok"))
    assert good.n_wells == 5

    p = make_prediction_file(tmp_path / "a", layers={"measured": np.zeros((8, 4), np.float32)})
    with pytest.raises(LayoutError, match=r"split00.h5ad.*missing layer.*predicted"):
        read_prediction_split(p)

    var = pd.DataFrame({"train_std": np.ones(4)}, index=["G1", "G2", "G3", "G4"])
    p = make_prediction_file(tmp_path / "b", var=var)
    with pytest.raises(LayoutError, match="var lacks column.*train_mean"):
        read_prediction_split(p)

    obs = pd.DataFrame({"plate_barcode": ["P1"] * 8, "well_id": [f"A{i + 1}" for i in range(8)],
                        "target": ["NT"] * 8, "fold": ["test"] * 7 + ["holdout"]},
                       index=[str(i) for i in range(8)])
    p = make_prediction_file(tmp_path / "c", obs=obs)
    with pytest.raises(LayoutError, match="holdout"):
        read_prediction_split(p)

    obs = obs.assign(fold="test", well_id=["A1"] * 2 + [f"B{i + 1}" for i in range(6)])
    p = make_prediction_file(tmp_path / "d", obs=obs)
    with pytest.raises(LayoutError, match="well A1 of plate P1 appears more than once"):
        read_prediction_split(p)

    obs = obs.assign(well_id=[f"Z{i + 1}" for i in range(8)])
    p = make_prediction_file(tmp_path / "e", obs=obs)
    with pytest.raises(LayoutError, match="Z1"):
        read_prediction_split(p)

    obs = obs.assign(well_id=[f"A{i + 1}" for i in range(8)], fold="val")
    p = make_prediction_file(tmp_path / "f", obs=obs)
    with pytest.raises(LayoutError, match="no well with fold == 'test'"):
        read_prediction_split(p)

    bad = tmp_path / "g" / "transcriptomics_m1_split00.h5ad"
    bad.parent.mkdir()
    bad.write_bytes(b"garbage")
    with pytest.raises(LayoutError, match="not a readable AnnData"):
        read_prediction_split(bad)


def test_nan_values_are_loaded_not_rejected(tmp_path):
    m = np.full((8, 4), 5.0, np.float32)
    m[6, 1] = np.nan
    p = make_prediction_file(tmp_path, layers={"measured": m, "predicted": m.copy()})
    sp = read_prediction_split(p)
    assert np.isnan(sp.measured).sum() == 1


def test_read_gene_table(tmp_path):
    path = gene_table_path("proteomics", "m2", tmp_path)
    assert path.name == "genes_proteomics_m2.csv"
    pd.DataFrame({"gene": ["A", "B", "C"], "kept": ["True", "False", "true"],
                  "reason": ["", "low expression", ""]}).to_csv(path, index=False)
    t = read_gene_table(path)
    assert t["kept"].tolist() == [True, False, True]
    assert t["reason"].tolist() == ["", "low expression", ""]
    pd.DataFrame({"gene": ["A", "A"], "kept": [True, True]}).to_csv(path, index=False)
    with pytest.raises(LayoutError, match="gene A appears more than once"):
        read_gene_table(path)
    pd.DataFrame({"gene": ["A"], "kept": ["maybe"]}).to_csv(path, index=False)
    with pytest.raises(LayoutError, match="'kept' of gene A"):
        read_gene_table(path)
    pd.DataFrame({"gene": ["A"]}).to_csv(path, index=False)
    with pytest.raises(LayoutError, match="missing column"):
        read_gene_table(path)
    with pytest.raises(LayoutError, match="no such file"):
        read_gene_table(tmp_path / "absent.csv")


def test_attach_gt_reports_wells_and_genes_missing_from_the_truth(tmp_path):
    sp = read_prediction_split(make_prediction_file(tmp_path))
    rows = []
    for _, w in sp.wells.iloc[1:].iterrows():  # first test well absent from the truth
        for j, g in enumerate(sp.genes[:-1]):  # last gene absent from the truth
            rows.append((w["plate_barcode"], w["well_id"], g, float(sp.measured[_, j])))
    gt = pd.DataFrame(rows, columns=["plate_barcode", "well_id", layout.GT_GENE, layout.GT_MEASURED])
    gt.loc[0, layout.GT_MEASURED] += 1.0  # one disagreement with the file's measured layer
    new, report = attach_gt(sp, gt)
    assert report["wells_missing"] == [f"P1/{sp.wells['well_id'].iloc[0]}"]
    assert report["genes_missing"] == [sp.genes[-1]]
    assert report["n_disagree"] == 1
    assert np.isnan(new.measured[0]).all() and np.isnan(new.measured[:, -1]).all()
    assert report["n_cells_missing"] == 4 + 5 - 1
    # the wide matrix of read_gt_matrix (the evaluation pipeline's form) gives the same
    path = layout.write_gt(gt.assign(**{layout.GT_FOLD: "test"}), tmp_path / "gt.csv")
    new2, report2 = attach_gt(sp, layout.read_gt_matrix(path))
    assert report2 == report
    np.testing.assert_array_equal(new2.measured, new.measured)


def test_read_screen_info(tmp_path):
    assert read_screen_info(tmp_path)["source"].startswith("unknown")
    (tmp_path / "SCREEN.json").write_text(json.dumps({"source": "simulated", "profile": "smoke", "null": True}))
    info = read_screen_info(tmp_path)
    assert info["source"] == "simulated" and info["null"] is True
    (tmp_path / "SCREEN.json").write_text("{not json")
    with pytest.raises(LayoutError, match="SCREEN.json"):
        read_screen_info(tmp_path)


def test_reads_what_the_finetuning_writer_writes(tmp_path):
    predict = pytest.importorskip("i2o_utils.model.predict")
    obs = pd.DataFrame({"plate_barcode": ["P1"] * 4, "well_id": ["A1", "A2", "B1", "B2"],
                        "target": ["NT", "NT", "STAT1", "STAT1"], "fold": ["val", "test", "test", "test"]})
    genes = pd.Index(["ENSG1", "ENSG2"])
    m = np.arange(8, dtype=float).reshape(4, 2)
    predict.write_predictions(tmp_path, "transcriptomics", "m2", 7, obs, genes, m, m + 1,
                              np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    [sp] = load_predictions("transcriptomics", "m2", tmp_path / "predictions")
    assert sp.split == 7 and sp.n_wells == 3
    np.testing.assert_array_equal(sp.predicted, m[1:] + 1)


def test_gene_symbols_come_from_the_gene_tables(tmp_path):
    path = gene_table_path("transcriptomics", "m1", tmp_path)
    pd.DataFrame({"gene": ["ENSG1", "ENSG2"], "symbol": ["STAT1", "STAT6"], "kept": ["True", "false"],
                  "reason": ["", "low expression"]}).to_csv(path, index=False)
    m1 = read_gene_table(path)
    assert m1["kept"].tolist() == [True, False]
    m2 = pd.DataFrame({"gene": ["ENSG2", "ENSG3"], "symbol": ["STAT6", "IRF1"], "kept": [True, True]})
    s = gene_symbols([m1, None, m2])
    assert s.to_dict() == {"ENSG1": "STAT1", "ENSG2": "STAT6", "ENSG3": "IRF1"}
    assert gene_symbols([m1.drop(columns="symbol")]).empty
