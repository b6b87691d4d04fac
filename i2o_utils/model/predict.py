"""Inference and the fine-tuning run of notebook 40 (paper: "Inference", "Data splitting").

For every well, N tiles are drawn at random (``InferenceConfig.tiles_per_well``, paper 512) for
each of several seeds (paper 3), the well embedding is the mean of the per-tile embeddings, and
the prediction of a head is averaged over the seeds. The heads are linear, so the mean of the
per-seed predictions equals the head applied to the mean of the per-seed embeddings, which is
what is computed (:func:`inference_embeddings`). Predictions are de-standardised with the train
fold's per-gene mean and standard deviation.

:func:`finetune_and_predict` runs everything for notebook 40: embedding cache, inference
embeddings, 4 (omics, stimulus) x ``n_splits`` heads on notebook 10's splits
(:func:`i2o_utils.data.splits.load_split_table`), and the results contract:

* ``predictions/{omics}_{stimulus}_split{k:02d}.h5ad``: obs = val and test wells
  (plate_barcode, well_id, target, fold), layers ``measured`` and ``predicted`` (label scale),
  var = genes with ``train_mean`` and ``train_std``;
* ``embeddings/well_embeddings.parquet``: ``Metadata_*`` columns + ``emb_000`` ...;
* ``runs.csv`` (one row per head), ``curves.parquet`` (per-epoch losses),
  ``val_per_gene.parquet`` (validation MSE per gene, model and mean predictor), ``heads.pt``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from i2o_utils.config import OMICS, STIMULI, Profile
from i2o_utils.data import layout
from i2o_utils.data.splits import folds_of, load_split_table
from i2o_utils.model.data import Runtime, prepare_tiles, resolve_runtime, sample_tile_indices, to_device
from i2o_utils.model.finetune import (HeadData, LabelError, TileEmbeddings, align_labels, cache_tile_embeddings,
                                      load_labels, standardise, train_head)

log = logging.getLogger(__name__)

__all__ = [
    "inference_embeddings", "embedding_separation", "write_predictions", "write_well_embeddings",
    "FinetuneRun", "finetune_and_predict", "prediction_path", "embed_wells", "embedding_sanity_check",
    "runs_summary", "planted_gene_summary",
]


def inference_embeddings(cache: TileEmbeddings, n: int, seeds: tuple[int, ...] | list[int],
                         well_idx: np.ndarray | None = None, chunk_elems: int = 1 << 24) -> np.ndarray:
    """Well embeddings averaged over ``len(seeds)`` draws of ``n`` tiles: (W, D) float32.

    Wells without tiles get NaN rows. Wells with fewer than ``n`` tiles are sampled with
    replacement (logged once).
    """
    n_tiles = cache.n_tiles
    well_idx = np.arange(len(n_tiles)) if well_idx is None else np.asarray(well_idx)
    out = np.full((len(well_idx), cache.dim), np.nan, dtype=np.float32)
    ok = np.flatnonzero(n_tiles[well_idx] > 0)
    if len(ok) < len(well_idx):
        log.warning("%d well(s) have no tiles: no embedding", len(well_idx) - len(ok))
    short = int((n_tiles[well_idx[ok]] < n).sum())
    if short:
        log.info("%d of %d wells have fewer than N=%d tiles: sampled with replacement", short, len(ok), n)
    step = max(1, chunk_elems // max(1, n * cache.dim))
    acc = torch.zeros((len(ok), cache.dim), dtype=torch.float64, device=cache.embeddings.device)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        local, _ = sample_tile_indices(n_tiles[well_idx[ok]], n, rng)
        for s in range(0, len(ok), step):
            e = cache.gather(well_idx[ok[s:s + step]], local[s:s + step]).mean(dim=1)
            acc[s:s + step] += e.double()
    out[ok] = (acc / len(seeds)).float().cpu().numpy()
    return out


def embedding_separation(emb: np.ndarray, wells: pd.DataFrame, normalize: bool = True) -> dict:
    """Are wells of the same perturbation closer than others? Measured on well embeddings.

    Groups are (target, cell_state); comparisons are within a stimulus. Returns

    * ``within``: mean distance between wells of the same group;
    * ``between``: mean distance between wells of different groups (same stimulus);
    * ``ratio``: within / between (< 1: same-perturbation wells are closer);
    * ``knn_accuracy``: leave-one-out 1-nearest-neighbour accuracy of the group, the neighbour
      searched among the wells of the same stimulus **on other plates** (so a shared plate or
      position cannot explain it), and ``knn_chance``: its expectation under random labels;
    * ``n_wells``, ``n_groups``.

    Parameters
    ----------
    emb
        (W, D) well embeddings (rows with NaN are ignored).
    wells
        plate, target, cell_state per row.
    normalize
        L2-normalise first (the geometry of the triplet loss).
    """
    e = np.asarray(emb, dtype=np.float64)
    keep = np.isfinite(e).all(axis=1)
    e, w = e[keep], wells.reset_index(drop=True)[keep]
    if normalize:
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    group = (w["target"].astype(str) + "|" + w["cell_state"].astype(str)).to_numpy()
    stim = w["cell_state"].astype(str).to_numpy()
    plate = w["plate"].astype(str).to_numpy()
    d = np.sqrt(np.maximum(((e[:, None, :] - e[None, :, :]) ** 2).sum(-1), 0))
    same_stim = stim[:, None] == stim[None, :]
    same_group = group[:, None] == group[None, :]
    off = ~np.eye(len(e), dtype=bool)
    within = d[same_group & off]
    between = d[same_stim & ~same_group]
    cand = same_stim & (plate[:, None] != plate[None, :])
    hits, chance, counted = 0, 0.0, 0
    dd = np.where(cand, d, np.inf)
    nn = dd.argmin(axis=1)
    for i in range(len(e)):
        c = cand[i]
        if not c.any() or not (c & same_group[i]).any():
            continue
        counted += 1
        hits += int(same_group[i, nn[i]])
        chance += (c & same_group[i]).sum() / c.sum()
    return {
        "within": float(within.mean()) if within.size else float("nan"),
        "between": float(between.mean()) if between.size else float("nan"),
        "ratio": float(within.mean() / between.mean()) if within.size and between.size else float("nan"),
        "knn_accuracy": hits / counted if counted else float("nan"),
        "knn_chance": chance / counted if counted else float("nan"),
        "n_wells": int(len(e)),
        "n_groups": int(len(np.unique(group))),
    }


def prediction_path(out_dir: str | Path, omics: str, stimulus: str, split: int, ext: str = "h5ad") -> Path:
    return Path(out_dir) / "predictions" / f"{omics}_{stimulus}_split{int(split):02d}.{ext}"


def write_predictions(out_dir: str | Path, omics: str, stimulus: str, split: int, obs: pd.DataFrame,
                      genes: pd.Index, measured: np.ndarray, predicted: np.ndarray,
                      train_mean: np.ndarray, train_std: np.ndarray) -> list[Path]:
    """Write one head's val + test predictions (h5ad)."""
    obs = obs[["plate_barcode", "well_id", "target", "fold"]].reset_index(drop=True).astype(str)
    obs.index = pd.Index(obs["plate_barcode"] + ":" + obs["well_id"], name="well")
    var = pd.DataFrame({"train_mean": np.asarray(train_mean, np.float64),
                        "train_std": np.asarray(train_std, np.float64)}, index=pd.Index(genes.astype(str), name="gene"))
    a = ad.AnnData(obs=obs, var=var, layers={"measured": np.asarray(measured, np.float32),
                                             "predicted": np.asarray(predicted, np.float32)})
    a.uns["omics"], a.uns["stimulus"], a.uns["split"] = omics, stimulus, int(split)
    path = prediction_path(out_dir, omics, stimulus, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    with layout.atomic_path(path) as tmp:
        a.write_h5ad(tmp)
    return [path]


def write_well_embeddings(path: str | Path, wells: pd.DataFrame, emb: np.ndarray) -> Path:
    """``Metadata_plate, Metadata_well_id, Metadata_target, Metadata_cell_state, Metadata_n_tiles``
    and ``emb_000 ...`` (one row per well of the tile store)."""
    w = wells.reset_index(drop=True)
    df = pd.DataFrame({f"Metadata_{c}": w[c].to_numpy() for c in ("plate", "well_id", "target", "cell_state", "n_tiles")})
    feats = pd.DataFrame(np.asarray(emb, np.float32), columns=[f"emb_{i:03d}" for i in range(emb.shape[1])])
    df = pd.concat([df, feats], axis=1)
    path = Path(path)
    with layout.atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


@dataclass
class FinetuneRun:
    """What :func:`finetune_and_predict` returns (everything is also on disk)."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    val_per_gene: pd.DataFrame
    well_embeddings: np.ndarray
    written: list[Path] = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def finetune_and_predict(store, model, profile: Profile, out_dir: str | Path, *,
                         labels: dict[tuple[str, str], tuple[pd.DataFrame, str]] | None = None,
                         split_table: pd.DataFrame | None = None,
                         data_root: str | Path | None = None, input_size: int | None = None,
                         runtime: Runtime | None = None, device: str = "auto",
                         threads: int | None = None, progress: bool = True) -> FinetuneRun:
    """Fine-tune every (omics, stimulus, split) head on the frozen backbone and write predictions.

    Parameters
    ----------
    store
        The tile store.
    model
        The pre-trained backbone (frozen: used in eval mode, under no_grad).
    profile
        Supplies ``finetune``, ``inference`` and ``evaluation`` (n_splits).
    out_dir
        ``results/40_finetune_omics``.
    labels
        ``{(omics, stimulus): (wide table, source name)}``; default: read ``data/GT`` under
        ``data_root`` (:func:`~i2o_utils.model.finetune.load_labels`).
    split_table
        ``split, target, fold``; default: notebook 10's, checked against the GT tables
        (:func:`i2o_utils.data.splits.load_split_table`).
    input_size
        The pre-training's tile resize (from the checkpoint's configuration).
    threads
        torch CPU threads (``None``: torch's default); the heads always train on one.
    """
    from i2o_utils import cache as inputs_cache

    out_dir = Path(out_dir)
    inputs_cache.clear_record(out_dir)  # written again once every prediction is
    ft, inf, ev = profile.finetune, profile.inference, profile.evaluation
    rt = runtime or resolve_runtime(device, threads=threads)
    if split_table is None:  # before the embeddings: a missing or wrong table fails fast
        split_table = load_split_table(ev.n_splits, data_root=data_root)
    for p in model.parameters():
        p.requires_grad_(False)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cache = cache_tile_embeddings(model, store, rt, batch_tiles=ft.embed_batch_tiles,
                                  input_size=input_size, progress=progress)
    timings["cache_tile_embeddings_s"] = time.perf_counter() - t0
    timings["n_tiles"] = int(cache.offsets[-1])
    t0 = time.perf_counter()
    emb = inference_embeddings(cache, inf.tiles_per_well, inf.seeds)
    timings["inference_embeddings_s"] = time.perf_counter() - t0
    written = [write_well_embeddings(out_dir / "embeddings" / "well_embeddings.parquet", store.wells, emb)]
    emb_t = torch.from_numpy(emb).to(cache.embeddings.device)

    if labels is None:
        labels = {(o, s): load_labels(o, s, data_root) for o in OMICS for s in STIMULI}
    runs, curves, per_gene, heads = [], [], [], {}
    t0 = time.perf_counter()
    bar = tqdm(total=len(labels) * ev.n_splits, desc="fine-tuning heads", disable=not progress)
    for (omics, stim), (wide, source) in labels.items():
        data: HeadData = align_labels(store.wells, wide, omics, stim, source=source)
        for k in range(ev.n_splits):
            fold = folds_of(split_table, k, data.wells["target"], source)
            idx = {f: np.flatnonzero(fold == f) for f in ("train", "val", "test")}
            empty = [f for f, i in idx.items() if len(i) == 0]
            if empty:
                raise LabelError(f"{source}: split {k} leaves no labelled well in fold(s) {empty}")
            mean, std = standardise(data.y[idx["train"]])
            z = (data.y - mean) / std
            wi = data.wells["well_index"].to_numpy()
            head = train_head(cache, wi[idx["train"]], z[idx["train"]], emb_t[wi[idx["val"]]],
                              z[idx["val"]], ft, seed=ft.seed + k)
            vt = np.concatenate([idx["val"], idx["test"]])
            pred = head.predict_z(emb[wi[vt]]) * std + mean
            obs = data.wells.iloc[vt].assign(fold=fold[vt])
            written += write_predictions(out_dir, omics, stim, k, obs, data.genes, data.y[vt], pred, mean, std)
            heads[f"{omics}_{stim}_split{k:02d}"] = {
                "weight": torch.from_numpy(head.weight.astype(np.float32)),
                "bias": torch.from_numpy(head.bias.astype(np.float32)),
                "train_mean": torch.from_numpy(mean), "train_std": torch.from_numpy(std),
                "genes": list(map(str, data.genes)),
            }
            h = head.history
            best = h.loc[h["epoch"] == head.best_epoch].iloc[0]
            runs.append({"omics": omics, "stimulus": stim, "split": k, "n_genes": len(data.genes),
                         "n_train": len(idx["train"]), "n_val": len(idx["val"]), "n_test": len(idx["test"]),
                         "epochs": len(h), "best_epoch": head.best_epoch,
                         "val_mse": float(best["val_loss"]),
                         "val_mse_mean_predictor": float(best["val_loss_mean_predictor"]),
                         "seconds": head.seconds})
            curves.append(h.assign(omics=omics, stimulus=stim, split=k))
            per_gene.append(pd.DataFrame({"omics": omics, "stimulus": stim, "split": k,
                                          "gene": data.genes.astype(str),
                                          "val_mse": head.val_mse_per_gene,
                                          "val_mse_mean_predictor": head.val_mse_per_gene_mean_predictor}))
            bar.update(1)
    bar.close()
    timings["heads_s"] = time.perf_counter() - t0
    if hasattr(store, "content_key"):
        written.append(inputs_cache.write_record(out_dir, store=store.content_key()))
    runs_df = pd.DataFrame(runs)
    curves_df = pd.concat(curves, ignore_index=True)[["omics", "stimulus", "split", "epoch", "train_loss",
                                                      "val_loss", "val_loss_mean_predictor"]]
    per_gene_df = pd.concat(per_gene, ignore_index=True)
    written.append(layout.write_csv_atomic(runs_df, out_dir / "runs.csv"))
    for name, df in (("curves.parquet", curves_df), ("val_per_gene.parquet", per_gene_df)):
        with layout.atomic_path(out_dir / name) as tmp:
            df.to_parquet(tmp, index=False)
        written.append(out_dir / name)
    with layout.atomic_path(out_dir / "heads.pt") as tmp:
        torch.save({"heads": heads, "input_size": input_size}, tmp)
    written.append(out_dir / "heads.pt")
    return FinetuneRun(runs=runs_df, curves=curves_df, val_per_gene=per_gene_df, well_embeddings=emb,
                       written=written, timings=timings)


@torch.inference_mode()
def embed_wells(model, store, n: int, seed: int = 0, runtime: Runtime | None = None,
                input_size: int | None = None, batch_tiles: int = 4096,
                well_idx: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
    """Well embeddings from ``n`` random tiles per well (``store.sample``), backbone in eval mode.

    The direct path (no cache): reads only the sampled tiles, for a quick look at many wells.
    """
    rt = runtime or resolve_runtime("auto")
    model = model.to(rt.device).eval()
    well_idx = np.arange(len(store.wells)) if well_idx is None else np.asarray(well_idx)
    rng = np.random.default_rng(seed)
    out = np.empty((len(well_idx), model.embedding_dim), np.float32)
    step = max(1, batch_tiles // max(n, 1))
    for s in tqdm(range(0, len(well_idx), step), desc="embedding wells", disable=not progress):
        sel = well_idx[s:s + step]
        tiles = store.sample(sel, n, rng)
        x = prepare_tiles(to_device(tiles, rt), store.to_float, rt, input_size=input_size)
        with rt.autocast():
            e = model.embed_tiles(x).float()
        out[s:s + len(sel)] = e.view(len(sel), n, -1).mean(dim=1).cpu().numpy()
    return out


def embedding_sanity_check(store, model, cfg, runtime: Runtime | None = None, seed: int = 0,
                           progress: bool = False) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Same-perturbation wells closer than others? Pre-trained backbone vs a randomly initialised one.

    Both backbones embed every well from ``cfg.eval_tiles_per_well`` random tiles (the same
    tiles); :func:`embedding_separation` measures each (L2-normalised, as in the triplet loss
    when ``cfg.normalize_embeddings``). The random backbone has the same architecture and
    shows how much structure the images give before any training.

    Returns
    -------
    (table, embeddings)
        One row per backbone (``pretrained``, ``random init``) with the measures, and the
        well embeddings of each.
    """
    from i2o_utils.model.train import build_backbone

    rt = runtime or resolve_runtime("auto")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 12345)
        random_model = build_backbone(cfg)
    embs, rows = {}, []
    for name, m in (("pretrained", model), ("random init", random_model)):
        e = embed_wells(m, store, cfg.eval_tiles_per_well, seed=seed, runtime=rt,
                        input_size=cfg.input_size, progress=progress)
        embs[name] = e
        rows.append({"backbone": name, **embedding_separation(e, store.wells, normalize=cfg.normalize_embeddings)})
    return pd.DataFrame(rows), embs


