"""Figures of notebooks 70 and 80: the paper's Fig 6 (attributions) and Fig 7 (embedding UMAP).

Every function takes saved results (tables and arrays written by the notebooks) and returns a
matplotlib Figure; none needs the model.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from i2o_utils.config import CHANNEL_SHORT
from i2o_utils.plotting.common import CHANNEL_COLOURS, composite

__all__ = ["tile_mosaic", "fig7_umap", "coral_plates_figure", "retrieval_figure",
           "fig6_attribution", "channel_share_figure"]

HIGHLIGHT = {"NT": "#1f77b4", "STAT1": "#d62728", "STAT6": "#2ca02c"}
CALLOUT_COLOURS = ["#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
STIM_MARKER = {"m1": "o", "m2": "^"}


def tile_mosaic(tiles: np.ndarray, ncol: int = 3) -> np.ndarray:
    """(n, 3, s, s) tiles -> one RGB image (rows of ``ncol`` composites, 1-pixel white gaps)."""
    tiles = np.asarray(tiles)
    n, _, s, _ = tiles.shape
    nrow = int(np.ceil(n / ncol))
    out = np.ones((nrow * (s + 1) - 1, ncol * (s + 1) - 1, 3), np.float32)
    for k in range(n):
        r, c = divmod(k, ncol)
        out[r * (s + 1):r * (s + 1) + s, c * (s + 1):c * (s + 1) + s] = composite(tiles[k])
    return out


def _scatter_groups(ax, coords: pd.DataFrame, callouts: Sequence[str], size: float = 10):
    rest = ~coords["target"].isin(list(HIGHLIGHT) + list(callouts))
    ax.scatter(coords.loc[rest, "umap_1"], coords.loc[rest, "umap_2"], s=size, c="#c7c7c7", lw=0,
               label="other knock-outs")
    colours = {**{t: CALLOUT_COLOURS[i % len(CALLOUT_COLOURS)] for i, t in enumerate(callouts)}, **HIGHLIGHT}
    for t, col in colours.items():
        for stim, mk in STIM_MARKER.items():
            g = coords[(coords["target"] == t) & (coords["cell_state"].astype(str) == stim)]
            if len(g):
                ax.scatter(g["umap_1"], g["umap_2"], s=size * 2.2, c=col, marker=mk, lw=0.3, edgecolor="k",
                           label=f"{t} ({stim.upper()})")
    return colours


def fig7_umap(coords: pd.DataFrame, insets: Mapping[str, np.ndarray] | None = None,
              callouts: Sequence[str] = (), title: str = "") -> plt.Figure:
    """Fig 7: UMAP of the well embeddings; NT / STAT1 / STAT6 highlighted (circles M1, triangles M2),
    the most distinct knock-outs called out at their centroid, and insets of 9 tiles per reference.

    Parameters
    ----------
    coords
        One row per well: umap_1, umap_2, target, cell_state.
    insets
        {label: (9, 3, s, s) tiles in [0, 1]}, e.g. ``{"NT (M1)": ..., "STAT1 (M1)": ...}``.
    callouts
        Targets to colour and label.
    """
    insets = dict(insets or {})
    fig = plt.figure(figsize=(11, 7.2))
    ax = fig.add_axes([0.06, 0.08, 0.62, 0.84])
    colours = _scatter_groups(ax, coords, callouts, size=12)
    for t in callouts:
        g = coords[coords["target"] == t]
        if len(g):
            ax.annotate(t, (g["umap_1"].median(), g["umap_2"].median()), xytext=(8, 8),
                        textcoords="offset points", fontsize=9, color=colours[t], weight="bold",
                        arrowprops=dict(arrowstyle="-", color=colours[t], lw=0.8))
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title or "Well embeddings (UMAP)")
    ax.legend(frameon=False, fontsize=7, loc="best", ncol=2, markerscale=1.2)
    n = max(len(insets), 1)
    for k, (label, tiles) in enumerate(insets.items()):
        h = min(0.28, 0.9 / n)
        iax = fig.add_axes([0.71, 0.92 - (k + 1) * h - k * 0.01, 0.27, h])
        iax.imshow(tile_mosaic(tiles))
        iax.set_xticks([])
        iax.set_yticks([])
        base = label.split(" ")[0]
        iax.set_title(label, fontsize=8, color=HIGHLIGHT.get(base, "k"))
        for sp in iax.spines.values():
            sp.set_edgecolor(HIGHLIGHT.get(base, "k"))
            sp.set_linewidth(2)
    return fig


def coral_plates_figure(before: pd.DataFrame, after: pd.DataFrame) -> plt.Figure:
    """UMAP before and after CORAL, wells coloured by imaging plate (markers by stimulus)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    plates = sorted(set(before["plate"].astype(str)))
    cmap = plt.get_cmap("tab10" if len(plates) <= 10 else "tab20")
    for ax, df, name in ((axes[0], before, "before CORAL"), (axes[1], after, "after CORAL")):
        for i, p in enumerate(plates):
            for stim, mk in STIM_MARKER.items():
                g = df[(df["plate"].astype(str) == p) & (df["cell_state"].astype(str) == stim)]
                if len(g):
                    ax.scatter(g["umap_1"], g["umap_2"], s=9, marker=mk, color=cmap(i % cmap.N), lw=0,
                               label=p if stim == g["cell_state"].iloc[0] else None)
        ax.set_title(f"Wells by imaging plate, {name}")
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    fig.legend(seen.values(), seen.keys(), frameon=False, fontsize=7, loc="center right", title="plate")
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    return fig


