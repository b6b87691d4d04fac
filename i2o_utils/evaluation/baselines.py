"""Baselines: what simpler inputs predict on the same splits, under the same test (beyond the paper).

A gene the images "predict" may be one that any crude summary of the wells predicts as well.
Each baseline is fitted on the train wells of every split that notebook 40 used
(notebook 10's ``splits.csv``, :mod:`i2o_utils.data.splits`), with the same labels and train-fold means
(:func:`i2o_utils.model.finetune.load_labels`, :func:`~i2o_utils.model.finetune.align_labels`), and
its test-fold predictions are evaluated exactly like the model's:

* ``cell_count``: the number of cells per well alone (``Cells_Count`` of notebook 20's
  ``features_wells.parquet``), linear regression;
* ``morphology``: the interpretable per-well morphology features of notebook 20 (means of the
  CellProfiler-like cell features and the cell count), ridge regression with the penalty chosen
  per gene by efficient leave-one-out cross-validation on the train wells (scikit-learn's
  ``RidgeCV``), what a user would try first;
* ``random_backbone``: the same backbone architecture at random initialisation (no
  pre-training), its well embeddings (mean over tiles) with the same ridge regression.

:func:`beyond_baselines` then says, per gene, whether the images are significant where no
baseline is. That a baseline is not significant for a gene does not prove it cannot predict it;
the table reports the numbers, not a test of the difference.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from i2o_utils.data import layout

__all__ = ["BASELINES", "BaselineInputs", "read_well_features", "random_backbone_features",
           "baseline_splits", "evaluate_baselines", "beyond_baselines"]

BASELINES = {
    "cell_count": "cell count per well alone (linear regression)",
    "morphology": "morphology features of notebook 20 (ridge regression)",
    "random_backbone": "backbone at random initialisation, well embeddings (ridge regression)",
}
RIDGE_ALPHAS = tuple(np.logspace(-3, 4, 15))


def read_well_features(path: str | os.PathLike) -> pd.DataFrame:
    """Per-well morphology features of notebook 20, indexed by (plate, well_id); feature columns only.

    Raises
    ------
    LayoutError
        Missing file, or no ``Metadata_Plate`` / ``Metadata_Well`` / ``Cells_Count`` column.
    """
    path = Path(path)
    if not path.exists():
        raise layout.LayoutError(f"{path}: no such file (written by notebook 20, the image preprocessing)")
    df = pd.read_parquet(path)
    missing = [c for c in ("Metadata_Plate", "Metadata_Well", "Cells_Count") if c not in df.columns]
    if missing:
        raise layout.LayoutError(f"{path}: missing column(s) {missing}")
    df = df.assign(Metadata_Well=[layout.normalise_well_id(w, where=path) for w in df["Metadata_Well"]])
    feats = [c for c in df.columns if not c.startswith("Metadata_")]
    out = df.set_index(["Metadata_Plate", "Metadata_Well"])[feats].astype(np.float64)
    out.index = out.index.set_names(["plate", "well_id"])
    return out


def random_backbone_features(store, like, tiles_per_well: int = 16, seed: int = 0,
                             input_size: int | None = None) -> pd.DataFrame:
    """Well embeddings (mean over ``tiles_per_well`` random tiles) of ``like``'s architecture at
    random initialisation (torch seed ``seed``), indexed by (plate, well_id)."""
    import copy

    import torch

    from i2o_utils.model.data import sample_tile_indices
    from i2o_utils.model.finetune import well_embeddings_uncached

    model = copy.deepcopy(like)
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    model.eval()
    wells = store.wells.reset_index(drop=True)
    n_tiles = wells["n_tiles"].to_numpy()
    ok = np.flatnonzero(n_tiles > 0)
    local, _ = sample_tile_indices(n_tiles[ok], tiles_per_well, np.random.default_rng(seed))
    parts = []
    with torch.no_grad():
        for s in range(0, len(ok), 64):
            e = well_embeddings_uncached(model, store, ok[s:s + 64], local[s:s + 64], input_size=input_size)
            parts.append(e.double().cpu().numpy())
    emb = np.concatenate(parts) if parts else np.zeros((0, 0))
    idx = pd.MultiIndex.from_arrays([wells["plate"].astype(str).to_numpy()[ok],
                                     [layout.normalise_well_id(w) for w in wells["well_id"].to_numpy()[ok]]],
                                    names=["plate", "well_id"])
    return pd.DataFrame(emb, index=idx, columns=[f"emb_{i:03d}" for i in range(emb.shape[1])])


def _ridge_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, alphas) -> np.ndarray:
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    keep = np.nanstd(x_train, axis=0) > 0
    if not keep.any():
        return np.repeat(y_train.mean(axis=0, keepdims=True), len(x_test), axis=0)
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=list(alphas), alpha_per_target=len(alphas) > 1))
    model.fit(x_train[:, keep], y_train)
    return model.predict(x_test[:, keep])


def baseline_splits(name: str, features: pd.DataFrame, labels: dict, store_wells: pd.DataFrame,
                    split_table: pd.DataFrame, model_predictions: dict) -> dict:
    """Test-fold predictions of one baseline for every (omics, stimulus) and split of the model.

    Parameters
    ----------
    features
        Per-well inputs indexed by (plate, well_id); for ``cell_count`` only ``Cells_Count`` is used.
    labels
        ``{(omics, stimulus): (wide GT matrix, source)}`` (:func:`i2o_utils.model.finetune.load_labels`).
    split_table
        ``split, target, fold`` (:func:`i2o_utils.data.splits.load_split_table`).
    model_predictions
        The model's :class:`SplitPredictions` per (omics, stimulus) (their test wells are
        checked to be the baseline's).

    Returns
    -------
    dict
        ``{(omics, stimulus): [SplitPredictions, ...]}`` with the model's test wells, measured
        values and train-fold means, and the baseline's predictions.
    """
    from i2o_utils.model.finetune import align_labels

    cols = ["Cells_Count"] if name == "cell_count" else list(features.columns)
    alphas = (1e-6,) if name == "cell_count" else RIDGE_ALPHAS
    out = {}
    for key, model_splits in model_predictions.items():
        wide, source = labels[key]
        data = align_labels(store_wells, wide, *key, source=source)
        keys = pd.MultiIndex.from_arrays([data.wells["plate_barcode"].astype(str), data.wells["well_id"]])
        x = features.reindex(keys)[cols].to_numpy(np.float64)
        has_x = np.isfinite(x).all(axis=1)
        genes = pd.Index(data.genes.astype(str))
        parts = []
        for sp in model_splits:
            st = split_table[split_table["split"] == sp.split].set_index("target")["fold"]
            fold = data.wells["target"].map(st).fillna("unassigned").to_numpy()
            train = np.flatnonzero((fold == "train") & has_x)
            test_keys = pd.MultiIndex.from_arrays([sp.wells["plate_barcode"].astype(str),
                                                   [layout.normalise_well_id(w) for w in sp.wells["well_id"]]])
            pos = pd.Index(keys).get_indexer(test_keys)
            if (pos < 0).any():
                raise layout.LayoutError(f"{source}: test well(s) of split {sp.split} not among the labelled wells")
            gpos = genes.get_indexer(pd.Index(sp.genes.astype(str)))
            ytr = data.y[train][:, gpos]
            pred = np.full((len(pos), len(gpos)), np.nan)
            ok = has_x[pos]
            if len(train) > 2 and ok.any():
                pred[ok] = _ridge_predict(x[train], ytr, x[pos[ok]], alphas)
            parts.append(replace(sp, predicted=pred, path=None))
        out[key] = parts
    return out


def evaluate_baselines(inputs, baseline_predictions: dict, *, test: str, alpha: float, fdr: float,
                       n_jobs: int = 1) -> dict:
    """:func:`~i2o_utils.evaluation.pipeline.evaluate_screen` of every baseline: ``{name: result}``."""
    from i2o_utils.evaluation.pipeline import evaluate_screen

    out = {}
    for name, preds in baseline_predictions.items():
        b_inputs = replace(inputs, predictions=preds, notes=[], gt_reports=[])
        out[name] = evaluate_screen(b_inputs, test=test, alpha=alpha, fdr=fdr, n_jobs=n_jobs, progress=False)
    return out


def beyond_baselines(model_per_gene: pd.DataFrame, baseline_results: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Which genes the images predict beyond the baselines.

    Returns
    -------
    summary
        One row per (omics, stimulus): ``significant`` (model, BH), for each baseline the number
        BH-significant and the median OOS R² over the model's significant genes, and
        ``beyond_all`` (BH-significant for the model and for no baseline).
    per_gene
        ``omics, stimulus, gene, symbol, r2_oos`` (model), ``r2_oos_<baseline>``,
        ``significant_<baseline>``, ``beyond_all``, for the model's BH-significant genes.
    """
    key = ["omics", "stimulus", "gene"]
    m = model_per_gene[model_per_gene["significant_bh"]][key + ["symbol", "r2_oos"]].copy()
    any_base = np.zeros(len(m), dtype=bool)
    for name, res in baseline_results.items():
        b = res.per_gene[key + ["significant_bh", "r2_oos"]].rename(
            columns={"significant_bh": f"significant_{name}", "r2_oos": f"r2_oos_{name}"})
        m = m.merge(b, on=key, how="left")
        m[f"significant_{name}"] = m[f"significant_{name}"].fillna(False).astype(bool)
        any_base |= m[f"significant_{name}"].to_numpy()
    m["beyond_all"] = ~any_base
    rows = []
    for (o, s), g in model_per_gene.groupby(["omics", "stimulus"], sort=False):
        sig = m[(m["omics"] == o) & (m["stimulus"] == s)]
        row = {"omics": o, "stimulus": s, "significant (images)": int(len(sig)),
               "median OOS R² (images)": float(sig["r2_oos"].median()) if len(sig) else np.nan}
        for name, res in baseline_results.items():
            pg = res.per_gene
            row[f"significant ({name})"] = int(pg[(pg["omics"] == o) & (pg["stimulus"] == s)]["significant_bh"].sum())
            row[f"median OOS R² ({name})"] = float(sig[f"r2_oos_{name}"].median()) if len(sig) else np.nan
        row["beyond all baselines"] = int(sig["beyond_all"].sum())
        rows.append(row)
    return pd.DataFrame(rows), m.reset_index(drop=True)


