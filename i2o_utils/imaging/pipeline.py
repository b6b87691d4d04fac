"""Image preprocessing of a whole screen: flat fields, corrected images, nuclei, tiles, features.

:func:`preprocess_images` runs, over the per-well image files of a data root:

1. **Flat fields** per plate and channel (:mod:`~i2o_utils.imaging.flatfield`): each well's
   channel sums are computed by a worker (:func:`well_channel_sums`) and added to the plate's
   running mean as they arrive, so a plate is never held in memory.
2. **Tile intensity scale** per channel: the 99.9th percentile of corrected intensities over a
   few sampled wells of every plate (the store's uint8/uint16 scaling, see
   :mod:`~i2o_utils.imaging.tilestore`).
3. **Per-well processing**, :func:`process_well`, a pure function of its inputs (it reads one
   well file and writes only that well's outputs, each atomically): flat-field correction
   (written to ``data/ICF`` in the per-well layout), nuclei centres, 128x128 tiles under the
   border rule (TILES files in the authors' form, plus the well's tiles for the store; in
   ``data/TILES`` for a simulated screen, in the results folder's ``TILES`` when the images come
   from ``data/ICF``, so that downloaded files are never overwritten),
   morphology features of every cell, and last a small done-marker. It is mapped over wells
   with ``dask.distributed``: a ``LocalCluster`` by default, the scheduler at an address
   (``"tcp://host:8786"``) with no code change, or in-process (``"synchronous"``, no cluster).
4. **Assembly** of the tile store (one array per plate), ``features_cells.parquet``,
   ``features_wells.parquet`` and ``wells_status.csv``.

Resumable, and never stale: every cached result records a fingerprint of what it was computed
from (:mod:`i2o_utils.cache`). The flat fields of a plate are reused only while its image files
(size and modification time of each) and the parameters are unchanged; the tile scale only while
those files and the flat fields are; a well is skipped only when its outputs exist and verify
(marker, ICF and TILES files readable with the recorded counts, tiles present) and its image
file, its plate's flat field, its metadata row and the parameters are unchanged. Anything else is
recomputed. Leftover temporary files of an interrupted run are removed first. Bad input stops the
run with the file and well named: two files claiming one well, NaN or infinite pixels, an
unreadable file or one with out-of-range attributes.
Failures are collected per well with the file and well named; a well without nuclei is recorded
(status ``no_nuclei``) and is not an error. When the data root holds ``data/ICF`` only (real
data, already corrected), steps 1 and the ICF writing are skipped and tiles come from ICF.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import h5py
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from i2o_utils import cache
from i2o_utils.config import CHANNEL_SHORT, CHANNELS, Profile, get_profile
from i2o_utils.data import layout
from i2o_utils.data.layout import LayoutError, atomic_path
from i2o_utils.imaging.features import aggregate_wells, cell_features
from i2o_utils.imaging.flatfield import MeanAccumulator, correct_image, flatfield_from_mean
from i2o_utils.imaging.nuclei import find_nuclei_centres
from i2o_utils.imaging.tiles import extract_tiles, intensity_scale, tile_corners, to_tile_dtype
from i2o_utils.imaging.tilestore import TileStore, finalise_store, write_plate_tiles
from i2o_utils.paths import bucket_paths, results_dir

log = logging.getLogger(__name__)

STEP = "20_preprocess_images"
STATUS_OK, STATUS_NO_NUCLEI, STATUS_NO_TILES, STATUS_ERROR = "ok", "no_nuclei", "no_tiles", "error"


class ImagingError(RuntimeError):
    """One or more wells failed; the message names each file and well."""


# --------------------------------------------------------------------------------------------
# parameters and tasks
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImagingParams:
    """Everything a well's processing depends on (its hash decides whether outputs are reusable)."""

    nucleus_diameter_px: float
    tile_size: int
    border: str = "drop"
    tile_dtype: str = "uint8"
    flatfield_percentile: float = 10.0
    flatfield_size: int = 250
    flatfield_sigma: float = 50.0
    flatfield_method: str = "fast"
    dark_offset: float = 0.0
    scale_quantile: float = 99.9
    scale_wells_per_plate: int = 4
    min_response: float = 0.25
    features: bool = True
    cell_radius_px: float | None = None
    icf_compression: str | None = "gzip"
    icf_mantissa_bits: int = 11
    """Significant bits kept in the float32 ICF images (relative precision 2**-12 = 0.024%,
    far below the photon noise) so that they compress to about half; 23 keeps them exact."""

    @classmethod
    def from_profile(cls, profile: str | Profile, **overrides) -> "ImagingParams":
        """The parameters of a profile's :class:`~i2o_utils.config.ImagingConfig` (plus overrides)."""
        prof = get_profile(profile) if isinstance(profile, str) else profile
        im = prof.imaging
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in asdict(im).items() if k in names}
        if values.get("nucleus_diameter_px") is None:
            values["nucleus_diameter_px"] = prof.screen.nucleus_diameter_px
        if values.get("cell_radius_px") is None:
            values["cell_radius_px"] = 0.75 * prof.screen.cell_diameter_px
        values.update(overrides)
        return cls(**values)

    def key(self, scale: Sequence[float] | None = None) -> str:
        """A short hash of the parameters (and tile scale) that a well's outputs depend on."""
        d = asdict(self)
        for k in ("flatfield_method", "scale_wells_per_plate", "scale_quantile", "icf_compression"):
            d.pop(k)
        d["scale"] = [round(float(x), 6) for x in scale] if scale is not None else None
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class WellTask:
    """One well: where its image file is and where each of its outputs goes."""

    plate: str
    well_id: str
    row: int
    column: int
    image_path: str
    icf_path: str | None
    tiles_path: str
    input_pointer: str
    shard_path: str
    cells_path: str
    marker_path: str
    metadata: dict = field(default_factory=dict)
    broken: str = ""
    """Why the file could not even be indexed (then the well is reported, not processed)."""
    inputs_key: str = ""
    """Fingerprint of what the well's outputs are computed from (its image file, its plate's flat
    field, its metadata); recorded in the done-marker, a mismatch reprocesses the well."""

    @property
    def where(self) -> str:
        return f"{self.image_path} (plate {self.plate}, well {self.well_id})"


