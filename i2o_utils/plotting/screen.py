"""Figures of notebook 00: the plate map and example fields (the paper's Fig 8 in spirit)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from i2o_utils.config import CONTROL, M1_REVERTING, M2_REVERTING, STIMULI
from i2o_utils.data import layout
from i2o_utils.plotting.common import composite


def plate_map_figure(metadata: pd.DataFrame, plates: Sequence[str] | None = None) -> plt.Figure:
    """Heatmaps of the 384-well plate maps: NT, STAT1, STAT6, other knock-outs, empty."""
    plates = list(plates) if plates is not None else sorted(metadata["PLATE_ID"].unique())
    cats = {"empty": 0, "other knock-out": 1, CONTROL: 2, M1_REVERTING: 3, M2_REVERTING: 4}
    colours = ["#f2f2f2", "#9e9e9e", "#1f77b4", "#d62728", "#2ca02c"]
    cmap = plt.matplotlib.colors.ListedColormap(colours)
    ncol = min(2, len(plates))  # two across: each map stays readable at the width of a page
    nrow = int(np.ceil(len(plates) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.1 * nrow), squeeze=False)
    for ax, plate in zip(axes.flat, plates):
        grid = np.zeros((16, 24), int)
        sub = metadata[metadata["PLATE_ID"] == plate]
        for w, t in zip(sub["well_id"], sub["target"]):
            r, c = layout.parse_well_id(w)
            grid[r - 1, c - 1] = cats.get(t, 1)
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=len(colours) - 1)
        state = "/".join(sorted(sub["cell_state"].str.upper().unique()))
        ax.set_title(f"{plate} ({state})", fontsize=9)
        ax.set_xticks(range(0, 24, 4), [str(c) for c in range(1, 25, 4)], fontsize=7)
        ax.set_yticks(range(0, 16, 3), [chr(65 + r) for r in range(0, 16, 3)], fontsize=7)
    for ax in list(axes.flat)[len(plates):]:
        ax.axis("off")
    handles = [plt.matplotlib.patches.Patch(color=colours[v], label=k) for k, v in cats.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(cats), frameon=False)
    fig.suptitle("Imaging plate maps")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return fig


def example_wells(metadata: pd.DataFrame, targets: Sequence[str] = (CONTROL, M1_REVERTING, M2_REVERTING),
                  stimuli: Sequence[str] = STIMULI) -> pd.DataFrame:
    """The first well (by plate, then well) of each (target, stimulus) present in the metadata."""
    rows = []
    for s in stimuli:
        for t in targets:
            sub = metadata[(metadata["target"] == t) & (metadata["cell_state"] == s)]
            if len(sub):
                rows.append(sub.sort_values(["PLATE_ID", "ROW", "COLUMN"]).iloc[0])
    return pd.DataFrame(rows).reset_index(drop=True)


def example_fields_figure(wells: pd.DataFrame, image_dir: str | Path, field: int = 0,
                          title: str = "Example fields (overlay)") -> plt.Figure:
    """Composite images of one field per well; rows = stimuli, columns = targets."""
    index = layout.index_wells(image_dir)
    stimuli = list(dict.fromkeys(wells["cell_state"]))
    targets = list(dict.fromkeys(wells["target"]))
    fig, axes = plt.subplots(len(stimuli), len(targets), figsize=(3.3 * len(targets), 3.4 * len(stimuli)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for w in wells.itertuples(index=False):
        plate_ids = index["plate"].map(layout.plate_id)  # metadata's PLATE_ID: the barcode after its underscore
        hit = index[(plate_ids == w.PLATE_ID) & (index["well_id"] == w.well_id)]
        if hit.empty:
            raise FileNotFoundError(f"no image file for well {w.well_id} of plate {w.PLATE_ID} in {image_dir}")
        img = layout.read_well_images(hit["path"].iloc[0], fields=[field]).fields[0]
        ax = axes[stimuli.index(w.cell_state), targets.index(w.target)]
        ax.imshow(composite(img))
        ax.set_title(f"{w.target}, {w.cell_state.upper()}\n{w.PLATE_ID} {w.well_id}", fontsize=9)
    fig.suptitle(title + " - blue: Hoechst, green: MitoTracker, red: phalloidin", fontsize=10)
    fig.tight_layout()
    return fig
