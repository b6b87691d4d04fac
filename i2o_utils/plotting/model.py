"""Figures of notebooks 30 (pre-training) and 40 (fine-tuning)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from i2o_utils.config import OMICS, STIMULI

__all__ = ["pretrain_loss_figure", "embedding_distance_figure", "finetune_curves_figure",
           "planted_genes_figure"]


def pretrain_loss_figure(history: pd.DataFrame, margin: float | None = None) -> plt.Figure:
    """Triplet loss per step (and its running mean); the learning rate when it varies."""
    varying_lr = history["lr"].nunique() > 1
    if varying_lr:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [3, 1]})
    else:
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
    ax.plot(history["step"], history["loss"], lw=0.6, alpha=0.45, color="tab:blue", label="per step")
    w = max(1, len(history) // 20)
    ax.plot(history["step"], history["loss"].rolling(w, min_periods=1).mean(), lw=2, color="tab:blue",
            label=f"running mean ({w} steps)")
    if margin is not None:
        ax.axhline(margin, ls="--", color="grey", lw=1, label=f"margin = {margin:g} (collapsed embedding)")
    ax.set_xlabel("step")
    ax.set_ylabel("semi-hard triplet loss")
    lr = "" if varying_lr or history.empty else f" (learning rate {history['lr'].iloc[0]:.2g})"
    ax.set_title("Multiple-instance triplet loss" + lr)
    ax.legend(frameon=False, fontsize=8)
    if varying_lr:
        ax2.plot(history["step"], history["lr"], color="tab:orange")
        ax2.set_xlabel("step")
        ax2.set_ylabel("learning rate")
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    fig.tight_layout()
    return fig


def _pair_distances(emb: np.ndarray, wells: pd.DataFrame, normalize: bool):
    e = np.asarray(emb, np.float64)
    if normalize:
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    group = (wells["target"].astype(str) + "|" + wells["cell_state"].astype(str)).to_numpy()
    stim = wells["cell_state"].astype(str).to_numpy()
    d = np.sqrt(np.maximum(((e[:, None] - e[None]) ** 2).sum(-1), 0))
    iu = np.triu_indices(len(e), 1)
    same_g = (group[:, None] == group[None])[iu]
    same_s = (stim[:, None] == stim[None])[iu]
    return d[iu][same_g], d[iu][same_s & ~same_g]


def embedding_distance_figure(embeddings: dict[str, np.ndarray], wells: pd.DataFrame,
                              table: pd.DataFrame, normalize: bool = True) -> plt.Figure:
    """Distances between wells of the same perturbation vs different perturbations (same stimulus).

    One histogram pair per backbone (pre-trained, random init), and the other-plate 1-NN
    accuracy of the perturbation against its chance level.
    """
    n = len(embeddings)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.0 * (n + 1), 3.3))
    for ax, (name, e) in zip(axes, embeddings.items()):
        within, between = _pair_distances(e, wells.reset_index(drop=True), normalize)
        bins = np.linspace(0, max(within.max(initial=0), between.max(initial=0)) * 1.02 + 1e-9, 40)
        ax.hist(between, bins=bins, density=True, alpha=0.55, color="tab:grey", label="different perturbation")
        ax.hist(within, bins=bins, density=True, alpha=0.65, color="tab:red", label="same perturbation")
        r = table.set_index("backbone").loc[name]
        ax.set_title(f"{name}: within/between = {r['ratio']:.2f}", fontsize=10)
        ax.set_xlabel("distance between well embeddings")
        ax.legend(frameon=False, fontsize=8)
    ax = axes[-1]
    x = np.arange(len(table))
    ax.bar(x, table["knn_accuracy"], color="tab:blue", label="1-NN accuracy (other plates)")
    ax.scatter(x, table["knn_chance"], color="black", marker="_", s=600, lw=2, label="chance", zorder=3)
    ax.set_xticks(x, table["backbone"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("perturbation identified")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def finetune_curves_figure(curves: pd.DataFrame) -> plt.Figure:
    """Validation loss per epoch of every head vs the mean predictor's validation loss.

    One panel per (omics, stimulus), one line per split (solid: head; dashed: mean predictor,
    the train-fold mean; on z-scores the mean predictor's loss is the mean squared z of the
    validation wells). A head below its dashed line predicts better than the mean predictor.
    """
    fig, axes = plt.subplots(len(OMICS), len(STIMULI), figsize=(10, 6.4), squeeze=False, sharex=True)
    for i, omics in enumerate(OMICS):
        for j, stim in enumerate(STIMULI):
            ax = axes[i, j]
            sub = curves[(curves["omics"] == omics) & (curves["stimulus"] == stim)]
            splits = sorted(sub["split"].unique())
            cmap = plt.get_cmap("tab10")
            for k in splits:
                c = sub[sub["split"] == k]
                ax.plot(c["epoch"], c["val_loss"], color=cmap(k % 10), lw=1.3, label=f"split {k}" if i == j == 0 else None)
                ax.axhline(c["val_loss_mean_predictor"].iloc[0], color=cmap(k % 10), lw=0.8, ls="--")
            ax.set_title(f"{omics}, {stim.upper()}", fontsize=10)
            ax.set_ylabel("validation MSE (z-scores)")
            if i == len(OMICS) - 1:
                ax.set_xlabel("epoch")
    if len(curves):
        fig.legend(loc="center right", frameon=False, fontsize=8, title="solid: head\ndashed: mean predictor")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig


def planted_genes_figure(per_gene: pd.DataFrame, truth: pd.DataFrame) -> plt.Figure:
    """Validation MSE of the head relative to the mean predictor's, by the simulator's gene kind.

    ``per_gene``: omics, stimulus, split, gene, val_mse, val_mse_mean_predictor;
    ``truth``: omics, gene, kind. Ratios below 1 (the line) mean the head beats the mean predictor.
    """
    df = per_gene.merge(truth[["omics", "gene", "kind"]], on=["omics", "gene"], how="left")
    df["kind"] = df["kind"].fillna("unknown")
    df["ratio"] = df["val_mse"] / df["val_mse_mean_predictor"]
    g = df.groupby(["omics", "stimulus", "gene", "kind"], as_index=False)["ratio"].median()
    kinds = [k for k in ("visible", "hidden", "noise", "low", "unknown") if k in set(g["kind"])]
    fig, axes = plt.subplots(1, len(OMICS) * len(STIMULI), figsize=(12, 3.4), sharey=True, squeeze=False)
    for ax, (omics, stim) in zip(axes[0], [(o, s) for o in OMICS for s in STIMULI]):
        sub = g[(g["omics"] == omics) & (g["stimulus"] == stim)]
        data = [sub.loc[sub["kind"] == k, "ratio"].to_numpy() for k in kinds]
        keep = [i for i, d in enumerate(data) if len(d)]
        if keep:
            ax.boxplot([data[i] for i in keep], showfliers=False)
            ax.set_xticks(range(1, len(keep) + 1), [f"{kinds[i]}\n(n={len(data[i])})" for i in keep], fontsize=8)
        ax.axhline(1.0, color="grey", ls="--", lw=1)
        ax.set_title(f"{omics}, {stim.upper()}", fontsize=9)
    axes[0, 0].set_ylabel("val MSE / mean predictor's\n(median over splits)")
    fig.tight_layout()
    return fig
