"""The wells of notebook 20's step: one :class:`WellTask` per image file, with its outputs' paths.

Images come from ``data/RAW`` (a simulated screen: corrected here, ICF and TILES written to
``data/ICF`` and ``data/TILES``) or, when there is no RAW folder, from ``data/ICF`` (real data,
already corrected). Files fetched from a source are never written: with ICF input the project's
own TILES files go to the results folder, never over the bucket's ``data/TILES``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from i2o_utils.data import layout
from i2o_utils.data.layout import LayoutError
from i2o_utils.paths import bucket_paths


@dataclass(frozen=True)
class WellTask:
    """One well: where its image file is and where each of its outputs goes."""

    plate: str
    well_id: str
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


def sibling_name(name: str, prefix: str) -> str:
    """The name of a well's file of another kind: ``RAW.X1.Y2...h5`` -> ``ICF.X1.Y2...h5``.

    The authors' prefix is replaced (:func:`i2o_utils.data.layout.parse_image_file_name`); a name
    not of the authors' form gets ``prefix.`` in front.
    """
    m = layout.parse_image_file_name(name)
    return prefix + name[len(m["prefix"]):] if m else f"{prefix}.{name}"


def plan_wells(data_root: str | os.PathLike | None, work_dir: str | os.PathLike) -> tuple[list[WellTask], bool]:
    """The wells to process and whether their images need flat-field correction.

    With ICF input, TILES files go to ``<work_dir>/../TILES``, i.e. the results folder.

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
    meta = layout.read_metadata(bp["metadata"])
    # metadata.csv names a plate by PLATE_ID, the part of the images' PLATE_BARCODE after its underscore
    index["PLATE_ID"] = [layout.plate_id(b, where=p) if not e else b.rpartition("_")[2]
                         for b, p, e in zip(index["plate"], index["path"], index["error"])]
    meta = meta.drop(columns=[c for c in ("plate", "plate_barcode") if c in meta.columns])
    extra = [c for c in meta.columns if c not in ("PLATE_ID", "well_id", "ROW", "COLUMN")]
    merged = index.merge(meta, on=["PLATE_ID", "well_id"], how="left", indicator=True, suffixes=("", "_meta"))
    missing = merged.loc[(merged["_merge"] == "left_only") & (merged["error"] == "")]
    if len(missing):
        r = missing.iloc[0]
        raise LayoutError(f"{r['path']} (plate {r['plate']}, well {r['well_id']}): no row in "
                          f"{bp['metadata']} ({len(missing)} well file(s) without metadata)")
    merged = merged.sort_values(["plate", "row", "column"]).reset_index(drop=True)
    work = Path(work_dir)
    own_tiles = bp["tiles"] if correct else work.parent / "TILES"
    tasks = []
    for r in merged.itertuples(index=False):
        name = Path(r.path).name
        icf_path = bp["icf"] / sibling_name(name, "ICF") if correct else Path(r.path)
        tasks.append(WellTask(
            plate=str(r.plate), well_id=str(r.well_id), image_path=str(r.path), icf_path=str(icf_path) if correct else None,
            tiles_path=str(own_tiles / sibling_name(name, "TILES")),
            input_pointer=str(Path(icf_path).resolve()),
            shard_path=str(work / "tiles" / r.plate / f"{r.well_id}.npy"),
            cells_path=str(work / "cells" / r.plate / f"{r.well_id}.parquet"),
            marker_path=str(work / "done" / r.plate / f"{r.well_id}.json"),
            metadata={c: _plain(getattr(r, c)) for c in extra if c in merged.columns}, broken=r.error,
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