def _sibling_name(name: str, prefix: str) -> str:
    head, _, rest = name.partition(".")
    return f"{prefix}.{rest}" if head in ("RAW", "ICF") and rest else f"{prefix}.{name}"


def plan_wells(data_root: str | os.PathLike | None, work_dir: str | os.PathLike,
               metadata: pd.DataFrame | None = None,
               tiles_dir: str | os.PathLike | None = None) -> tuple[list[WellTask], bool]:
    """The wells to process and whether their images need flat-field correction.

    Images come from ``data/RAW`` (simulated screen: corrected here, ICF and TILES written to
    ``data/ICF`` and ``data/TILES``) or, when there is no RAW folder, from ``data/ICF`` (real
    data: already corrected). Files fetched from a source are never written: with ICF input the
    project's own TILES files go to ``tiles_dir`` (default ``<work_dir>/../TILES``, i.e. the
    results folder), never over the bucket's ``data/TILES``.

    Raises
    ------
    LayoutError
        When a well file is unreadable or has no row in ``metadata.csv`` (file and well named).
    """
    bp = bucket_paths(data_root)
    correct = bp["raw"].is_dir() and any(layout.list_well_files(bp["raw"]))
    source = bp["raw"] if correct else bp["icf"]
    if not source.is_dir():
        raise LayoutError(f"{bp['raw']} and {bp['icf']}: no per-well image folder")
    index = _index_files(source)
    if index.empty:
        raise LayoutError(f"{source}: no per-well .h5 image files")
    _refuse_duplicate_wells(index)
    meta = metadata if metadata is not None else layout.read_metadata(bp["metadata"])
    # metadata.csv names a plate by PLATE_ID, the part of the images' PLATE_BARCODE after its underscore
    index["PLATE_ID"] = [layout.plate_id(b, where=p) if not e else b.rpartition("_")[2]
                         for b, p, e in zip(index["plate"], index["path"], index["error"])]
    meta = meta.drop(columns=[c for c in ("plate", "plate_barcode") if c in meta.columns])
    extra = [c for c in meta.columns if c not in ("PLATE_ID", "well_id")]
    merged = index.merge(meta, on=["PLATE_ID", "well_id"], how="left", indicator=True, suffixes=("", "_meta"))
    missing = merged.loc[(merged["_merge"] == "left_only") & (merged["error"] == "")]
    if len(missing):
        r = missing.iloc[0]
        raise LayoutError(f"{r['path']} (plate {r['plate']}, well {r['well_id']}): no row in "
                          f"{bp['metadata']} ({len(missing)} well file(s) without metadata)")
    merged = merged.sort_values(["plate", "row", "column"]).reset_index(drop=True)
    work = Path(work_dir)
    own_tiles = bp["tiles"] if correct else Path(tiles_dir) if tiles_dir is not None else work.parent / "TILES"
    tasks = []
    for r in merged.itertuples(index=False):
        name = Path(r.path).name
        icf_name = _sibling_name(name, "ICF")
        icf_path = bp["icf"] / icf_name if correct else Path(r.path)
        md = {c: _plain(getattr(r, c)) for c in extra if c in merged.columns and c not in ("ROW", "COLUMN")}
        tasks.append(WellTask(
            plate=str(r.plate), well_id=str(r.well_id), row=int(r.row), column=int(r.column),
            image_path=str(r.path), icf_path=str(icf_path) if correct else None,
            tiles_path=str(own_tiles / _sibling_name(name, "TILES")),
            input_pointer=str(Path(icf_path).resolve()),
            shard_path=str(work / "tiles" / r.plate / f"{r.well_id}.npy"),
            cells_path=str(work / "cells" / r.plate / f"{r.well_id}.parquet"),
            marker_path=str(work / "done" / r.plate / f"{r.well_id}.json"),
            metadata=md, broken=r.error,
        ))
    return tasks, correct


def _refuse_duplicate_wells(index: pd.DataFrame) -> None:
    """Two files that claim one well (plate, ROW, COLUMN) stop the run, both files named."""
    ok = index[index["error"] == ""]
    dup = ok[ok.duplicated(["plate", "well_id"], keep=False)]
    if len(dup):
        (plate, well), g = next(iter(dup.groupby(["plate", "well_id"])))
        files = ", ".join(str(p) for p in g["path"])
        n = dup.groupby(["plate", "well_id"]).ngroups
        raise LayoutError(f"plate {plate}, well {well} is claimed by {len(g)} files: {files} "
                          f"({n} well(s) with more than one file); keep one file per well")


def _index_files(folder: Path) -> pd.DataFrame:
    """Like :func:`layout.index_wells`, but an unreadable file becomes a row with its ``error``
    (plate and well taken from the authors' file name) instead of stopping the listing."""
    rows = []
    for p in layout.list_well_files(folder):
        try:
            a = layout.read_well_attrs(p)
            try:
                well_id = layout.format_well_id(a["row"], a["column"])
            except LayoutError as e:
                raise LayoutError(f"{p}: attributes {e}") from None
            rows.append({**a, "well_id": well_id, "error": ""})
        except LayoutError as e:
            m = layout.parse_image_file_name(p.name)
            row, col, plate = (m["row"], m["column"], m["barcode"]) if m else (0, 0, "?")
            well = layout.format_well_id(row, col) if m else p.stem
            rows.append({"plate": plate, "row": row, "column": col, "well_id": well, "plane": 1,
                         "n_fields": 0, "path": p, "error": f"{e} [plate {plate}, well {well}]"})
    return pd.DataFrame(rows, columns=["plate", "row", "column", "well_id", "plane", "n_fields", "path", "error"])


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


# --------------------------------------------------------------------------------------------
# the per-well functions (pure: inputs -> the well's own outputs)
# --------------------------------------------------------------------------------------------
def _read_well(task: WellTask, dtypes=layout.IMAGE_DTYPES) -> layout.WellImages:
    try:
        return layout.read_well_images(task.image_path, dtypes=dtypes)
    except LayoutError as e:
        raise LayoutError(f"{e} [plate {task.plate}, well {task.well_id}]") from None


