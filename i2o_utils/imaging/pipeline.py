"""Image preprocessing of a whole screen: flat fields, corrected images, nuclei, tiles, features.

:func:`preprocess_images` runs, over the per-well image files of a data root
(:func:`~i2o_utils.imaging.plan.plan_wells`):

1. **Flat fields** per plate and channel (:mod:`~i2o_utils.imaging.flatfield`), from running
   means to which workers add the fields of a few wells at a time.
2. **Tile intensity scale** per channel (the store's uint8/uint16 scaling): the 99.9th
   percentile of corrected intensities over a few sampled wells of every plate.
3. **Per-well processing**, :func:`~i2o_utils.imaging.well.process_well` (correction, nuclei,
   tiles, features), mapped over wells by :class:`~i2o_utils.imaging.runner.Runner`: a dask
   ``LocalCluster`` by default, a scheduler at an address with no code change, or in-process.
4. **Assembly** of the tile store (one array per plate), ``features_cells.parquet``,
   ``features_wells.parquet`` and ``wells_status.csv``.

Resumable, and never stale: every cached result records a fingerprint of what it was computed
from (:mod:`i2o_utils.cache`). The flat fields of a plate are reused only while its image files
(size and modification time of each) and the parameters are unchanged; the tile scale only while
those files and the flat fields are; a well is skipped only when its outputs exist and verify
(:func:`~i2o_utils.imaging.well.verify_well`) and its image file, its plate's flat field, its
metadata row and the parameters are unchanged. Anything else is recomputed. Leftover temporary
files of an interrupted run are removed first. Bad input stops the run with the file and well
named: two files claiming one well, NaN or infinite pixels, an unreadable file or one with
out-of-range attributes. Failures are collected per well with the file and well named; a well
without nuclei is recorded (status ``no_nuclei``) and is not an error. When the data root holds
``data/ICF`` only (real data, already corrected), step 1 and the ICF writing are skipped and
tiles come from ICF.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from i2o_utils import cache
from i2o_utils.config import CHANNELS, ImagingConfig, Profile, get_profile
from i2o_utils.data import layout
from i2o_utils.data.layout import LayoutError, atomic_path
from i2o_utils.imaging.features import aggregate_wells
from i2o_utils.imaging.flatfield import MeanAccumulator, flatfield_from_mean
from i2o_utils.imaging.plan import WellTask, plan_wells
from i2o_utils.imaging.runner import Runner
from i2o_utils.imaging.tiles import intensity_scale
from i2o_utils.imaging.tilestore import INDEX_COLUMNS, WELL_COLUMNS, TileStore, finalise_store, write_plate_tiles
from i2o_utils.imaging.well import (STATUS_ERROR, STATUS_NO_NUCLEI, STATUS_OK, params_key, plate_sums,
                                    process_well, read_well, status_row, verify_well)
from i2o_utils.paths import bucket_paths, results_dir

log = logging.getLogger(__name__)

STEP = "20_preprocess_images"


class ImagingError(RuntimeError):
    """One or more wells failed; the message names each file and well."""


@dataclass
class PreprocessResult:
    """What :func:`preprocess_images` did and wrote."""

    out_dir: Path
    store_dir: Path
    status: pd.DataFrame
    flatfields: dict[str, np.ndarray]
    scale: np.ndarray
    params: ImagingConfig
    corrected: bool
    seconds: dict[str, float]
    paths: dict[str, Path]

    @property
    def n_processed(self) -> int:
        return int((~self.status["skipped"]).sum())


def preprocess_images(profile: str | Profile = "quick", data_root: str | os.PathLike | None = None,
                      out_dir: str | os.PathLike | None = None, scheduler: str | None = None,
                      n_workers: int | None = None, params: ImagingConfig | None = None, on_error: str = "raise",
                      progress: bool = True) -> PreprocessResult:
    """Run the image preprocessing of notebook 20 over every well of a data root.

    Parameters
    ----------
    profile
        Profile name or object (its :class:`~i2o_utils.config.ImagingConfig`).
    data_root
        Data root (bucket layout); default :func:`i2o_utils.paths.data_dir`.
    out_dir
        Results folder; default ``results_dir("20_preprocess_images")``.
    scheduler
        ``None``: the profile's; else see :mod:`~i2o_utils.imaging.runner`.
    n_workers
        Workers of the local cluster (default: the profile's).
    params
        Override the profile's imaging parameters (sizes left at ``None`` come from its screen).
    on_error
        ``"raise"``: after every well was tried, raise :class:`ImagingError` listing the failed
        files and wells; ``"record"``: only record them in the status table.
    progress
        Progress bars over wells.
    """
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    prof = get_profile(profile) if isinstance(profile, str) else profile
    params = (params or prof.imaging).resolved(prof.screen)
    out = Path(out_dir) if out_dir is not None else results_dir(STEP)
    out.mkdir(parents=True, exist_ok=True)
    work, store_dir = out / "work", out / "tilestore"
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    tasks, correct = plan_wells(data_root, work)
    bp = bucket_paths(data_root)
    cache.remove_partial_files([out, bp["icf"], bp["tiles"]])  # left by an interrupted run
    readable = [t for t in tasks if not t.broken]
    plate_inputs = {p: cache.files_fingerprint(t.image_path for t in readable if t.plate == p)
                    for p in {t.plate for t in readable}}
    with Runner(scheduler or params.scheduler, int(n_workers or params.n_workers)) as runner:
        t = time.perf_counter()
        flatfields, ff_errors = (_plate_flatfields(out / "flatfields.h5", readable, params, runner, plate_inputs,
                                                   progress) if correct else (None, []))
        seconds["flatfield"] = time.perf_counter() - t
        ff_keys = {p: cache.value_fingerprint(ff) for p, ff in (flatfields or {}).items()}
        scale = _tile_scale(out / "tile_scale.json", readable, flatfields, params,
                            cache.fingerprint(files=sorted(plate_inputs.items()), flatfields=sorted(ff_keys.items())))
        key = params_key(params, scale)
        tasks = [replace(tk, inputs_key=cache.fingerprint(
            file=cache.file_fingerprint(tk.image_path), flatfield=ff_keys.get(tk.plate), metadata=tk.metadata))
            for tk in tasks]
        # per-well processing, skipping wells that verify
        t = time.perf_counter()
        try:
            store = TileStore(store_dir, allow_failed=True)
        except Exception:  # noqa: BLE001 - no usable store yet
            store = None
        failed = {(e["plate"], e["well_id"]): e for e in ff_errors}
        failed.update({(tk.plate, tk.well_id): {"error": tk.broken} for tk in tasks if tk.broken})
        rows: dict[int, dict] = {}
        for i, task in enumerate(tasks):
            k = (task.plate, task.well_id)
            if k in failed:
                rows[i] = {**status_row(task), "skipped": False, **failed[k]}
            elif (done := verify_well(task, key, store)) is not None:
                rows[i] = {**done, "skipped": True}
        todo = [i for i in range(len(tasks)) if i not in rows]
        todo_plates = {tasks[i].plate for i in todo}
        ff_of = {p: runner.scatter(ff) for p, ff in (flatfields or {}).items() if p in todo_plates}
        calls = [(tasks[i], ff_of.get(tasks[i].plate), scale, params) for i in todo]
        for j, res in tqdm(runner.map(process_well, calls), total=len(calls), desc="wells", unit="well",
                           disable=not progress):
            rows[todo[j]] = {**res, "skipped": False}
        seconds["wells"] = time.perf_counter() - t
    status = pd.DataFrame([rows[i] for i in range(len(tasks))])  # every row is a full status_row
    for c in sorted({k for tk in tasks for k in tk.metadata}):
        status[c] = [tk.metadata.get(c) for tk in tasks]
    status["file"] = [tk.image_path for tk in tasks]
    layout.write_csv_atomic(status, out / "wells_status.csv")
    t = time.perf_counter()
    paths = assemble_outputs(tasks, status, store_dir, out, params, scale, progress, on_error)
    seconds["assembly"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    paths.update({"flatfields": out / "flatfields.h5", "status": out / "wells_status.csv",
                  "tile_scale": out / "tile_scale.json",
                  "tiles": Path(tasks[0].tiles_path).parent if tasks else bp["tiles"]})
    errors = status.loc[status["status"] == STATUS_ERROR, "error"]
    if len(errors) and on_error == "raise":
        lines = "\n".join(f"  {e}" for e in errors)
        raise ImagingError(f"{len(errors)} well(s) failed (the others were processed and are kept; "
                           f"a re-run retries only these):\n{lines}")
    return PreprocessResult(out_dir=out, store_dir=store_dir, status=status,
                            flatfields=dict(sorted((flatfields or {}).items())), scale=scale, params=params,
                            corrected=correct, seconds=seconds, paths=paths)


# --------------------------------------------------------------------------------------------
# flat fields and tile scale, each cached with the fingerprint of its inputs
# --------------------------------------------------------------------------------------------
def _ff_attrs(params: ImagingConfig) -> dict:
    return {"percentile": params.flatfield_percentile, "size": params.flatfield_size,
            "sigma": params.flatfield_sigma, "method": params.flatfield_method,
            "dark_offset": params.dark_offset}


def _plate_flatfields(path: Path, tasks: Sequence[WellTask], params: ImagingConfig, runner: Runner,
                      inputs: dict[str, str], progress: bool, wells_per_task: int = 16) -> tuple[dict, list[dict]]:
    """The flat field of each plate (``(3, H, W)``) and the error rows of unreadable wells.

    The flat fields saved at ``path`` are reused if they were computed with these parameters from
    these inputs (plate -> fingerprint of its image files); else they are estimated and saved.
    Workers sum the fields of up to ``wells_per_task`` wells of one plate; the sums are added to
    the plate's running mean as they arrive. Wells whose fields differ in shape from most of
    their plate's are left out (and fail in :func:`~i2o_utils.imaging.well.process_well`, named).
    """
    try:
        with h5py.File(path, "r") as f:
            if set(f.keys()) == set(inputs) and all(
                    all(f[p].attrs.get(k) == v for k, v in _ff_attrs(params).items())
                    and f[p].attrs.get("inputs") == inputs[p] for p in inputs):
                return {p: f[p]["flatfield"][()] for p in inputs}, []
            log.info("%s: the images or parameters changed since the flat fields were computed; recomputing", path)
    except OSError:  # none yet, or unreadable
        pass
    chunks: list[list[WellTask]] = []
    for _, group in groupby(tasks, key=attrgetter("plate")):
        group = list(group)
        chunks += [group[i:i + wells_per_task] for i in range(0, len(group), wells_per_task)]
    acc: dict[tuple, MeanAccumulator] = {}  # (plate, field shape) -> running sum
    errors = []
    with tqdm(total=len(tasks), desc="plate means", unit="well", disable=not progress) as bar:
        for i, (groups, errs) in runner.map(plate_sums, [(c,) for c in chunks]):
            errors += errs
            bar.update(len(chunks[i]))
            for shape, part in groups.items():
                acc.setdefault((chunks[i][0].plate, shape), MeanAccumulator()).merge(part)
    # per plate, the running sum of the field shape that most of its fields have
    best = {plate: max((a for (p, _), a in acc.items() if p == plate), key=lambda a: a.count)
            for plate in sorted({p for p, _ in acc})}
    d = params.dark_offset
    flatfields = {plate: np.stack([
        flatfield_from_mean(m, params.flatfield_percentile, params.flatfield_size, params.flatfield_sigma,
                            params.flatfield_method) + np.float32(d) for m in a.mean - d]) for plate, a in best.items()}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for p, a in best.items():
            g = f.create_group(p)
            g.create_dataset("flatfield", data=flatfields[p])
            g.create_dataset("mean", data=a.mean.astype(np.float32))
            g.attrs.update({**_ff_attrs(params), "n_images": a.count, "channels": list(CHANNELS),
                            "inputs": inputs[p]})
    return flatfields, errors


def _tile_scale(path: Path, tasks: Sequence[WellTask], flatfields: dict | None, params: ImagingConfig,
                inputs: str) -> np.ndarray:
    """Per-channel tile scale: the ``scale_quantile`` of the corrected intensities of field 0 of up to
    ``scale_wells_per_plate`` wells drawn from each plate. The scale saved at ``path`` is reused if
    computed with these parameters from these inputs (so that reused wells stay consistent)."""
    settings = {"quantile": params.scale_quantile, "wells_per_plate": params.scale_wells_per_plate,
                **_ff_attrs(params)}
    try:
        saved = json.loads(path.read_text())
        if saved.get("params") == settings and saved.get("inputs") == inputs:
            return np.asarray(saved["scale"], np.float32)
    except (OSError, ValueError):
        pass
    rng = np.random.default_rng(0)
    samples = []
    for plate, ts in groupby(sorted(tasks, key=attrgetter("plate")), key=attrgetter("plate")):
        ts = list(ts)
        pick = rng.choice(len(ts), size=min(params.scale_wells_per_plate, len(ts)), replace=False)
        for j in sorted(pick):
            try:
                f = read_well(ts[j], fields=[0]).fields.astype(np.float32)
            except LayoutError:
                continue  # reported by the per-well pass
            if not np.isfinite(f).all():
                continue  # NaN or inf pixels: reported by the per-well pass
            if flatfields is not None:
                if f.shape[1:] != flatfields[plate].shape:
                    continue
                f = (f - params.dark_offset) / (flatfields[plate] - params.dark_offset)
            samples.append(f)
    if not samples:
        raise ImagingError("no readable well to estimate the tile intensity scale from")
    scale = intensity_scale(np.concatenate(samples), params.scale_quantile)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"params": settings, "scale": scale.tolist(),
                                   "channels": list(CHANNELS), "inputs": inputs}, indent=1))
    return scale


# --------------------------------------------------------------------------------------------
# assembly
# --------------------------------------------------------------------------------------------
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


def _stored_layout(path: Path) -> tuple[str | None, dict[str, tuple[int, int]]]:
    """The ``layout`` attribute of an existing plate file and its wells' ``(start, n)``."""
    try:
        with h5py.File(path, "r") as f:
            current = f.attrs.get("layout")
        plan = json.loads(current)["wells"]
    except (OSError, KeyError, TypeError, ValueError):
        return None, {}
    starts = np.cumsum([0] + [int(n) for _, n in plan])
    return current, {w: (int(s), int(n)) for (w, n), s in zip(plan, starts)}


def assemble_outputs(tasks: Sequence[WellTask], status: pd.DataFrame, store_dir: Path, out: Path,
                     params: ImagingConfig, scale: np.ndarray, progress: bool = True,
                     on_error: str = "record") -> dict[str, Path]:
    """Build the tile store and the feature tables from the per-well outputs (then delete the wells'
    tile files).

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
        path = store_dir / f"plates/{plate}.h5"
        plan = [(t.well_id, int(r["n_tiles"])) for t, r in items if int(r["n_tiles"]) > 0]
        layout_json = json.dumps({"wells": plan, "key": params_key(params, scale),
                                  "inputs": cache.value_fingerprint([r.get("inputs_key", "") for _, r in items])})
        current, placed = _stored_layout(path)
        if current != layout_json:
            shard_of = {t.well_id: Path(t.shard_path) for t, _ in items}

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

            write_plate_tiles(path, well_tiles(), sum(n for _, n in plan), params.tile_size, params.tile_dtype,
                              attrs={"layout": layout_json})
        plate_files[plate] = f"plates/{plate}.h5"
        start = 0
        for t, r in items:
            well_rows.append({"plate": t.plate, "well_id": t.well_id, "target": t.metadata.get("target"),
                              "cell_state": t.metadata.get("cell_state"), "n_tiles": int(r["n_tiles"]),
                              "start": start,
                              **{k: v for k, v in t.metadata.items() if k not in ("target", "cell_state")}})
            start += int(r["n_tiles"])
    cells = [pd.read_parquet(t.cells_path) for t, _ in done if Path(t.cells_path).exists()]
    cells = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame()
    index = pd.DataFrame(columns=INDEX_COLUMNS)
    wells = pd.DataFrame(well_rows) if well_rows else pd.DataFrame(columns=WELL_COLUMNS)
    if len(cells):
        tiled = cells[cells["Metadata_TileNumber"] >= 0]
        starts = wells.set_index(["plate", "well_id"])["start"].reindex(
            pd.MultiIndex.from_arrays([tiled["Metadata_Plate"], tiled["Metadata_Well"]])).to_numpy()
        cols = ["Metadata_Plate", "Metadata_Well", "Metadata_Field", "Metadata_CentreRow", "Metadata_CentreCol",
                "Metadata_TileRow0", "Metadata_TileCol0"]  # INDEX_COLUMNS but the row in the plate array, i
        index = (tiled[cols].set_axis(INDEX_COLUMNS[:-1], axis=1)
                 .assign(i=starts + tiled["Metadata_TileNumber"].to_numpy()).sort_values(["plate", "i"])
                 .reset_index(drop=True))
    finalise_store(store_dir, wells, index, plate_files, params.tile_size, params.tile_dtype, scale, CHANNELS,
                   extra={"border": params.border, "nucleus_diameter_px": params.nucleus_diameter_px,
                          "params_key": params_key(params, scale), "left_out": left_out_wells(status),
                          "failed_wells": int((status["status"] == STATUS_ERROR).sum()) if on_error == "raise" else 0})
    paths = {"store": store_dir}
    if stop:
        for name in ("features_cells.parquet", "features_wells.parquet"):
            (out / name).unlink(missing_ok=True)
    elif len(cells):
        for name, table in (("features_cells", cells), ("features_wells", aggregate_wells(cells))):
            with atomic_path(out / f"{name}.parquet") as tmp:
                table.to_parquet(tmp, index=False)
            paths[name] = out / f"{name}.parquet"
    for t, _ in done:  # the well's tiles are in the store now
        Path(t.shard_path).unlink(missing_ok=True)
    return paths