def runs_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (omics, stimulus): heads, mean epochs, mean validation MSE of the heads and of the mean
    predictor, and how many heads beat the mean predictor on validation."""
    r = runs.assign(beats=runs["val_mse"] < runs["val_mse_mean_predictor"])
    return r.groupby(["omics", "stimulus"], as_index=False).agg(
        heads=("split", "size"), genes=("n_genes", "first"), mean_epochs=("epochs", "mean"),
        val_mse=("val_mse", "mean"), val_mse_mean_predictor=("val_mse_mean_predictor", "mean"),
        heads_beating_mean_predictor=("beats", "sum"))


def planted_gene_summary(per_gene: pd.DataFrame, truth: pd.DataFrame | None) -> pd.DataFrame | None:
    """Validation loss vs the mean predictor's, by the simulator's gene kind.

    Per (omics, stimulus, kind): genes, the median over genes of the (median over splits) ratio
    val MSE / mean predictor's val MSE, and the fraction of genes whose median ratio is below 1.
    ``visible`` genes are the ones the images can predict; ``hidden`` and ``noise`` genes should
    stay at a ratio of about 1 or above. Returns None without a truth table (real data).
    """
    if truth is None:
        return None
    df = per_gene.merge(truth[["omics", "gene", "kind"]], on=["omics", "gene"], how="left")
    df["kind"] = df["kind"].fillna("unknown")
    df["ratio"] = df["val_mse"] / df["val_mse_mean_predictor"]
    g = df.groupby(["omics", "stimulus", "kind", "gene"], as_index=False)["ratio"].median()
    return g.groupby(["omics", "stimulus", "kind"], as_index=False).agg(
        genes=("gene", "size"), median_ratio=("ratio", "median"),
        fraction_below_mean_predictor=("ratio", lambda r: float((r < 1).mean())))
