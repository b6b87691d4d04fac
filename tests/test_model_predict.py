"""Inference embeddings, the embedding sanity check, and the outputs of finetune_and_predict."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from i2o_utils.config import OMICS, STIMULI, get_profile
from i2o_utils.model.backbone import MResNet18
from i2o_utils.model.data import resolve_runtime
from tests.support.tiles import synthetic_tiles
from i2o_utils.model.finetune import LabelError, cache_tile_embeddings
from i2o_utils.data.splits import make_splits
from i2o_utils.model.predict import embedding_separation, finetune_and_predict, inference_embeddings


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def store():
    return synthetic_tiles(n_targets=5, wells_per_group=4, tiles_per_well=[5, 8], tile_size=16, seed=3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MResNet18(width=4, dense_dims=(16, 8)).eval()


def test_inference_embeddings(store, model):
    cache = cache_tile_embeddings(model, store, resolve_runtime("cpu"), progress=False)
    all_tiles = cache.well_means(np.arange(len(store.wells))).numpy()
    # N >= every well's tile count, without replacement where possible: the mean over all tiles
    # for the wells of 8 tiles, whatever the seeds
    e = inference_embeddings(cache, 8, seeds=(0, 1, 2))
    full = store.wells["n_tiles"].to_numpy() == 8
    np.testing.assert_allclose(e[full], all_tiles[full], rtol=1e-5, atol=1e-6)
    a = inference_embeddings(cache, 3, seeds=(0,))
    b = inference_embeddings(cache, 3, seeds=(0, 1))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, inference_embeddings(cache, 3, seeds=(0,)))


def test_embedding_separation():
    rng = np.random.default_rng(0)
    wells = pd.DataFrame({"target": np.repeat(["A", "B", "C", "D"], 4), "cell_state": "m1",
                          "plate": np.tile(["P1", "P2"], 8)})
    centres = rng.normal(size=(4, 6))
    clustered = np.repeat(centres, 4, axis=0) + 0.1 * rng.normal(size=(16, 6))
    s = embedding_separation(clustered, wells)
    assert s["ratio"] < 0.5 and s["knn_accuracy"] == 1.0
    assert s["knn_chance"] == pytest.approx(2 / 8)  # 2 of the 8 other-plate wells share the group
    r = embedding_separation(rng.normal(size=(16, 6)), wells)
    assert r["ratio"] > 0.7 and r["n_groups"] == 4


def _labels(store, genes=6, seed=0):
    """Labels that depend on each group's mean tile intensity (so the images carry signal)."""
    rng = np.random.default_rng(seed)
    w = store.wells
    level = np.array([store.to_float(store.read_well(i)).mean(axis=(0, 2, 3)) for i in range(len(w))])
    out = {}
    for omics in OMICS:
        for stim in STIMULI:
            sel = (w["cell_state"] == stim).to_numpy()
            y = level[sel] @ rng.normal(size=(3, genes)) * 5 + 0.05 * rng.normal(size=(sel.sum(), genes))
            idx = pd.MultiIndex.from_arrays([w.loc[sel, "plate"], w.loc[sel, "well_id"]],
                                            names=["plate_barcode", "well_id"])
            out[(omics, stim)] = (pd.DataFrame(y, index=idx, columns=[f"{omics[:1]}{i}" for i in range(genes)]),
                                  f"{omics}_{stim}.csv")
    return out