def well_channel_sums(task: WellTask) -> tuple[np.ndarray, int]:
    """Per-channel sum over a well's fields (float64, ``(3, H, W)``) and the number of fields."""
    w = _read_well(task, dtypes=("uint8", "uint16", "float32"))
    return w.fields.sum(axis=0, dtype=np.float64), int(w.fields.shape[0])


def round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """float32 values rounded to ``bits`` mantissa bits (of 23): lossy by at most ``2**-(bits+1)``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    drop = 23 - int(bits)
    if drop <= 0:
        return x
    u = x.view(np.uint32)
    mask = np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return ((u + np.uint32(1 << (drop - 1))) & mask).view(np.float32)


def _atomic_save_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)


def process_well(task: WellTask, flatfield: np.ndarray | None, scale: np.ndarray,
                 params: ImagingParams) -> dict[str, Any]:
    """Process one well and write its outputs (each atomically, the done-marker last).

    Parameters
    ----------
    task
        The well (input file and output paths).
    flatfield
        ``(3, H, W)`` flat field of the well's plate, or ``None`` for images already corrected.
    scale
        ``(3,)`` per-channel tile intensity scale.
    params
        Processing parameters.

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
        w = _read_well(task)
        fields = w.fields
        if flatfield is not None and fields.shape[1:] != flatfield.shape:
            raise LayoutError(f"{task.where}: fields are {fields.shape[1:]}, but the plate's flat "
                              f"field is {flatfield.shape}")
        if flatfield is not None and fields.dtype.kind == "f":
            raise LayoutError(f"{task.where}: raw images are {fields.dtype}; expected uint8 or uint16")
        _refuse_non_finite(fields, task)
        notes = []
        corrected = np.empty(fields.shape, np.float32)
        corners_per_field, tiles, cell_tables = [], [], []
        n_nuclei = n_dropped = 0
        for f in range(fields.shape[0]):
            raw = fields[f]
            if flatfield is not None:
                corrected[f] = correct_image(raw.astype(np.float32) - np.float32(params.dark_offset),
                                             flatfield - np.float32(params.dark_offset), where=task.where)
            else:
                corrected[f] = raw
            hoechst = corrected[f, 0]
            if not float(raw[0].max()) > float(raw[0].min()) or not float(raw[0].max()) > 0:
                notes.append(f"fov {f}: all-dark or constant nucleus channel")
                log.warning("%s: fov %d is all dark or constant; no nuclei", task.where, f)
                centres = np.zeros((0, 2), np.int64)
            else:
                centres = find_nuclei_centres(hoechst, params.nucleus_diameter_px,
                                              min_response=params.min_response)
            corners, kept = tile_corners(centres, hoechst.shape, params.tile_size, params.border)
            n_nuclei += len(centres)
            n_dropped += len(centres) - len(kept)
            corners_per_field.append(corners)
            if len(corners):  # scaled once per field, then cut (tiles overlap)
                tiles.append(extract_tiles(to_tile_dtype(corrected[f], scale, params.tile_dtype), corners,
                                           params.tile_size))
            if params.features:
                ct = cell_features(corrected[f], centres, params.nucleus_diameter_px,
                                   channel_names=CHANNEL_SHORT, max_cell_radius=params.cell_radius_px)
            else:
                ct = pd.DataFrame({"Metadata_CentreRow": centres[:, 0], "Metadata_CentreCol": centres[:, 1]})
            tile_no = np.full(len(centres), -1, np.int64)
            tile_no[kept] = np.arange(len(kept)) + sum(len(c) for c in corners_per_field[:-1])
            ct.insert(0, "Metadata_Field", f)
            ct.insert(1, "Metadata_Cell", np.arange(len(centres)))
            ct["Metadata_TileNumber"] = tile_no
            for axis, name in enumerate(("Metadata_TileRow0", "Metadata_TileCol0")):
                corner = np.full(len(centres), -1, np.int64)  # -1: no tile (border rule)
                corner[kept] = corners[:, axis]
                ct[name] = corner
            cell_tables.append(ct)
        if task.icf_path is not None:
            layout.write_well_images(task.icf_path, w.plate, w.row, w.column,
                                     round_mantissa(corrected, params.icf_mantissa_bits), plane=w.plane,
                                     compression=params.icf_compression)
        layout.write_well_tiles(task.tiles_path, w.row, w.column, task.input_pointer, corners_per_field,
                                plate_barcode=w.plate, plane=w.plane)
        s = params.tile_size
        well_tiles = np.concatenate(tiles) if tiles else np.zeros((0, 3, s, s), params.tile_dtype)
        _atomic_save_npy(task.shard_path, well_tiles)
        cells = pd.concat(cell_tables, ignore_index=True)
        ident = {"Metadata_Plate": task.plate, "Metadata_Well": task.well_id,
                 **{f"Metadata_{_camel(k)}": v for k, v in task.metadata.items()}}
        for i, (k, v) in enumerate(ident.items()):
            cells.insert(i, k, v)
        with atomic_path(task.cells_path) as tmp:
            cells.to_parquet(tmp, index=False)
        n_tiles = int(len(well_tiles))
        status = STATUS_OK if n_tiles else (STATUS_NO_NUCLEI if n_nuclei == 0 else STATUS_NO_TILES)
        if status != STATUS_OK:
            log.warning("%s: %s", task.where, "no nuclei found" if n_nuclei == 0
                        else f"{n_nuclei} nuclei, all within {s // 2} px of the border: no tiles")
        row = {"plate": task.plate, "well_id": task.well_id, "status": status,
               "n_fields": int(fields.shape[0]), "n_nuclei": int(n_nuclei), "n_tiles": n_tiles,
               "n_dropped_border": int(n_dropped), "notes": "; ".join(notes), "error": "",
               "seconds": round(time.perf_counter() - t0, 3), "params_key": params.key(scale),
               "inputs_key": task.inputs_key}
        with atomic_path(task.marker_path) as tmp:
            tmp.write_text(json.dumps(row))
        return row
    except Exception as e:  # noqa: BLE001 - reported with file and well, collected by the caller
        msg = str(e) if task.image_path in str(e) else f"{task.where}: {type(e).__name__}: {e}"
        return {"plate": task.plate, "well_id": task.well_id, "status": STATUS_ERROR, "n_fields": 0,
                "n_nuclei": 0, "n_tiles": 0, "n_dropped_border": 0, "notes": "", "error": msg,
                "seconds": round(time.perf_counter() - t0, 3), "params_key": ""}


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