class BaselineInputs:
    """What the baselines read: per-well inputs of each baseline, labels, tile-store wells, splits.

    ``notes`` says which baseline could not be built and why (e.g. no morphology features).
    """

    def __init__(self, features: dict, labels: dict, store_wells: pd.DataFrame, split_table: pd.DataFrame,
                 notes: list[str]):
        self.features, self.labels, self.store_wells = features, labels, store_wells
        self.split_table, self.notes = split_table, notes

    @classmethod
    def load(cls, keys, *, split_table: pd.DataFrame, random_tiles_per_well: int = 16, seed: int = 0,
             data_root=None) -> "BaselineInputs":
        """Read notebook 20's features and tile store, notebook 30's backbone (for its
        architecture), and the labels of the ``keys`` (omics, stimulus); ``split_table``: the one
        the evaluation read."""
        from i2o_utils.imaging.tilestore import TileStore
        from i2o_utils.model.finetune import load_labels
        from i2o_utils.model.train import CHECKPOINT_NAME, load_backbone
        from i2o_utils.paths import results_dir

        notes: list[str] = []
        features: dict[str, pd.DataFrame] = {}
        store = TileStore(results_dir("20_preprocess_images") / "tilestore")
        try:
            morph = read_well_features(results_dir("20_preprocess_images") / "features_wells.parquet")
            features["cell_count"] = morph[["Cells_Count"]]
            features["morphology"] = morph
        except layout.LayoutError as e:
            notes.append(f"cell count and morphology baselines skipped: {e}")
        ckpt = results_dir("30_pretrain_backbone") / CHECKPOINT_NAME
        if ckpt.exists():
            backbone, pcfg = load_backbone(ckpt)
            features["random_backbone"] = random_backbone_features(
                store, backbone, tiles_per_well=random_tiles_per_well, seed=seed,
                input_size=pcfg.get("input_size"))
        else:
            notes.append(f"random-backbone baseline skipped: no checkpoint {ckpt} to copy the architecture from")
        labels = {k: load_labels(*k, data_root) for k in keys}
        return cls(features, labels, store.wells, split_table, notes)

    def predictions(self, model_predictions: dict) -> dict:
        """``{baseline: {(omics, stimulus): [SplitPredictions]}}`` for every baseline available."""
        return {name: baseline_splits(name, feats, self.labels, self.store_wells, self.split_table,
                                      model_predictions) for name, feats in self.features.items()}
