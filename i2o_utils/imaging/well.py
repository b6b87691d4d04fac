"""The work on one well, a pure function of its inputs: it reads one image file and writes only
that well's outputs, each atomically, the done-marker last.

:func:`process_well` corrects the fields by the plate's flat field (the corrected images go to
``data/ICF`` in the per-well layout when the input was RAW), finds the nuclei centres, cuts
128x128 tiles under the border rule (TILES file in the authors' form, plus the well's tiles for
the store), computes the morphology features of every cell, and writes its status row as the
done-marker. :func:`verify_well` decides whether a finished well's outputs can be reused;
:func:`plate_sums` is the worker of the flat-field pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from i2o_utils.config import CHANNEL_SHORT, CHANNELS, ImagingConfig
from i2o_utils.data import layout
from i2o_utils.data.layout import LayoutError, atomic_path
from i2o_utils.imaging.features import cell_features
from i2o_utils.imaging.flatfield import MeanAccumulator, correct_image
from i2o_utils.imaging.nuclei import find_nuclei_centres
from i2o_utils.imaging.plan import WellTask
from i2o_utils.imaging.tiles import extract_tiles, tile_corners, to_tile_dtype

log = logging.getLogger(__name__)

STATUS_OK, STATUS_NO_NUCLEI, STATUS_NO_TILES, STATUS_ERROR = "ok", "no_nuclei", "no_tiles", "error"
_NOT_IN_KEY = ("flatfield_method", "scale_wells_per_plate", "scale_quantile", "icf_compression",
               "scheduler", "n_workers")
"""Settings a well's outputs do not depend on (or, the tile scale, only through ``scale``)."""


def params_key(params: ImagingConfig, scale: Sequence[float] | None = None) -> str:
    """A short hash of the (resolved) parameters and tile scale that a well's outputs depend on."""
    d = {k: v for k, v in asdict(params).items() if k not in _NOT_IN_KEY}
    d["scale"] = [round(float(x), 6) for x in scale] if scale is not None else None
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def status_row(task: WellTask, status: str = STATUS_ERROR, **values) -> dict[str, Any]:
    """A well's status row: zero counts and empty texts unless given."""
    return {"plate": task.plate, "well_id": task.well_id, "status": status, "n_fields": 0, "n_nuclei": 0,
            "n_tiles": 0, "n_dropped_border": 0, "notes": "", "error": "", "seconds": 0.0, "params_key": "",
            **values}


def _error_text(task: WellTask, e: Exception) -> str:
    return str(e) if task.image_path in str(e) else f"{task.where}: {type(e).__name__}: {e}"


def read_well(task: WellTask, fields: Sequence[int] | None = None) -> layout.WellImages:
    """The well's fields (``fields``: their indices; all by default); a :class:`LayoutError` names
    the file, plate and well."""
    try:
        return layout.read_well_images(task.image_path, fields=fields)
    except LayoutError as e:
        raise LayoutError(f"{e} [plate {task.plate}, well {task.well_id}]") from None


def plate_sums(tasks: Sequence[WellTask]) -> tuple[dict[tuple, MeanAccumulator], list[dict]]:
    """The fields of some wells of one plate summed per channel, by field shape, and the error
    rows of unreadable files (file and well named)."""
    groups: dict[tuple, MeanAccumulator] = {}
    errors = []
    for t in tasks:
        try:
            fields = read_well(t).fields
        except Exception as e:  # noqa: BLE001 - reported with the file and well
            errors.append(status_row(t, error=_error_text(t, e)))
            continue
        groups.setdefault(fields.shape[1:], MeanAccumulator()).add(fields, batch=True)
    return groups, errors