def test_finetune_and_predict_outputs(store, model, tmp_path):
    prof = get_profile("smoke").with_overrides(
        finetune={"max_epochs": 5, "patience": 5, "wells_per_batch": 8, "tiles_per_well": 4},
        inference={"tiles_per_well": 6, "seeds": (0, 1)},
        evaluation={"n_splits": 2})
    labels = _labels(store)
    splits = make_splits(store.wells["target"].unique(), 2)
    run = finetune_and_predict(store, model, prof, tmp_path, labels=labels, split_table=splits, device="cpu",
                               progress=False)
    assert len(run.runs) == 4 * 2 and set(run.runs["epochs"]) == {5}
    assert (run.curves.groupby(["omics", "stimulus", "split"]).size() == 5).all()
    for omics in OMICS:
        for stim in STIMULI:
            wide = labels[(omics, stim)][0]
            for k in range(2):
                a = ad.read_h5ad(tmp_path / "predictions" / f"{omics}_{stim}_split{k:02d}.h5ad")
                assert list(a.obs.columns) == ["plate_barcode", "well_id", "target", "fold"]
                assert set(a.obs["fold"]) == {"val", "test"}
                fold = splits[splits["split"] == k].set_index("target")["fold"]
                assert (a.obs["target"].map(fold) == a.obs["fold"]).all()
                assert set(a.layers) == {"measured", "predicted"} and list(a.var.columns) == ["train_mean", "train_std"]
                measured = wide.loc[list(zip(a.obs["plate_barcode"], a.obs["well_id"]))].to_numpy()
                np.testing.assert_allclose(a.layers["measured"], measured, rtol=1e-6)
                # train mean/std of the train wells (ddof=1)
                train_t = fold[fold == "train"].index
                w = store.wells[store.wells["cell_state"] == stim]
                tr = wide.loc[list(zip(w.loc[w["target"].isin(train_t), "plate"], w.loc[w["target"].isin(train_t), "well_id"]))]
                np.testing.assert_allclose(a.var["train_mean"], tr.mean(0), rtol=1e-10)
                np.testing.assert_allclose(a.var["train_std"], tr.std(0, ddof=1), rtol=1e-10)
                assert np.isfinite(a.layers["predicted"]).all()
    assert not list((tmp_path / "predictions").glob("*/*.csv")) and not (tmp_path / "splits.csv").exists()
    emb = pd.read_parquet(tmp_path / "embeddings" / "well_embeddings.parquet")
    assert len(emb) == len(store.wells) and emb.columns[0] == "Metadata_plate"
    assert [c for c in emb.columns if c.startswith("emb_")] == [f"emb_{i:03d}" for i in range(8)]
    per_gene = pd.read_parquet(tmp_path / "val_per_gene.parquet")
    assert len(per_gene) == 4 * 2 * 6
    heads = torch.load(tmp_path / "heads.pt", weights_only=False)["heads"]
    assert set(heads) == {f"{o}_{s}_split{k:02d}" for o in OMICS for s in STIMULI for k in range(2)}


def test_finetune_label_errors(store, model, tmp_path):
    prof = get_profile("smoke").with_overrides(finetune={"max_epochs": 1}, evaluation={"n_splits": 1})
    labels = _labels(store)
    key = ("proteomics", "m2")
    wide = labels[key][0].copy()
    wide.iloc[0, 0] = np.nan
    with pytest.raises(LabelError, match="proteomics_m2.csv: no finite measured value"):
        finetune_and_predict(store, model, prof, tmp_path, labels={key: (wide, "proteomics_m2.csv")},
                             split_table=make_splits(store.wells["target"].unique(), 1), device="cpu",
                             progress=False)


def test_figures_build(store):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from i2o_utils.model.predict import planted_gene_summary
    from i2o_utils.plotting import model as model_plots

    hist = pd.DataFrame({"step": np.arange(1, 11), "loss": np.linspace(0.2, 0.1, 10), "lr": 1e-3})
    plt.close(model_plots.pretrain_loss_figure(hist, margin=0.2))
    rng = np.random.default_rng(0)
    embs = {"pretrained": rng.normal(size=(len(store.wells), 4)), "random init": rng.normal(size=(len(store.wells), 4))}
    table = pd.DataFrame([{"backbone": k, **embedding_separation(v, store.wells)} for k, v in embs.items()])
    plt.close(model_plots.embedding_distance_figure(embs, store.wells, table))
    curves = pd.DataFrame([{"omics": o, "stimulus": s, "split": k, "epoch": e, "train_loss": 1.0, "val_loss": 1 - e / 10,
                            "val_loss_mean_predictor": 1.0} for o in OMICS for s in STIMULI for k in range(2) for e in range(3)])
    plt.close(model_plots.finetune_curves_figure(curves))
    per_gene = pd.DataFrame([{"omics": o, "stimulus": s, "split": k, "gene": g, "val_mse": 0.5 if g == "a" else 1.1,
                              "val_mse_mean_predictor": 1.0} for o in OMICS for s in STIMULI for k in range(2) for g in "ab"])
    truth = pd.DataFrame([{"omics": o, "gene": g, "kind": "visible" if g == "a" else "noise"} for o in OMICS for g in "ab"])
    plt.close(model_plots.planted_genes_figure(per_gene, truth))
    summary = planted_gene_summary(per_gene, truth).set_index(["omics", "stimulus", "kind"])
    assert (summary.xs("visible", level="kind")["fraction_below_mean_predictor"] == 1.0).all()
    assert summary.xs("noise", level="kind")["median_ratio"].to_numpy() == pytest.approx(1.1)
    assert planted_gene_summary(per_gene, None) is None
