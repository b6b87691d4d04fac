"""Figures of notebook 20 (image preprocessing): Fig 11, Fig 8, flat fields, nuclei, tiles."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from i2o_utils.config import CHANNEL_SHORT
from i2o_utils.plotting.common import CHANNEL_COLOURS, composite, rescale

__all__ = ["preprocessing_figure", "channels_by_stimulus_figure", "flatfields_figure",
           "nuclei_overlay_figure", "tiles_per_well_figure"]


def _channel_cmap(c: int):
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list(f"ch{c}", [(0, 0, 0), tuple(CHANNEL_COLOURS[c])])


def preprocessing_figure(raw: np.ndarray, corrected: np.ndarray, tiles: np.ndarray,
                         corners: np.ndarray | None = None, tile_size: int | None = None,
                         n_tiles: int = 12, title: str | None = None) -> plt.Figure:
    """Fig 11: acquired field (left), shading-corrected field (centre), cell-centred tiles (right).

    Parameters
    ----------
    raw, corrected
        ``(3, H, W)`` fields; shown as channel composites, each contrast-stretched on its own.
    tiles
        ``(M, 3, s, s)`` tiles of this field (float in [0, 1] or stored integers).
    corners
        ``(M, 2)`` tile corners, drawn as boxes on the corrected field.
    """
    n_show = min(n_tiles, len(tiles))
    ncol = max(1, int(np.ceil(np.sqrt(max(n_show, 1)))))
    nrow = max(1, int(np.ceil(n_show / ncol)))
    fig = plt.figure(figsize=(12.5, 4.4))
    gs = fig.add_gridspec(1, 3, width_ratios=[1, 1, 1], wspace=0.08)
    ax0, ax1 = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    ax0.imshow(composite(raw))
    ax0.set_title("acquired (raw)")
    ax1.imshow(composite(corrected))
    ax1.set_title("shading corrected")
    if corners is not None and tile_size:
        for r0, c0 in np.asarray(corners)[:n_show]:
            ax1.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), tile_size, tile_size, fill=False, lw=0.8,
                                    ec="white", alpha=0.8))
    for ax in (ax0, ax1):
        ax.set_axis_off()
    sub = gs[2].subgridspec(nrow, ncol, wspace=0.04, hspace=0.04)
    for k in range(nrow * ncol):
        ax = fig.add_subplot(sub[k // ncol, k % ncol])
        ax.set_axis_off()
        if k < n_show:
            ax.imshow(composite(np.asarray(tiles[k], dtype=np.float32)))
    fig.text(0.77, 0.93, f"cell-centred tiles ({len(tiles)} in this field)", ha="center", fontsize=12)
    if title:
        fig.suptitle(title, y=1.02)
    return fig


def channels_by_stimulus_figure(fields: Mapping[str, np.ndarray], channel_names: Sequence[str] = CHANNEL_SHORT,
                                crop: int | None = None) -> plt.Figure:
    """Fig 8: the channels of non-targeting control wells under each stimulus (rows), and the overlay.

    Parameters
    ----------
    fields
        Stimulus (row label) -> ``(3, H, W)`` corrected field of an NT well.
    crop
        Show the central ``crop x crop`` pixels.
    """
    rows = list(fields)
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3.1 * len(rows)), squeeze=False)
    for i, stim in enumerate(rows):
        f = np.asarray(fields[stim], dtype=np.float32)
        if crop:
            h, w = f.shape[1:]
            r0, c0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
            f = f[:, r0:r0 + crop, c0:c0 + crop]
        for c in range(3):
            axes[i, c].imshow(rescale(f[c]), cmap=_channel_cmap(c), vmin=0, vmax=1)
            if i == 0:
                axes[i, c].set_title(channel_names[c])
        axes[i, 3].imshow(composite(f))
        if i == 0:
            axes[i, 3].set_title("overlay")
        axes[i, 0].text(-0.06, 0.5, f"NT, {stim.upper()}", transform=axes[i, 0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=12)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def flatfields_figure(flatfields: Mapping[str, np.ndarray], channel_names: Sequence[str] = CHANNEL_SHORT,
                      max_plates: int = 4) -> plt.Figure:
    """The estimated flat field of each plate (rows, the first ``max_plates``) and channel, relative to its maximum."""
    plates = list(flatfields)[:max_plates]
    fig, axes = plt.subplots(len(plates), 3, figsize=(7.5, 2.3 * len(plates) + 0.4), squeeze=False)
    im = None
    for i, p in enumerate(plates):
        ff = np.asarray(flatfields[p], dtype=np.float32)
        for c in range(3):
            rel = ff[c] / ff[c].max()
            im = axes[i, c].imshow(rel, cmap="magma", vmin=0.5, vmax=1.0)
            axes[i, c].set_xticks([])
            axes[i, c].set_yticks([])
            if i == 0:
                axes[i, c].set_title(channel_names[c])
            axes[i, c].set_xlabel(f"min {rel.min():.2f}", fontsize=8, labelpad=2)
        axes[i, 0].set_ylabel(p, fontsize=9)
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="F / max F")
    return fig


def nuclei_overlay_figure(hoechst: np.ndarray, centres: np.ndarray, truth: np.ndarray | None = None,
                          corners: np.ndarray | None = None, tile_size: int | None = None,
                          title: str | None = None, ax: plt.Axes | None = None) -> plt.Figure:
    """Detected nuclei centres (+) on the Hoechst channel, true centres (o) and tile boxes if given."""
    fig = ax.figure if ax is not None else plt.figure(figsize=(6, 6))
    ax = ax or fig.add_subplot(111)
    ax.imshow(rescale(hoechst), cmap="gray")
    if corners is not None and tile_size:
        for r0, c0 in np.asarray(corners):
            ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), tile_size, tile_size, fill=False, lw=0.6,
                                   ec="gold", alpha=0.7))
    if truth is not None and len(truth):
        t = np.asarray(truth)
        ax.plot(t[:, 1], t[:, 0], "o", ms=9, mfc="none", mec="deepskyblue", mew=1.2, label="true centre")
    c = np.asarray(centres).reshape(-1, 2)
    ax.plot(c[:, 1], c[:, 0], "+", ms=9, color="red", mew=1.5, label="detected centre")
    ax.set_xlim(-0.5, hoechst.shape[1] - 0.5)
    ax.set_ylim(hoechst.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    ax.legend(loc="lower right", fontsize=8, framealpha=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def tiles_per_well_figure(status: pd.DataFrame, by: str = "cell_state") -> plt.Figure:
    """Distribution of tiles per well (histogram per ``by`` group) and tiles per plate.

    ``status`` is the wells status table (``plate``, ``n_tiles``, ``n_nuclei``, ``by``).
    """
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    groups = sorted(status[by].dropna().unique()) if by in status else [None]
    bins = np.arange(0, max(int(status["n_tiles"].max()), 1) + 2) - 0.5
    if len(bins) > 60:
        bins = np.linspace(-0.5, status["n_tiles"].max() + 0.5, 50)
    for g in groups:
        sel = status if g is None else status[status[by] == g]
        ax.hist(sel["n_tiles"], bins=bins, alpha=0.6, label=f"{g.upper() if isinstance(g, str) else g} "
                f"({len(sel)} wells, median {sel['n_tiles'].median():.0f})")
    zero = int((status["n_tiles"] == 0).sum())
    ax.set_xlabel("tiles per well")
    ax.set_ylabel("wells")
    ax.set_title(f"Tiles per well ({zero} well(s) without tiles)")
    ax.legend(frameon=False, fontsize=8)
    per_plate = status.groupby("plate")[["n_nuclei", "n_tiles"]].sum()
    x = np.arange(len(per_plate))
    ax2.bar(x - 0.2, per_plate["n_nuclei"], 0.4, label="nuclei")
    ax2.bar(x + 0.2, per_plate["n_tiles"], 0.4, label="tiles (border rule applied)")
    ax2.set_xticks(x, per_plate.index, rotation=45, ha="right", fontsize=8)
    ax2.set_title("Per plate")
    ax2.legend(frameon=True, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