def round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """float32 values rounded to ``bits`` mantissa bits (of 23): lossy by at most ``2**-(bits+1)``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    drop = 23 - int(bits)
    if drop <= 0:
        return x
    u = x.view(np.uint32)
    mask = np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return ((u + np.uint32(1 << (drop - 1))) & mask).view(np.float32)


def process_well(task: WellTask, flatfield: np.ndarray | None, scale: np.ndarray,
                 params: ImagingConfig) -> dict[str, Any]:
    """Process one well (``task``: its input file and output paths) and write its outputs (each
    atomically, the done-marker last), given the ``(3, H, W)`` flat field of its plate (``None`` for
    images already corrected), the ``(3,)`` tile intensity scale and the resolved imaging parameters.

    Returns
    -------
    dict
        The well's status row: plate, well_id, status (``ok``, ``no_nuclei``, ``no_tiles`` or
        ``error``), n_fields, n_nuclei, n_tiles, n_dropped_border, notes (e.g. an all-dark field),
        error, seconds. Nothing is raised for a bad well: an unreadable file, a field of the wrong
        shape or dtype gives status ``error`` with the file and well named in ``error``, and no
        done-marker, so a re-run tries the well again.
    """
    t0 = time.perf_counter()
    try:
        w = read_well(task)
        fields = w.fields
        if flatfield is not None and fields.shape[1:] != flatfield.shape:
            raise LayoutError(f"{task.where}: fields are {fields.shape[1:]}, but the plate's flat "
                              f"field is {flatfield.shape}")
        if flatfield is not None and fields.dtype.kind == "f":
            raise LayoutError(f"{task.where}: raw images are {fields.dtype}; expected uint8 or uint16")
        _refuse_non_finite(fields, task)
        notes, tiles, cell_tables, corners_per_field = [], [], [], []
        corrected = (correct_image(fields, flatfield, dark_offset=params.dark_offset, where=task.where)
                     if flatfield is not None else fields.astype(np.float32))
        n_nuclei = n_tiles = 0
        for f, raw in enumerate(fields):
            hoechst = corrected[f, 0]
            if not float(raw[0].max()) > float(raw[0].min()) or not float(raw[0].max()) > 0:
                notes.append(f"fov {f}: all-dark or constant nucleus channel")
                log.warning("%s: fov %d is all dark or constant; no nuclei", task.where, f)
                centres = np.zeros((0, 2), np.int64)
            else:
                centres = find_nuclei_centres(hoechst, params.nucleus_diameter_px, min_response=params.min_response)
            corners, kept = tile_corners(centres, hoechst.shape, params.tile_size, params.border)
            n_nuclei += len(centres)
            corners_per_field.append(corners)
            if len(corners):  # scaled once per field, then cut (tiles overlap)
                tiles.append(extract_tiles(to_tile_dtype(corrected[f], scale, params.tile_dtype), corners,
                                           params.tile_size))
            if params.features:
                ct = cell_features(corrected[f], centres, params.nucleus_diameter_px,
                                   channel_names=CHANNEL_SHORT, max_cell_radius=params.cell_radius_px)
            else:
                ct = pd.DataFrame({"Metadata_CentreRow": centres[:, 0], "Metadata_CentreCol": centres[:, 1]})
            ct.insert(0, "Metadata_Field", f)
            ct.insert(1, "Metadata_Cell", np.arange(len(centres)))
            at = np.full((len(centres), 3), -1, np.int64)  # tile number and corner; -1: no tile (border rule)
            at[kept] = np.column_stack([n_tiles + np.arange(len(kept)), corners])
            ct[["Metadata_TileNumber", "Metadata_TileRow0", "Metadata_TileCol0"]] = at
            cell_tables.append(ct)
            n_tiles += len(kept)
        if task.icf_path is not None:
            layout.write_well_images(task.icf_path, w.plate, w.row, w.column,
                                     round_mantissa(corrected, params.icf_mantissa_bits), plane=w.plane,
                                     compression=params.icf_compression)
        layout.write_well_tiles(task.tiles_path, w.row, w.column, task.input_pointer, corners_per_field,
                                plate_barcode=w.plate, plane=w.plane)
        s = params.tile_size
        with atomic_path(task.shard_path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.concatenate(tiles) if tiles else np.zeros((0, 3, s, s), params.tile_dtype))
        cells = pd.concat(cell_tables, ignore_index=True)
        ident = {"Metadata_Plate": task.plate, "Metadata_Well": task.well_id,
                 **{f"Metadata_{_camel(k)}": v for k, v in task.metadata.items()}}
        for i, (k, v) in enumerate(ident.items()):
            cells.insert(i, k, v)
        with atomic_path(task.cells_path) as tmp:
            cells.to_parquet(tmp, index=False)
        status = STATUS_OK if n_tiles else (STATUS_NO_NUCLEI if n_nuclei == 0 else STATUS_NO_TILES)
        if status != STATUS_OK:
            log.warning("%s: %s", task.where, "no nuclei found" if n_nuclei == 0
                        else f"{n_nuclei} nuclei, all within {s // 2} px of the border: no tiles")
        row = status_row(task, status, n_fields=int(fields.shape[0]), n_nuclei=int(n_nuclei), n_tiles=int(n_tiles),
                         n_dropped_border=int(n_nuclei - n_tiles), notes="; ".join(notes),
                         seconds=round(time.perf_counter() - t0, 3), params_key=params_key(params, scale),
                         inputs_key=task.inputs_key)
        with atomic_path(task.marker_path) as tmp:
            tmp.write_text(json.dumps(row))
        return row
    except Exception as e:  # noqa: BLE001 - reported with file and well, collected by the caller
        return status_row(task, error=_error_text(task, e), seconds=round(time.perf_counter() - t0, 3))


def _refuse_non_finite(fields: np.ndarray, task: WellTask) -> None:
    """NaN or infinite pixels are a broken file, not a dark field: the well fails, named."""
    if fields.dtype.kind != "f":
        return
    bad = ~np.isfinite(fields)
    if bad.any():
        f, c = (int(i) for i in np.argwhere(bad.any(axis=(2, 3)))[0])
        raise LayoutError(f"{task.where}: {int(bad.sum())} NaN or infinite pixel(s), first in field {f}, "
                          f"channel {CHANNELS[c]!r}")


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in str(name).split("_"))


def verify_well(task: WellTask, key: str, store=None) -> dict | None:
    """The recorded status of a well whose outputs exist and verify, else ``None``.

    Checks: the done-marker (with the same parameters key ``key`` and inputs), the TILES file
    (readable, with the recorded number of tiles), the ICF file (readable attributes), the cells
    table, and the tiles (the well's shard with the right shape, or its rows in the assembled
    :class:`~i2o_utils.imaging.tilestore.TileStore` ``store``).
    """
    try:
        row = json.loads(Path(task.marker_path).read_text())  # no marker: OSError
        n = row["n_tiles"]
        if (row.get("params_key") != key or row.get("status") == STATUS_ERROR
                or row.get("inputs_key", "") != task.inputs_key):  # image file, flat field or metadata changed
            return None
        if layout.read_well_tiles(task.tiles_path).n_tiles != n or not Path(task.cells_path).exists():
            return None
        if task.icf_path is not None:
            layout.read_well_attrs(task.icf_path)  # an unreadable file raises
        if Path(task.shard_path).exists():
            return row if np.load(task.shard_path, mmap_mode="r").shape[0] == n else None
        if n > 0:  # the shard was removed once the store held the well's tiles
            if store is None:
                return None
            w = store.wells
            if w.loc[(w["plate"] == task.plate) & (w["well_id"] == task.well_id), "n_tiles"].tolist() != [n]:
                return None
        return row
    except (OSError, ValueError, KeyError):  # LayoutError and JSONDecodeError are ValueErrors
        return None