def retrieval_figure(maps: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """mAP per perturbation against -log10 p (BH-corrected), one panel per embedding."""
    fig, axes = plt.subplots(1, len(maps), figsize=(4.6 * len(maps), 3.8), squeeze=False, sharey=True)
    for ax, (name, t) in zip(axes[0], maps.items()):
        sig = t["below_corrected_p"].astype(bool)
        y = -np.log10(t["corrected_p_value"].clip(lower=1e-12))
        ax.scatter(t.loc[~sig, "mean_average_precision"], y[~sig], s=14, c="#9e9e9e", lw=0, label="not retrieved")
        ax.scatter(t.loc[sig, "mean_average_precision"], y[sig], s=14, c="#6a3d9a", lw=0,
                   label="retrieved better than chance")
        ax.axhline(-np.log10(0.05), ls="--", lw=0.8, color="k")
        ax.set_title(f"{name}: {int(sig.sum())}/{len(t)} retrieved, mean mAP {t['mean_average_precision'].mean():.2f}",
                     fontsize=9)
        ax.set_xlabel("mAP (perturbation vs NT wells)")
    axes[0][0].set_ylabel("-log10 corrected p")
    axes[0][0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def fig6_attribution(scatter: pd.DataFrame, tiles: np.ndarray, attributions: np.ndarray,
                     genes: Sequence[str], titles: Sequence[str] | None = None) -> plt.Figure:
    """Fig 6: per gene (row) measured vs predicted on the test fold, sample tiles and their
    SmoothGrad maps (absolute attribution summed over channels, each map scaled to its maximum).

    Parameters
    ----------
    scatter
        gene, measured, predicted (test wells, all splits pooled or one split).
    tiles
        (G, T, 3, s, s) tiles in [0, 1], T tiles per gene.
    attributions
        (G, T, 3, s, s) attributions of the same tiles.
    genes
        The G gene ids (rows, in ``scatter['gene']``).
    titles
        Row labels (default the gene ids).
    """
    tiles, attributions = np.asarray(tiles), np.asarray(attributions)
    g_n, t_n = tiles.shape[:2]
    titles = list(titles) if titles is not None else list(genes)
    fig, axes = plt.subplots(g_n, 1 + 2 * t_n, figsize=(2.9 + 2.0 * t_n * 2, 2.5 * g_n), squeeze=False,
                             gridspec_kw={"width_ratios": [1.5] + [1] * (2 * t_n)})
    for i, gene in enumerate(genes):
        ax = axes[i, 0]
        d = scatter[scatter["gene"] == gene]
        ax.scatter(d["measured"], d["predicted"], s=7, alpha=0.6, lw=0, c="#6a3d9a")
        if len(d) > 1:
            lo = float(np.nanmin(d[["measured", "predicted"]].to_numpy()))
            hi = float(np.nanmax(d[["measured", "predicted"]].to_numpy()))
            ax.plot([lo, hi], [lo, hi], ls="--", lw=0.7, color="grey")
            r = np.corrcoef(d["measured"], d["predicted"])[0, 1] if d["predicted"].std() > 0 else np.nan
            ax.text(0.03, 0.95, f"r² = {r * r:.2f}" if np.isfinite(r) else "r² undefined",
                    transform=ax.transAxes, va="top", fontsize=8)
        ax.set_title(titles[i], fontsize=8)
        ax.set_xlabel("measured", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
        ax.tick_params(labelsize=7)
        for j in range(t_n):
            a1, a2 = axes[i, 1 + 2 * j], axes[i, 2 + 2 * j]
            a1.imshow(composite(tiles[i, j]))
            m = np.abs(attributions[i, j]).sum(axis=0)
            a2.imshow(m / max(float(m.max()), 1e-12), cmap="inferno", vmin=0, vmax=1)
            for a in (a1, a2):
                a.set_xticks([])
                a.set_yticks([])
            if i == 0:
                a1.set_title("tile", fontsize=8)
                a2.set_title("SmoothGrad", fontsize=8)
    fig.tight_layout()
    return fig


def channel_share_figure(shares: pd.DataFrame) -> plt.Figure:
    """Share of each channel in the attribution (:func:`i2o_utils.analysis.attribution.channel_shares`),
    per gene (stacked bars), the simulator's driver channel marked with a star.

    ``shares``: one row per gene with columns ``label``, one per channel short name, and
    optionally ``driver_channel``.
    """
    chans = [c for c in CHANNEL_SHORT if c in shares.columns]
    fig, ax = plt.subplots(figsize=(1.4 + 1.2 * len(shares), 3.6))
    x = np.arange(len(shares))
    bottom = np.zeros(len(shares))
    for c in chans:
        k = CHANNEL_SHORT.index(c)
        v = shares[c].to_numpy(float)
        ax.bar(x, v, bottom=bottom, color=CHANNEL_COLOURS[k], label=c, edgecolor="w")
        if "driver_channel" in shares.columns:
            for i, drv in enumerate(shares["driver_channel"]):
                if drv == c:
                    ax.text(x[i], bottom[i] + v[i] / 2, "★", ha="center", va="center", fontsize=12)
        bottom += v
    ax.set_xticks(x, shares["label"], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("channel share of\n|SmoothGrad × input|")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    ax.set_title("Attribution per channel (★ = simulator's driver)", fontsize=9)
    fig.tight_layout()
    return fig