def verify_well(task: WellTask, params_key: str, store: "TileStore | None" = None) -> dict | None:
    """The recorded status of a well whose outputs exist and verify, else ``None``.

    Checks: the done-marker (with the same parameters key), the TILES file (readable, with the
    recorded number of tiles), the ICF file (readable attributes), the cells table, and the
    tiles (the well's shard with the right shape, or its rows in the assembled store).
    """
    try:
        marker = Path(task.marker_path)
        if not marker.exists():
            return None
        row = json.loads(marker.read_text())
        if row.get("params_key") != params_key or row.get("status") == STATUS_ERROR:
            return None
        if row.get("inputs_key", "") != task.inputs_key:  # image file, flat field or metadata changed
            return None
        if layout.read_well_tiles(task.tiles_path).n_tiles != row["n_tiles"]:
            return None
        if task.icf_path is not None:
            layout.read_well_attrs(task.icf_path)
        if not Path(task.cells_path).exists():
            return None
        shard = Path(task.shard_path)
        if shard.exists():
            arr = np.load(shard, mmap_mode="r")
            if arr.shape[0] != row["n_tiles"]:
                return None
        elif row["n_tiles"] > 0:
            if store is None:
                return None
            w = store.wells
            hit = w[(w["plate"] == task.plate) & (w["well_id"] == task.well_id)]
            if len(hit) != 1 or int(hit["n_tiles"].iat[0]) != row["n_tiles"]:
                return None
        return row
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------------------------
# the map over wells
# --------------------------------------------------------------------------------------------
class _Runner:
    """Maps a function over items in-process or on a dask.distributed cluster, with tqdm."""

    def __init__(self, scheduler: str | None, n_workers: int):
        self.client = None
        self.cluster = None
        self.scheduler = scheduler or "local"
        if self.scheduler == "synchronous":
            return
        from distributed import Client, LocalCluster

        if self.scheduler in ("local", "processes", "threads"):
            self.cluster = LocalCluster(n_workers=1 if self.scheduler == "threads" else n_workers,
                                        threads_per_worker=n_workers if self.scheduler == "threads" else 1,
                                        processes=self.scheduler != "threads", dashboard_address=":0",
                                        silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
        else:
            self.client = Client(self.scheduler)

    def scatter(self, obj):
        return obj if self.client is None else self.client.scatter(obj, broadcast=True)

    def map(self, fn: Callable, items: Sequence, *args, desc: str, progress: bool,
            arg_of: Callable | None = None) -> Iterable[tuple[int, Any]]:
        """Yield ``(position, result)`` as results arrive; ``arg_of(item)`` adds per-item arguments."""
        bar = tqdm(total=len(items), desc=desc, unit="well", disable=not progress)
        try:
            if self.client is None:
                for i, item in enumerate(items):
                    extra = arg_of(item) if arg_of else ()
                    yield i, fn(item, *extra, *args)
                    bar.update(1)
                return
            from distributed import as_completed

            futures = {}
            for i, item in enumerate(items):
                extra = arg_of(item) if arg_of else ()
                futures[self.client.submit(fn, item, *extra, *args, pure=False)] = i
            for fut in as_completed(futures):
                i = futures.pop(fut)
                yield i, fut.result()
                fut.release()
                bar.update(1)
        finally:
            bar.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# --------------------------------------------------------------------------------------------
# flat fields and scale
# --------------------------------------------------------------------------------------------
def _ff_attrs(params: ImagingParams) -> dict:
    return {"percentile": params.flatfield_percentile, "size": params.flatfield_size,
            "sigma": params.flatfield_sigma, "method": params.flatfield_method,
            "dark_offset": params.dark_offset}


def read_flatfields(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Flat fields saved by :func:`preprocess_images`: plate -> ``(3, H, W)`` float32."""
    with h5py.File(path, "r") as f:
        return {k: f[k]["flatfield"][()] for k in f.keys()}


def _load_flatfields(path: Path, plates: set[str], params: ImagingParams,
                     inputs: dict[str, str] | None = None) -> dict | None:
    """The saved flat fields if they were computed with these parameters from these inputs
    (``inputs``: plate -> fingerprint of its readable image files), else ``None``."""
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            if set(f.keys()) != plates:
                return None
            out = {}
            for p in plates:
                a = {k: _plain(v) for k, v in f[p].attrs.items()}
                if any(a.get(k) != v for k, v in _ff_attrs(params).items() if k != "method"):
                    return None
                if inputs is not None and a.get("inputs") != inputs.get(p):
                    log.info("%s: the images of plate %s changed since its flat field was computed; "
                             "recomputing", path, p)
                    return None
                out[p] = f[p]["flatfield"][()]
            return out
    except OSError:
        return None


def estimate_plate_flatfields(tasks: Sequence[WellTask], params: ImagingParams, runner: _Runner,
                              progress: bool = True, wells_per_task: int = 16
                              ) -> tuple[dict, dict, list[dict], dict]:
    """Flat field per plate (``(3, H, W)``), images per plate, error rows of unreadable wells, means.

    Workers sum the fields of up to ``wells_per_task`` wells of one plate; the sums are added to
    the plate's running mean as they arrive.
    """
    chunks: list[list[WellTask]] = []
    for t in tasks:
        if chunks and chunks[-1][0].plate == t.plate and len(chunks[-1]) < wells_per_task:
            chunks[-1].append(t)
        else:
            chunks.append([t])
    acc: dict[tuple, MeanAccumulator] = {}  # (plate, field shape) -> running sum
    wells_of: dict[tuple, list[WellTask]] = {}
    errors = []
    bar = tqdm(total=len(tasks), desc="plate means", unit="well", disable=not progress)
    for i, (groups, errs) in runner.map(well_group_sums, chunks, desc="", progress=False):
        errors += errs
        bar.update(len(chunks[i]))
        plate = chunks[i][0].plate
        for shape, (sums, n, ids) in groups.items():
            a = acc.setdefault((plate, shape), MeanAccumulator())
            a.sum = sums if a.sum is None else a.sum + sums
            a.count += n
            wells_of.setdefault((plate, shape), []).extend(t for t in chunks[i] if t.well_id in ids)
    bar.close()
    flatfields, counts, means = {}, {}, {}
    for plate in sorted({p for p, _ in acc}):
        shapes = sorted((k for k in acc if k[0] == plate), key=lambda k: -acc[k].count)
        for other in shapes[1:]:  # wells whose fields differ from most of the plate's
            errors += [{"plate": t.plate, "well_id": t.well_id, "status": STATUS_ERROR,
                        "error": f"{t.where}: fields are {other[1]}, most wells of the plate {shapes[0][1]}"}
                       for t in wells_of[other]]
        a = acc[shapes[0]]
        means[plate] = a.mean.astype(np.float32)
        mean = a.mean - params.dark_offset
        flatfields[plate] = np.stack([
            flatfield_from_mean(mean[c], params.flatfield_percentile, params.flatfield_size,
                                params.flatfield_sigma, params.flatfield_method) + np.float32(params.dark_offset)
            for c in range(mean.shape[0])])
        counts[plate] = a.count
    return flatfields, counts, errors, means


def well_group_sums(tasks: Sequence[WellTask]) -> tuple[dict, list[dict]]:
    """Per-channel field sums (float64) of wells of one plate, grouped by field shape.

    Returns ``({shape: (sum, n_fields, well_ids)}, error_rows)``; an unreadable file becomes an
    error row naming the file and well.
    """
    groups: dict[tuple, list] = {}
    errors = []
    for t in tasks:
        try:
            sums, k = well_channel_sums(t)
        except Exception as e:  # noqa: BLE001 - reported with the file and well
            msg = str(e) if t.image_path in str(e) else f"{t.where}: {type(e).__name__}: {e}"
            errors.append({"plate": t.plate, "well_id": t.well_id, "status": STATUS_ERROR, "error": msg})
            continue
        g = groups.setdefault(sums.shape, [None, 0, []])
        g[0] = sums if g[0] is None else g[0] + sums
        g[1] += k
        g[2].append(t.well_id)
    return {k: tuple(v) for k, v in groups.items()}, errors


def estimate_tile_scale(tasks: Sequence[WellTask], flatfields: dict[str, np.ndarray] | None,
                        params: ImagingParams, seed: int = 0) -> np.ndarray:
    """Per-channel tile scale: the ``scale_quantile`` of corrected intensities of sampled wells."""
    rng = np.random.default_rng(seed)
    by_plate: dict[str, list[WellTask]] = {}
    for t in tasks:
        by_plate.setdefault(t.plate, []).append(t)
    samples = []
    for plate, ts in sorted(by_plate.items()):
        pick = rng.choice(len(ts), size=min(params.scale_wells_per_plate, len(ts)), replace=False)
        for j in sorted(pick):
            try:
                w = _read_well(ts[j])
            except LayoutError:
                continue  # reported by the per-well pass
            f = w.fields[:1].astype(np.float32)
            if not np.isfinite(f).all():
                continue  # NaN or inf pixels: reported by the per-well pass
            if flatfields is not None:
                if f.shape[1:] != flatfields[plate].shape:
                    continue
                f = (f - params.dark_offset) / (flatfields[plate] - params.dark_offset)
            samples.append(f)
    if not samples:
        raise ImagingError("no readable well to estimate the tile intensity scale from")
    return intensity_scale(np.concatenate(samples), params.scale_quantile)


# --------------------------------------------------------------------------------------------
# the whole step
# --------------------------------------------------------------------------------------------
@dataclass
class PreprocessResult:
    """What :func:`preprocess_images` did and wrote."""

    out_dir: Path
    store_dir: Path
    status: pd.DataFrame
    flatfields: dict[str, np.ndarray]
    scale: np.ndarray
    params: ImagingParams
    corrected: bool
    seconds: dict[str, float]
    paths: dict[str, Path]

    @property
    def n_processed(self) -> int:
        return int((~self.status["skipped"]).sum())


def preprocess_images(profile: str | Profile = "quick", data_root: str | os.PathLike | None = None,
                      out_dir: str | os.PathLike | None = None, scheduler: str | None = None,
                      n_workers: int | None = None, params: ImagingParams | None = None, keep_shards: bool = False,
                      on_error: str = "raise", progress: bool = True) -> PreprocessResult:
    """Run the image preprocessing of notebook 20 over every well of a data root.

    Parameters
    ----------
    profile
        Profile name or object (imaging parameters; see :class:`ImagingParams`).
    data_root
        Data root (bucket layout); default :func:`i2o_utils.paths.data_dir`.
    out_dir
        Results folder; default ``results_dir("20_preprocess_images")``.
    scheduler
        ``None``: the profile's (``ImagingConfig.scheduler``); ``"local"``: a ``LocalCluster`` of
        ``n_workers`` single-threaded processes;
        ``"threads"``: one worker process with ``n_workers`` threads; ``"synchronous"``: in this
        process, no cluster; any other string: the address of a running dask scheduler.
    n_workers
        Workers of the local cluster (default: the profile's).
    params
        Override the profile's parameters.
    keep_shards
        Keep the per-well tile files once the store is assembled (default: delete them).
    on_error
        ``"raise"``: after every well was tried, raise :class:`ImagingError` listing the failed
        files and wells; ``"record"``: only record them in the status table.
    progress
        Progress bars over wells.
    """
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    prof = get_profile(profile) if isinstance(profile, str) else profile
    params = params or ImagingParams.from_profile(prof)
    scheduler = scheduler or prof.imaging.scheduler
    n_workers = int(n_workers or prof.imaging.n_workers)
    out = Path(out_dir) if out_dir is not None else results_dir(STEP)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    store_dir = out / "tilestore"
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    tasks, correct = plan_wells(data_root, work, tiles_dir=out / "TILES")
    bp = bucket_paths(data_root)
    cache.remove_partial_files([out, bp["icf"], bp["tiles"]])  # left by an interrupted run
    readable = [t for t in tasks if not t.broken]
    plates = {t.plate for t in readable}
    plate_inputs = {p: cache.files_fingerprint(t.image_path for t in readable if t.plate == p) for p in plates}
    runner = _Runner(scheduler, n_workers)
    try:
        # 1. flat fields
        t = time.perf_counter()
        ff_path = out / "flatfields.h5"
        flatfields, ff_errors = None, []
        if correct:
            flatfields = _load_flatfields(ff_path, plates, params, plate_inputs)
            if flatfields is None:
                flatfields, counts, ff_errors, means = estimate_plate_flatfields(readable, params, runner, progress)
                with atomic_path(ff_path) as tmp, h5py.File(tmp, "w") as f:
                    for p, ff in sorted(flatfields.items()):
                        g = f.create_group(p)
                        g.create_dataset("flatfield", data=ff)
                        g.create_dataset("mean", data=means[p])
                        g.attrs.update({**_ff_attrs(params), "n_images": counts[p], "channels": list(CHANNELS),
                                        "inputs": plate_inputs[p]})
        seconds["flatfield"] = time.perf_counter() - t
        # 2. tile scale (kept from an earlier run so that reused wells stay consistent)
        scale_path = out / "tile_scale.json"
        scale = None
        ff_keys = {p: cache.value_fingerprint(ff) for p, ff in (flatfields or {}).items()}
        scale_inputs = cache.fingerprint(files=sorted(plate_inputs.items()), flatfields=sorted(ff_keys.items()))
        if scale_path.exists():
            try:
                saved = json.loads(scale_path.read_text())
            except ValueError:
                saved = {}
            if saved.get("params") == _scale_params(params) and saved.get("inputs") == scale_inputs:
                scale = np.asarray(saved["scale"], np.float32)
        if scale is None:
            scale = estimate_tile_scale(readable, flatfields, params)
            with atomic_path(scale_path) as tmp:
                tmp.write_text(json.dumps({"params": _scale_params(params), "scale": scale.tolist(),
                                           "channels": list(CHANNELS), "inputs": scale_inputs}, indent=1))
        key = params.key(scale)
        tasks = [replace(tk, inputs_key=cache.fingerprint(
            file=cache.file_fingerprint(tk.image_path), flatfield=ff_keys.get(tk.plate), metadata=tk.metadata))
            for tk in tasks]
        # 3. per-well processing, skipping wells that verify
        t = time.perf_counter()
        try:
            store = TileStore(store_dir, allow_failed=True)
        except Exception:  # noqa: BLE001 - no usable store yet
            store = None
        failed_ff = {(e["plate"], e["well_id"]): e for e in ff_errors}
        failed_ff.update({(t.plate, t.well_id): {"error": t.broken} for t in tasks if t.broken})
        rows: dict[int, dict] = {}
        todo = []
        for i, task in enumerate(tasks):
            if (task.plate, task.well_id) in failed_ff:
                rows[i] = {**_error_row(task), **failed_ff[(task.plate, task.well_id)]}
                continue
            done = verify_well(task, key, store)
            if done is not None:
                rows[i] = {**done, "skipped": True}
            else:
                todo.append(i)
        if store is not None:
            store.close()
        ff_of = {p: runner.scatter(ff) for p, ff in (flatfields or {}).items()}
        todo_tasks = [tasks[i] for i in todo]
        for j, res in runner.map(process_well, todo_tasks, scale, params, desc="wells", progress=progress,
                                 arg_of=lambda tk: (ff_of.get(tk.plate),)):
            rows[todo[j]] = {**res, "skipped": False}
        seconds["wells"] = time.perf_counter() - t
    finally:
        runner.close()
    status = pd.DataFrame([rows[i] for i in range(len(tasks))])
    status["skipped"] = status["skipped"].fillna(False).astype(bool)
    for col in ("n_fields", "n_nuclei", "n_tiles", "n_dropped_border"):
        status[col] = status[col].fillna(0).astype(int)
    meta_cols = sorted({k for tk in tasks for k in tk.metadata})
    for c in meta_cols:
        status[c] = [tk.metadata.get(c) for tk in tasks]
    status["file"] = [tk.image_path for tk in tasks]
    for c in ("notes", "error"):
        status[c] = status[c].fillna("")
    layout.write_csv_atomic(status, out / "wells_status.csv")
    failed = status[status["status"] == STATUS_ERROR]

    # 4. assembly (plates whose wells all finished)
    t = time.perf_counter()
    paths = assemble_outputs(tasks, status, store_dir, out, params, scale, keep_shards, progress, on_error)
    seconds["assembly"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    paths.update({"flatfields": out / "flatfields.h5", "status": out / "wells_status.csv",
                  "tile_scale": scale_path,
                  "tiles": Path(tasks[0].tiles_path).parent if tasks else bucket_paths(data_root)["tiles"]})
    if failed.shape[0] and on_error == "raise":
        lines = "\n".join(f"  {e}" for e in failed["error"])
        raise ImagingError(f"{len(failed)} well(s) failed (the others were processed and are kept; "
                           f"a re-run retries only these):\n{lines}")
    return PreprocessResult(out_dir=out, store_dir=store_dir, status=status,
                            flatfields=read_flatfields(out / "flatfields.h5") if correct else {},
                            scale=scale, params=params, corrected=correct, seconds=seconds, paths=paths)


def left_out_wells(status: pd.DataFrame) -> list[dict]:
    """The wells without tiles and why (recorded in the tile store for the notebooks that use it)."""
    out = []
    for r in status[(status["status"] != STATUS_OK) | (status["n_tiles"] == 0)].itertuples(index=False):
        if r.status == STATUS_ERROR:
            why = f"error: {r.error}"
        elif r.status == STATUS_NO_NUCLEI:
            why = "no nuclei found" + (f" ({r.notes})" if r.notes else "")
        else:
            why = f"{r.n_nuclei} nuclei, all too close to the border for a tile"
        out.append({"plate": r.plate, "well_id": r.well_id, "status": r.status, "reason": why})
    return out


def _previous_layout(path: Path) -> dict[str, tuple[int, int]]:
    """well -> (start, n) of an existing plate file, from its ``layout`` attribute."""
    if not path.exists():
        return {}
    try:
        with h5py.File(path, "r") as f:
            plan = json.loads(f.attrs["layout"])["wells"]
    except (OSError, KeyError, ValueError):
        return {}
    out, start = {}, 0
    for w, n in plan:
        out[w] = (start, int(n))
        start += int(n)
    return out


def _scale_params(params: ImagingParams) -> dict:
    return {"quantile": params.scale_quantile, "wells_per_plate": params.scale_wells_per_plate,
            **_ff_attrs(params)}


def _error_row(task: WellTask) -> dict:
    return {"plate": task.plate, "well_id": task.well_id, "status": STATUS_ERROR, "n_fields": 0,
            "n_nuclei": 0, "n_tiles": 0, "n_dropped_border": 0, "notes": "", "error": "",
            "seconds": 0.0, "params_key": "", "skipped": False}


def assemble_outputs(tasks: Sequence[WellTask], status: pd.DataFrame, store_dir: Path, out: Path,
                     params: ImagingParams, scale: np.ndarray, keep_shards: bool = False,
                     progress: bool = True, on_error: str = "record") -> dict[str, Path]:
    """Build the tile store and the feature tables from the per-well outputs.

    A plate whose array already holds exactly its wells' tiles is not rewritten. With
    ``on_error="raise"`` and failed wells, the store is marked as failed (:class:`TileStore`
    refuses it; the next run reuses it) and no feature table is published.
    """
    stop = on_error == "raise" and bool((status["status"] == STATUS_ERROR).any())
    done = [(t, r) for t, (_, r) in zip(tasks, status.iterrows()) if r["status"] != STATUS_ERROR]
    by_plate: dict[str, list] = {}
    for t, r in done:
        by_plate.setdefault(t.plate, []).append((t, r))
    plate_files, well_rows = {}, []
    for plate, items in tqdm(sorted(by_plate.items()), desc="tile store", unit="plate", disable=not progress):
        rel = f"plates/{plate}.h5"
        path = store_dir / rel
        plan = [(t.well_id, int(r["n_tiles"])) for t, r in items if int(r["n_tiles"]) > 0]
        layout_json = json.dumps({"wells": plan, "key": params.key(scale),
                                  "inputs": cache.value_fingerprint([r.get("inputs_key", "") for _, r in items])})
        current = None
        if path.exists():
            try:
                with h5py.File(path, "r") as f:
                    current = f.attrs.get("layout")
            except OSError:
                current = None
        if current != layout_json:
            n_total = sum(n for _, n in plan)
            shard_of = {t.well_id: Path(t.shard_path) for t, _ in items}
            placed = _previous_layout(path)

            def well_tiles():
                for w, n in plan:
                    if shard_of[w].exists():
                        yield w, np.load(shard_of[w])
                    elif w in placed and placed[w][1] == n:  # shard removed after an earlier assembly
                        with h5py.File(path, "r") as f:
                            yield w, f["tiles"][placed[w][0]:placed[w][0] + n]
                    else:
                        raise ImagingError(f"{shard_of[w]}: the tiles of plate {plate}, well {w} are "
                                           "missing; delete its done-marker to reprocess the well")

            write_plate_tiles(path, well_tiles(), n_total, params.tile_size, params.tile_dtype,
                              attrs={"layout": layout_json})
        plate_files[plate] = rel
        start = 0
        for t, r in items:
            n = int(r["n_tiles"])
            well_rows.append({"plate": t.plate, "well_id": t.well_id, "target": t.metadata.get("target"),
                              "cell_state": t.metadata.get("cell_state"), "n_tiles": n, "start": start,
                              **{k: v for k, v in t.metadata.items() if k not in ("target", "cell_state")}})
            start += n
    cells = [pd.read_parquet(t.cells_path) for t, _ in done if Path(t.cells_path).exists()]
    cells = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame()
    index = pd.DataFrame(columns=["plate", "well_id", "fov", "row", "col", "r0", "c0", "i"])
    if len(cells):
        tiled = cells[cells["Metadata_TileNumber"] >= 0]
        wells_df = pd.DataFrame(well_rows)
        starts = wells_df.set_index(["plate", "well_id"])["start"]
        st = starts.reindex(pd.MultiIndex.from_arrays([tiled["Metadata_Plate"], tiled["Metadata_Well"]])).to_numpy()
        index = pd.DataFrame({
            "plate": tiled["Metadata_Plate"].to_numpy(), "well_id": tiled["Metadata_Well"].to_numpy(),
            "fov": tiled["Metadata_Field"].to_numpy(), "row": tiled["Metadata_CentreRow"].to_numpy(),
            "col": tiled["Metadata_CentreCol"].to_numpy(), "r0": tiled["Metadata_TileRow0"].to_numpy(),
            "c0": tiled["Metadata_TileCol0"].to_numpy(),
            "i": st + tiled["Metadata_TileNumber"].to_numpy()}).sort_values(["plate", "i"]).reset_index(drop=True)
    finalise_store(store_dir, pd.DataFrame(well_rows, columns=None if well_rows else list(
        ("plate", "well_id", "target", "cell_state", "n_tiles", "start"))), index, plate_files,
        params.tile_size, params.tile_dtype, scale, CHANNELS,
        extra={"border": params.border, "nucleus_diameter_px": params.nucleus_diameter_px,
               "params_key": params.key(scale), "left_out": left_out_wells(status),
               "failed_wells": int((status["status"] == STATUS_ERROR).sum()) if on_error == "raise" else 0})
    paths = {"store": store_dir}
    if stop:
        for name in ("features_cells.parquet", "features_wells.parquet"):
            (out / name).unlink(missing_ok=True)
    elif len(cells):
        with atomic_path(out / "features_cells.parquet") as tmp:
            cells.to_parquet(tmp, index=False)
        wells_feat = aggregate_wells(cells)
        with atomic_path(out / "features_wells.parquet") as tmp:
            wells_feat.to_parquet(tmp, index=False)
        paths.update({"features_cells": out / "features_cells.parquet",
                      "features_wells": out / "features_wells.parquet"})
    if not keep_shards:
        for t, _ in done:
            Path(t.shard_path).unlink(missing_ok=True)
    return paths


# --------------------------------------------------------------------------------------------
# reading results back (figures and checks of notebook 20)
# --------------------------------------------------------------------------------------------
def _status_table(result: "PreprocessResult | pd.DataFrame") -> pd.DataFrame:
    return result.status if isinstance(result, PreprocessResult) else result


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
        row = sel.iloc[len(sel) // 2]
    else:
        hit = st[(st["well_id"] == well_id) & ((st["plate"] == plate) if plate else True)]
        if hit.empty:
            raise ImagingError(f"no well {well_id} on plate {plate}")
        row = hit.iloc[0]
    w = layout.read_well_images(row["file"], fields=[fov])
    raw = w.fields[0]
    if result.corrected:
        ff = result.flatfields[row["plate"]]
        d = np.float32(result.params.dark_offset)
        corrected = correct_image(raw.astype(np.float32) - d, ff - d)
    else:
        corrected = raw.astype(np.float32)
    cells = pd.read_parquet(result.paths["features_cells"], filters=[("Metadata_Plate", "==", row["plate"]),
                                                                      ("Metadata_Well", "==", row["well_id"])])
    cells = cells[cells["Metadata_Field"] == fov]
    centres = cells[["Metadata_CentreRow", "Metadata_CentreCol"]].to_numpy()
    tiled = cells[cells["Metadata_TileNumber"] >= 0]
    corners = tiled[["Metadata_TileRow0", "Metadata_TileCol0"]].to_numpy()
    store = TileStore(result.store_dir)
    k = np.flatnonzero((store.wells["plate"] == row["plate"]).to_numpy() & (store.wells["well_id"] == row["well_id"]).to_numpy())
    tiles = np.zeros((0, 3, result.params.tile_size, result.params.tile_size), np.float32)
    if len(k) and len(tiled):
        tiles = store.to_float(store.read_tiles(int(k[0]), tiled["Metadata_TileNumber"].to_numpy()))
    store.close()
    truth = None
    tpath = bucket_paths(data_root)["simulation"] / "nuclei_truth.parquet"
    if tpath.exists():
        t = pd.read_parquet(tpath)
        t = t[(t["plate"] == row["plate"]) & (t["well_id"] == row["well_id"]) & (t["fov"] == fov)]
        truth = t[["y", "x"]].to_numpy()
    return {"plate": row["plate"], "well_id": row["well_id"], "fov": fov, "raw": raw, "corrected": corrected,
            "centres": centres, "corners": corners, "tiles": tiles, "truth": truth,
            "target": row.get("target"), "cell_state": row.get("cell_state")}


def control_fields(result: PreprocessResult, target: str = "NT", fov: int = 0) -> dict[str, np.ndarray]:
    """A corrected field of one ``target`` well (the one with the most tiles) per stimulus."""
    st = result.status
    if "cell_state" not in st or "target" not in st:
        raise ImagingError("the status table has no target / cell_state columns (metadata missing)")
    out = {}
    for stim, g in st[(st["target"] == target) & (st["status"] != STATUS_ERROR)].groupby("cell_state"):
        row = g.sort_values("n_tiles").iloc[-1]
        raw = layout.read_well_images(row["file"], fields=[fov]).fields[0]
        if result.corrected:
            d = np.float32(result.params.dark_offset)
            out[stim] = correct_image(raw.astype(np.float32) - d, result.flatfields[row["plate"]] - d)
        else:
            out[stim] = raw.astype(np.float32)
    return out


def nuclei_accuracy(cells: pd.DataFrame, truth: pd.DataFrame, status: pd.DataFrame,
                    radius: float) -> pd.DataFrame:
    """Precision, recall and F1 of the detected nuclei against true centres, per plate and overall.

    Parameters
    ----------
    cells
        ``features_cells`` table (``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Field``,
        ``Metadata_CentreRow``, ``Metadata_CentreCol``).
    truth
        ``simulation/nuclei_truth.parquet`` (plate, well_id, fov, y, x).
    status
        Wells status table: only fields of processed wells (not errors) are scored.
    radius
        Matching radius in pixels (half a nucleus diameter).
    """
    from i2o_utils.imaging.nuclei import detection_scores, sum_scores

    done = status[status["status"] != STATUS_ERROR][["plate", "well_id", "n_fields"]]
    det = {k: g[["Metadata_CentreRow", "Metadata_CentreCol"]].to_numpy()
           for k, g in cells.groupby(["Metadata_Plate", "Metadata_Well", "Metadata_Field"])}
    tru = {k: g[["y", "x"]].to_numpy() for k, g in truth.groupby(["plate", "well_id", "fov"])}
    per_plate: dict[str, list] = {}
    for r in done.itertuples(index=False):
        for f in range(int(r.n_fields)):
            k = (r.plate, r.well_id, f)
            s = detection_scores(det.get(k, np.zeros((0, 2))), tru.get(k, np.zeros((0, 2))), radius)
            per_plate.setdefault(r.plate, []).append(s)
    rows = [{"plate": p, "fields": len(v), **sum_scores(v)} for p, v in sorted(per_plate.items())]
    allv = [s for v in per_plate.values() for s in v]
    rows.append({"plate": "all", "fields": len(allv), **sum_scores(allv)})
    return pd.DataFrame(rows)


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


def nuclei_accuracy_against_truth(result: PreprocessResult, data_root: str | os.PathLike | None = None,
                                  radius: float | None = None) -> pd.DataFrame | None:
    """:func:`nuclei_accuracy` against ``simulation/nuclei_truth.parquet``; ``None`` without truth.

    The matching radius defaults to half a nucleus diameter.
    """
    tpath = bucket_paths(data_root)["simulation"] / "nuclei_truth.parquet"
    if not tpath.exists() or "features_cells" not in result.paths:
        return None
    cells = pd.read_parquet(result.paths["features_cells"],
                            columns=["Metadata_Plate", "Metadata_Well", "Metadata_Field",
                                     "Metadata_CentreRow", "Metadata_CentreCol"])
    r = radius if radius is not None else result.params.nucleus_diameter_px / 2
    return nuclei_accuracy(cells, pd.read_parquet(tpath), result.status, r)
