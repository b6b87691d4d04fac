"""Figures of the omics preprocessing: the paper's Fig 9 and vsn's mean-sd plot."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from i2o_utils.config import CONTROL, OMICS, STIMULI
from i2o_utils.omics.qc import control_pca, plate_r2
from i2o_utils.omics.vsn import mean_sd_trend

PLATE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
"""Blue and orange first, as in the paper's Fig 9."""


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_fig9(sets, control: str = CONTROL, layers: tuple[str, str] = ("normalised", "corrected"),
              figsize: tuple[float, float] = (15, 7)) -> plt.Figure:
    """Fig 9: PCA of the control wells, coloured by omics plate, before and after batch correction.

    Rows: transcriptomics, proteomics; columns: M1 before, M1 after, M2 before, M2 after. Each
    panel's title gives the share of the two components' variance explained by the plate.

    Parameters
    ----------
    sets
        :class:`~i2o_utils.omics.pipeline.OmicsSets` (or a dict ``(omics, stimulus) -> AnnData``).
    control
        Target name of the control wells.
    layers
        Layer before and after batch correction.
    """
    data = sets.data if hasattr(sets, "data") else sets
    fig, axes = plt.subplots(len(OMICS), 2 * len(STIMULI), figsize=figsize, squeeze=False)
    for r, o in enumerate(OMICS):
        for c, s in enumerate(STIMULI):
            a = data.get((o, s))
            for k, layer in enumerate(layers):
                ax = axes[r, 2 * c + k]
                when = "before" if k == 0 else "after"
                title = f"{o} {s.upper()}: {when} correction"
                if a is None:
                    ax.set_title(title, fontsize=9)
                    _empty(ax, "no data")
                    continue
                scores, explained = control_pca(a, layer, control)
                if len(scores) < 3 or scores["PC1"].isna().all():
                    ax.set_title(title, fontsize=9)
                    _empty(ax, f"{len(scores)} control wells: too few for a PCA")
                    continue
                plates = scores["plate_barcode"].to_numpy()
                for i, p in enumerate(sorted(set(plates))):
                    m = plates == p
                    ax.scatter(scores["PC1"][m], scores["PC2"][m], s=14, alpha=0.8,
                               color=PLATE_COLOURS[i % len(PLATE_COLOURS)], label=p, edgecolors="none")
                r2 = plate_r2(scores[["PC1", "PC2"]].to_numpy(), plates)
                ax.set_title(f"{title}\nplate R\u00b2 (PC1-2) = {r2:.2f}", fontsize=9)
                ax.set_xlabel(f"PC1 ({explained[0]:.0%})", fontsize=8)
                ax.set_ylabel(f"PC2 ({explained[1]:.0%})", fontsize=8)
                ax.tick_params(labelsize=7)
                if k == 0:
                    ax.legend(fontsize=7, title="omics plate", title_fontsize=7, loc="best", frameon=False)
    fig.suptitle(f"Control ({control}) wells per omics plate, before and after batch correction", fontsize=11)
    fig.tight_layout()
    return fig


def plot_mean_sd(sets, omics: str = "proteomics", window: float = 0.1,
                 figsize: tuple[float, float] = (13, 7)) -> plt.Figure:
    """vsn's mean-sd plot: per-protein sd against the rank of its mean, with the running median.

    Rows: stimuli; columns: raw intensities, ``log2`` intensities, vsn (glog2). Zero intensities
    count as missing. A flat running median means the variance no longer depends on the mean.
    """
    data = sets.data if hasattr(sets, "data") else sets
    fig, axes = plt.subplots(len(STIMULI), 3, figsize=figsize, squeeze=False)
    for r, s in enumerate(STIMULI):
        a = data.get((omics, s))
        raw = None if a is None else np.asarray(a.layers["raw"], dtype=float)
        raw = None if raw is None else np.where(raw > 0, raw, np.nan)
        panels = [("raw intensity", raw), ("log2 intensity", None if raw is None else np.log2(raw)),
                  ("vsn (glog2)", None if a is None else np.asarray(a.layers["normalised"], float))]
        for c, (name, x) in enumerate(panels):
            ax = axes[r, c]
            ax.set_title(f"{omics} {s.upper()}: {name}", fontsize=9)
            if x is None:
                _empty(ax, "no data")
                continue
            df = mean_sd_trend(x, window)
            ax.scatter(df["rank"], df["sd"], s=3, alpha=0.35, color="0.3", edgecolors="none")
            ax.plot(df["rank"], df["sd_trend"], color="red", lw=1.5, label="running median")
            ax.set_xlabel("rank of mean", fontsize=8)
            ax.set_ylabel("sd over wells", fontsize=8)
            ax.tick_params(labelsize=7)
            top = np.nanquantile(df["sd"], 0.99)
            if np.isfinite(top) and top > 0:
                ax.set_ylim(0, top * 1.1)
            if c == 0:
                ax.legend(fontsize=7, frameon=False)
    fig.suptitle("Mean-sd relationship of the protein intensities (proteins kept by the filter)", fontsize=11)
    fig.tight_layout()
    return fig
