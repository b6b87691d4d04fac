"""Checks and figures of notebook 20, read back from a :class:`~i2o_utils.imaging.pipeline.PreprocessResult`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from i2o_utils.config import CHANNEL_SHORT
from i2o_utils.data import layout
from i2o_utils.imaging.flatfield import correct_image
from i2o_utils.imaging.nuclei import detection_scores, sum_scores
from i2o_utils.imaging.pipeline import ImagingError, PreprocessResult
from i2o_utils.imaging.tilestore import TileStore
from i2o_utils.imaging.well import STATUS_ERROR


def _corrected_field(result: PreprocessResult, row, fov: int) -> tuple[np.ndarray, np.ndarray]:
    """One field of a well (a status row) as stored and as corrected."""
    raw = layout.read_well_images(row["file"], fields=[fov]).fields[0]
    return raw, (correct_image(raw, result.flatfields[row["plate"]], dark_offset=result.params.dark_offset)
                 if result.corrected else raw.astype(np.float32))


def example_field(result: PreprocessResult, plate: str | None = None, well_id: str | None = None,
                  fov: int = 0, data_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """One field before and after correction, its nuclei, tile corners and stored tiles.

    Default: the well with the median number of tiles among the wells of ``plate`` (the first
    plate) that have tiles.

    Returns
    -------
    dict
        ``plate``, ``well_id``, ``fov``, ``raw`` and ``corrected`` (``(3, H, W)``), ``centres``
        (``(N, 2)``), ``corners`` (``(M, 2)``), ``tiles`` (``(M, 3, s, s)`` float in [0, 1], read
        from the store), ``truth`` (true centres of a simulated screen, or ``None``).
    """
    st = result.status
    ok = st[st["n_tiles"] > 0]
    if ok.empty:
        raise ImagingError("no well has tiles")
    if well_id is None:
        sel = ok[ok["plate"] == (plate or ok["plate"].iat[0])].sort_values("n_tiles")
        if sel.empty:
            raise ImagingError(f"no well with tiles on plate {plate}")
        row = sel.iloc[len(sel) // 2]
    else:
        hit = st[(st["well_id"] == well_id) & ((st["plate"] == plate) if plate else True)]
        if hit.empty:
            raise ImagingError(f"no well {well_id}" + (f" on plate {plate}" if plate else ""))
        row = hit.iloc[0]
    raw, corrected = _corrected_field(result, row, fov)
    cells = pd.read_parquet(result.paths["features_cells"], filters=[("Metadata_Plate", "==", row["plate"]),
                                                                      ("Metadata_Well", "==", row["well_id"])])
    cells = cells[cells["Metadata_Field"] == fov]
    tiled = cells[cells["Metadata_TileNumber"] >= 0]
    store = TileStore(result.store_dir)
    k = np.flatnonzero((store.wells["plate"] == row["plate"]).to_numpy() & (store.wells["well_id"] == row["well_id"]).to_numpy())
    tiles = (store.to_float(store.read_tiles(int(k[0]), tiled["Metadata_TileNumber"].to_numpy())) if len(k)
             else np.zeros((0, 3, result.params.tile_size, result.params.tile_size), np.float32))
    store.close()
    truth = None
    if layout.nuclei_truth_path(data_root).exists():
        t = pd.read_parquet(layout.nuclei_truth_path(data_root))
        truth = t[(t["plate"] == row["plate"]) & (t["well_id"] == row["well_id"]) & (t["fov"] == fov)][["y", "x"]].to_numpy()
    return {"plate": row["plate"], "well_id": row["well_id"], "fov": fov, "raw": raw, "corrected": corrected,
            "centres": cells[["Metadata_CentreRow", "Metadata_CentreCol"]].to_numpy(),
            "corners": tiled[["Metadata_TileRow0", "Metadata_TileCol0"]].to_numpy(), "tiles": tiles, "truth": truth,
            "target": row.get("target"), "cell_state": row.get("cell_state")}


def control_fields(result: PreprocessResult, target: str = "NT", fov: int = 0) -> dict[str, np.ndarray]:
    """A corrected field of one ``target`` well (the one with the most tiles) per stimulus."""
    st = result.status
    if "cell_state" not in st or "target" not in st:
        raise ImagingError("the status table has no target / cell_state columns (metadata missing)")
    return {stim: _corrected_field(result, g.sort_values("n_tiles").iloc[-1], fov)[1]
            for stim, g in st[(st["target"] == target) & (st["status"] != STATUS_ERROR)].groupby("cell_state")}


def nuclei_accuracy_against_truth(result: PreprocessResult, data_root: str | os.PathLike | None = None,
                                  radius: float | None = None) -> pd.DataFrame | None:
    """Precision, recall and F1 of the detected nuclei against ``simulation/nuclei_truth.parquet``
    (plate, well_id, fov, y, x), per plate and overall; ``None`` without truth.

    Only the fields of processed wells (not errors) are scored; a detected and a true centre match
    within ``radius`` px (default half a nucleus diameter).
    """
    truth_path = layout.nuclei_truth_path(data_root)
    if not truth_path.exists() or "features_cells" not in result.paths:
        return None
    cells = pd.read_parquet(result.paths["features_cells"],
                            columns=["Metadata_Plate", "Metadata_Well", "Metadata_Field",
                                     "Metadata_CentreRow", "Metadata_CentreCol"])
    radius = radius if radius is not None else result.params.nucleus_diameter_px / 2
    det = {k: g[["Metadata_CentreRow", "Metadata_CentreCol"]].to_numpy()
           for k, g in cells.groupby(["Metadata_Plate", "Metadata_Well", "Metadata_Field"])}
    tru = {k: g[["y", "x"]].to_numpy() for k, g in pd.read_parquet(truth_path).groupby(["plate", "well_id", "fov"])}
    per_plate: dict[str, list] = {}
    none = np.zeros((0, 2))
    st = result.status
    for r in st.loc[st["status"] != STATUS_ERROR, ["plate", "well_id", "n_fields"]].itertuples(index=False):
        for f in range(int(r.n_fields)):
            k = (r.plate, r.well_id, f)
            per_plate.setdefault(r.plate, []).append(detection_scores(det.get(k, none), tru.get(k, none), radius))
    allv = [s for v in per_plate.values() for s in v]
    return pd.DataFrame([{"plate": p, "fields": len(v), **sum_scores(v)}
                         for p, v in [*sorted(per_plate.items()), ("all", allv)]])


def shading_summary(result: PreprocessResult, inner: float = 0.35, outer: float = 0.75) -> pd.DataFrame:
    """How much of the shading the correction removed, per plate and channel, from the cells.

    Cells are split by the distance of their centre from the field centre (as a fraction of the
    half diagonal): ``inner`` and closer, ``outer`` and farther. For each channel the median cell
    intensity of the outer ring over that of the inner disc is reported for the corrected images
    (``ratio_corrected``; 1 when no shading is left) and for the raw images (``ratio_raw``, the
    same cells' intensity times the flat field at their centre). Cells do not care where they
    sit, so shading is what moves the ratio away from 1.
    """
    if not result.corrected or "features_cells" not in result.paths:
        return pd.DataFrame(columns=["plate", "channel", "cells", "ratio_raw", "ratio_corrected"])
    cols = [f"Cells_Intensity_MeanIntensity_{c}" for c in CHANNEL_SHORT]
    cells = pd.read_parquet(result.paths["features_cells"],
                            columns=["Metadata_Plate", "Metadata_CentreRow", "Metadata_CentreCol", *cols])
    d = result.params.dark_offset
    rows = []
    for plate, g in cells.groupby("Metadata_Plate"):
        ff = result.flatfields[plate]
        h, w = ff.shape[1:]
        r, c = g["Metadata_CentreRow"].to_numpy(int), g["Metadata_CentreCol"].to_numpy(int)
        dist = np.hypot(r - (h - 1) / 2, c - (w - 1) / 2) / np.hypot(h / 2, w / 2)
        i_in, i_out = dist <= inner, dist >= outer
        for k, name in enumerate(CHANNEL_SHORT):
            corr = g[cols[k]].to_numpy(float)
            raw = corr * (ff[k][r, c] - d) + d
            ok = np.isfinite(corr)
            rows.append({"plate": plate, "channel": name, "cells": int(ok.sum()),
                         "ratio_raw": float(np.median(raw[ok & i_out]) / np.median(raw[ok & i_in])),
                         "ratio_corrected": float(np.median(corr[ok & i_out]) / np.median(corr[ok & i_in]))})
    return pd.DataFrame(rows)
