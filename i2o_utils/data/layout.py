"""Read and write the authors' bucket layout (one reader for real and simulated data).

The layout (``s3://image2omics``), as the authors' published reader code expects it:

``data/ICF/<well>.h5`` (and ``data/RAW/<well>.h5`` for the simulated screen's uncorrected images)
    attrs ``PLATE_BARCODE``, ``ROW``, ``COLUMN``, ``PLANE``; one group per channel (see
    :data:`i2o_utils.config.CHANNELS`), each holding 2-D datasets ``fov_0`` ... ``fov_{F-1}``.
``data/TILES/<well>.h5``
    attrs ``ROW``, ``COLUMN``, ``PLANE`` (integers), ``PLATE_BARCODE`` (text) and ``INPUT_POINTER``
    (path of the image file, a fixed-length byte string: the authors' reader decodes it as UTF-8;
    written absolute, read relative or absolute, see :func:`resolve_input_pointer`); datasets ``fov_i``
    (tile corners in field ``i``), ``all_fovs/tile_coords`` (N x 2), ``all_fovs/fovs_indices``
    (N x 2: field, tile index within the field), ``all_fovs/well_coords`` (N x 2: the well's ROW
    and COLUMN on every row, as the authors' reader stacks them). A corner ``(r0, c0)`` indexes
    the field's first and second array axes: the tile is ``img[r0:r0+s, c0:c0+s]`` (the authors'
    reader slices ``img[x:x+s, y:y+s]`` with ``(x, y) = tile_coords[i]``).
``data/GT/{transcriptomics,proteomics}_{m1,m2}.csv``
    long format, the authors' column names exactly: ``plate_barcode, well_id, gene/protein,
    train/test/val fold, measured (absolute)`` (:data:`GT_COLUMNS`; ``gene/protein`` holds Ensembl
    ids for transcripts and symbols for proteins; ``plate_barcode`` is the imaging plate's
    ``PLATE_BARCODE``). :func:`read_gt` and :func:`read_gt_matrix` are the one reader.
``data/metadata.csv``
    ``well_id, PLATE_ID, target, cell_state, Column``: the imaging wells. ``PLATE_ID`` is the
    part of the plate barcode after its one underscore (:func:`plate_id`): barcodes have the
    form ``<ELN>_<PLATE>`` (``ELN27012_G212LFO`` -> ``G212LFO``).

File names: ``<PREFIX>.X<ROW>.Y<COLUMN>.P<PLANE>.<timestamp>.<barcode>.h5`` (prefix ``ICF``,
``TILES``, or ``RAW`` for the simulated uncorrected images), the timestamp 13 digits as in the
authors' files (``2021159114145``: year, day of the year, hours, minutes, seconds).

Well ids: ``ROW`` and ``COLUMN`` are 1-based; the id is ``chr(ROW + 64)`` followed by the column
(``G13``). Zero-padded ids (``A01``) parse too.

Every writer here writes to a temporary name in the destination folder and renames, so an
interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import h5py
import numpy as np
import pandas as pd

from i2o_utils.config import CHANNELS
from i2o_utils.paths import bucket_paths

N_ROWS_384, N_COLS_384 = 16, 24
GT_PLATE, GT_WELL, GT_GENE, GT_FOLD, GT_MEASURED = (
    "plate_barcode", "well_id", "gene/protein", "train/test/val fold", "measured (absolute)")
GT_COLUMNS = (GT_PLATE, GT_WELL, GT_GENE, GT_FOLD, GT_MEASURED)
"""The GT tables' columns, as the authors' code reads and writes them."""
TILES_ATTRS = ("ROW", "COLUMN", "PLANE", "PLATE_BARCODE", "INPUT_POINTER")
METADATA_COLUMNS = ("well_id", "PLATE_ID", "target", "cell_state", "Column")
IMAGE_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))
FOLDS = ("train", "val", "test")

_WELL_RE = re.compile(r"^\s*([A-Pa-p])\s*0*([1-9]|1\d|2[0-4])\s*$")  # rows A-P, columns 1-24


class LayoutError(ValueError):
    """A file or table does not follow the bucket layout; the message names the file and fault."""


# --------------------------------------------------------------------------------------------
# well ids
# --------------------------------------------------------------------------------------------
def parse_well_id(well_id: str, *, where: str | os.PathLike | None = None) -> tuple[int, int]:
    """``'G13'`` or ``'A01'`` -> ``(ROW, COLUMN)``, both 1-based, on a 384-well plate; an id that is
    not a row letter A-P followed by a column 1-24 raises :class:`LayoutError` naming ``where`` (a file)."""
    m = _WELL_RE.match(well_id) if isinstance(well_id, str) else None
    if not m:
        raise LayoutError(f"malformed well id {well_id!r}{f' in {where}' if where else ''} (or outside a 384-well "
                          "plate): expected a row letter A-P and a column 1-24, e.g. 'G13' or 'A01'")
    return ord(m.group(1).upper()) - 64, int(m.group(2))


def format_well_id(row: int, column: int, *, padded: bool = False) -> str:
    """``(7, 13)`` -> ``'G13'`` (the authors' form: ``chr(ROW + 64)`` + column)."""
    row, column = int(row), int(column)
    if not (1 <= row <= N_ROWS_384 and 1 <= column <= N_COLS_384):
        raise LayoutError(f"ROW={row}, COLUMN={column} is outside a 384-well plate")
    return f"{chr(row + 64)}{column:02d}" if padded else f"{chr(row + 64)}{column}"


def normalise_well_id(well_id: str, *, where: str | os.PathLike | None = None) -> str:
    """Any accepted spelling -> the authors' form (``'a01'`` -> ``'A1'``)."""
    return format_well_id(*parse_well_id(well_id, where=where))


def plate_id(barcode: str, *, where: str | os.PathLike | None = None) -> str:
    """``'ELN27012_G212LFO'`` -> ``'G212LFO'``: the ``PLATE_ID`` of ``metadata.csv``. The authors derive
    it as ``PLATE_BARCODE.rsplit("_")[1]``, which names the plate only when the barcode holds exactly
    one underscore; any other barcode raises :class:`LayoutError`."""
    parts = str(barcode).split("_")
    if len(parts) != 2 or not all(parts):
        loc = f" in {where}" if where else ""
        raise LayoutError(f"plate barcode {barcode!r}{loc} is not of the form <ELN>_<PLATE> (one underscore, "
                          "e.g. 'ELN27012_G212LFO'), from which metadata.csv's PLATE_ID is the part after it")
    return parts[1]


def format_timestamp(when) -> str:
    """A datetime in the authors' 13-digit form: year, day of the year (3 digits), hhmmss."""
    return when.strftime("%Y%j%H%M%S")


def image_file_name(prefix: str, barcode: str, row: int, column: int, plane: int = 1,
                    timestamp: str = "2023001000000") -> str:
    """The authors' per-well file name ``<PREFIX>.X<ROW>.Y<COLUMN>.P<PLANE>.<timestamp>.<ELN>_<PLATE>.h5``."""
    plate_id(barcode)
    if not re.fullmatch(r"\d{13}", str(timestamp)):
        raise LayoutError(f"timestamp {timestamp!r} is not the authors' 13 digits (e.g. '2021159114145')")
    return f"{prefix}.X{int(row)}.Y{int(column)}.P{int(plane)}.{timestamp}.{barcode}.h5"


_FILE_NAME_RE = re.compile(r"^(?P<prefix>[A-Za-z]+)\.X(?P<row>\d+)\.Y(?P<column>\d+)\.P(?P<plane>\d+)\."
                           r"(?P<timestamp>\d+)\.(?P<barcode>[^.]+)\.h5$")


def parse_image_file_name(name: str | os.PathLike) -> dict | None:
    """The parts of an authors' per-well file name (prefix, row, column, plane, timestamp,
    barcode), or ``None`` if the name is not of that form."""
    m = _FILE_NAME_RE.match(Path(name).name)
    if not m:
        return None
    d = m.groupdict()
    return {**d, "row": int(d["row"]), "column": int(d["column"]), "plane": int(d["plane"])}


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (not yet created) for the block to write; rename it onto
    ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_paths() -> Iterator[Callable[[str | os.PathLike], Path]]:
    """Publish several files together or not at all.

    The block gets ``stage(path)``, a staging path beside ``path`` to write a complete file to
    (e.g. through :func:`atomic_path`); when the block succeeds every staged file is renamed
    onto its path, when it fails none is and the staged files are removed. ``stage`` may be
    called from several threads.
    """
    staged: list[tuple[Path, Path]] = []  # list.append is atomic: no lock needed across threads

    def stage(path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.staged")
        staged.append((tmp, path))
        return tmp

    try:
        yield stage
        missing = [str(p) for t, p in staged if not t.exists()]
        if missing:
            raise FileNotFoundError(f"staged file(s) never written: {missing}")
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def write_csv_atomic(df: pd.DataFrame, path: str | os.PathLike, **kwargs) -> Path:
    """``df.to_csv`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **kwargs)
    return Path(path)


# --------------------------------------------------------------------------------------------
# per-well images
# --------------------------------------------------------------------------------------------
@dataclass
class WellImages:
    """The fields of one well: ``fields`` has shape (F, 3, H, W) in :data:`CHANNELS` order."""

    plate: str
    row: int
    column: int
    fields: np.ndarray
    plane: int = 1
    path: Path | None = None

    @property
    def well_id(self) -> str:
        return format_well_id(self.row, self.column)


def write_well_images(path: str | os.PathLike, plate: str, row: int, column: int,
                      fields: np.ndarray, plane: int = 1, compression: str | None = "gzip") -> Path:
    """Write one well's fields, shape (F, 3, H, W), in the bucket's per-well HDF5 form."""
    fields = np.asarray(fields)
    if fields.ndim != 4 or fields.shape[1] != len(CHANNELS):
        raise LayoutError(f"{path}: fields must have shape (F, 3, H, W), got {fields.shape}")
    if fields.dtype not in IMAGE_DTYPES:
        raise LayoutError(f"{path}: image dtype {fields.dtype} not one of {[str(d) for d in IMAGE_DTYPES]}")
    format_well_id(row, column)
    opts = {"compression": compression, "compression_opts": 1, "shuffle": True} if compression == "gzip" else {}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(PLATE_BARCODE=str(plate), ROW=int(row), COLUMN=int(column), PLANE=int(plane))
        for c, name in enumerate(CHANNELS):
            g = f.create_group(name)
            for i in range(fields.shape[0]):
                g.create_dataset(f"fov_{i}", data=fields[i, c], **opts)
    return Path(path)


def _fov_names(group: h5py.Group) -> list[str]:
    return sorted((k for k in group.keys() if re.fullmatch(r"fov_\d+", k)), key=lambda k: int(k[4:]))


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise LayoutError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise LayoutError(f"{path}: not a readable HDF5 file (corrupt or truncated?): {e}") from e


def read_well_attrs(path: str | os.PathLike) -> dict:
    """The attributes of a per-well image file (PLATE_BARCODE, ROW, COLUMN, PLANE) and its fields."""
    path = Path(path)
    with _open_h5(path) as f:
        n_fields = len(_fov_names(f[CHANNELS[0]])) if CHANNELS[0] in f else 0
        return {**_well_attrs(f, path), "n_fields": n_fields, "path": path}


def _well_attrs(f: h5py.File, path: Path) -> dict:
    """``plate, row, column, plane`` of an open per-well image file; a missing attribute raises."""
    require_columns(f.attrs, ("PLATE_BARCODE", "ROW", "COLUMN"), path, what="attribute")
    return {"plate": _as_str(f.attrs["PLATE_BARCODE"]), "row": int(f.attrs["ROW"]),
            "column": int(f.attrs["COLUMN"]), "plane": int(f.attrs.get("PLANE", 1))}


def _as_str(v) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def read_well_images(path: str | os.PathLike, fields: Sequence[int] | None = None) -> WellImages:
    """Read a per-well image file (ICF or RAW), the fields of indices ``fields`` (``None``: all), and
    check it against the layout: :class:`LayoutError` names the file and the fault (unreadable file,
    missing attribute or channel group, no fields, fields of unequal shape or dtype across channels
    or fields, a dtype not in :data:`IMAGE_DTYPES`)."""
    path = Path(path)
    with _open_h5(path) as f:
        attrs = _well_attrs(f, path)
        require_columns(f, CHANNELS, path, what="channel group")
        names = _fov_names(f[CHANNELS[0]])
        if not names:
            raise LayoutError(f"{path}: channel {CHANNELS[0]!r} holds no fov_i datasets")
        for c in CHANNELS[1:]:
            if _fov_names(f[c]) != names:
                raise LayoutError(f"{path}: channel {c!r} has fields {_fov_names(f[c])}, expected {names}")
        if fields is not None:
            bad = [f"fov_{i}" for i in fields if f"fov_{i}" not in names]
            if bad:
                raise LayoutError(f"{path}: no field(s) {bad}")
            names = [f"fov_{i}" for i in fields]
        sets = [f[c][n] for n in names for c in CHANNELS]  # field by field, channels in CHANNELS order
        for ds in sets:
            if ds.ndim != 2 or ds.dtype not in IMAGE_DTYPES:
                raise LayoutError(f"{path}: {ds.name[1:]} has dtype {ds.dtype} and {ds.ndim} dimension(s), expected "
                                  f"a 2-D field of one of {[str(d) for d in IMAGE_DTYPES]}")
            if ds.shape != sets[0].shape or ds.dtype != sets[0].dtype:
                raise LayoutError(f"{path}: {ds.name[1:]} is {ds.shape} {ds.dtype}, but the first field is "
                                  f"{sets[0].shape} {sets[0].dtype}: all fields must share shape and dtype")
        images = np.stack([ds[()] for ds in sets]).reshape(len(names), len(CHANNELS), *sets[0].shape)
        return WellImages(**attrs, fields=images, path=path)


def list_well_files(folder: str | os.PathLike) -> list[Path]:
    """The ``.h5`` files of a folder, sorted; temporary ``.part`` files are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LayoutError(f"{folder}: no such folder")
    return sorted(p for p in folder.glob("*.h5") if not p.name.startswith("."))


def index_wells(folder: str | os.PathLike) -> pd.DataFrame:
    """One row per well file: plate, row, column, well_id, plane, n_fields, path (attrs only)."""
    rows = [read_well_attrs(p) for p in list_well_files(folder)]
    df = pd.DataFrame(rows, columns=["plate", "row", "column", "plane", "n_fields", "path"])
    df.insert(3, "well_id", [format_well_id(r, c) for r, c in zip(df["row"], df["column"])])
    return df


# --------------------------------------------------------------------------------------------
# per-well tiles
# --------------------------------------------------------------------------------------------
@dataclass
class WellTiles:
    """Tile corners of one well. ``tile_coords[i] = (r0, c0)``; ``fovs_indices[i] = (field, k)``;
    ``input_pointer`` is the attribute as written (decoded to text), :meth:`image_path` resolves it."""

    row: int
    column: int
    input_pointer: str
    tile_coords: np.ndarray
    fovs_indices: np.ndarray
    path: Path | None = None
    plate_barcode: str = ""
    plane: int = 1

    @property
    def n_tiles(self) -> int:
        return int(self.tile_coords.shape[0])

    def image_path(self, data_root: str | os.PathLike | None = None) -> Path:
        """The image file the tiles index (see :func:`resolve_input_pointer`)."""
        return resolve_input_pointer(self.input_pointer, data_root)


def resolve_input_pointer(pointer: str | bytes, data_root: str | os.PathLike | None = None) -> Path:
    """The image file named by a TILES file's ``INPUT_POINTER`` (bytes or text).

    An absolute path that exists is taken as it is. Otherwise the pointer is resolved against the
    data root: a relative pointer (``data/ICF/<name>``) from the root, and any pointer whose file
    is not there (an absolute path from another machine, as in the authors' bucket) by its file
    name in the root's ``data/ICF`` (what the authors' ``preprocessing.py`` does).
    """
    text = _as_str(pointer)
    bp = bucket_paths(data_root)
    if (bp["root"] / text).exists():  # an absolute pointer as it is, a relative one from the root
        return bp["root"] / text
    return bp["icf"] / Path(text.replace("\\", "/")).name


def write_well_tiles(path: str | os.PathLike, row: int, column: int, input_pointer: str | os.PathLike,
                     corners_per_field: Sequence[np.ndarray], *, plate_barcode: str, plane: int = 1) -> Path:
    """Write a TILES file (the module's form) from the tile corners (k x 2 arrays of (r0, c0)) of each
    field. ``PLATE_BARCODE`` is text (the authors' readers compare it with their configured barcodes);
    pass an absolute ``input_pointer`` so their ``PlateDataset`` opens it from any working directory."""
    format_well_id(row, column)
    plate_id(plate_barcode, where=path)
    corners = [np.asarray(c, dtype=np.int64).reshape(-1, 2) for c in corners_per_field]
    tile_coords = np.concatenate([np.zeros((0, 2), np.int64), *corners])
    fovs_indices = np.array([(i, k) for i, c in enumerate(corners) for k in range(len(c))], np.int64).reshape(-1, 2)
    well_coords = np.full((len(tile_coords), 2), [row, column], np.int64)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(ROW=int(row), COLUMN=int(column), PLANE=int(plane), PLATE_BARCODE=str(plate_barcode),
                       INPUT_POINTER=np.bytes_(os.fspath(input_pointer).encode("utf-8")))
        for i, c in enumerate(corners):
            f.create_dataset(f"fov_{i}", data=c)
        g = f.create_group("all_fovs")
        g.create_dataset("tile_coords", data=tile_coords)
        g.create_dataset("fovs_indices", data=fovs_indices)
        g.create_dataset("well_coords", data=well_coords)
    return Path(path)


def read_well_tiles(path: str | os.PathLike) -> WellTiles:
    """Read a TILES file; raises :class:`LayoutError` naming the file and the missing piece. All
    five attributes of :data:`TILES_ATTRS` are required (the authors' readers need each);
    ``INPUT_POINTER`` may be bytes or text."""
    path = Path(path)
    with _open_h5(path) as f:
        require_columns(f.attrs, TILES_ATTRS, path, what="attribute")
        require_columns(f.get("all_fovs", []), ("tile_coords", "fovs_indices"), f"{path}, all_fovs", what="dataset")
        tc = f["all_fovs/tile_coords"][()].reshape(-1, 2).astype(np.int64)
        fi = f["all_fovs/fovs_indices"][()].reshape(-1, 2).astype(np.int64)
        if len(tc) != len(fi):
            raise LayoutError(f"{path}: tile_coords has {len(tc)} rows but fovs_indices {len(fi)}")
        return WellTiles(row=int(f.attrs["ROW"]), column=int(f.attrs["COLUMN"]),
                         input_pointer=_as_str(f.attrs["INPUT_POINTER"]), tile_coords=tc,
                         fovs_indices=fi, path=path, plate_barcode=_as_str(f.attrs["PLATE_BARCODE"]),
                         plane=int(f.attrs["PLANE"]))


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def require_columns(df: pd.DataFrame | Sequence[str], required: Sequence[str], where,
                    error: type[Exception] = LayoutError, what: str = "column") -> None:
    """Raise ``error`` naming ``where``, the missing columns and those found (``df``: a table or
    its column names; or, with ``what``, the attributes, groups or datasets of an HDF5 object)."""
    found = list(df.columns if isinstance(df, pd.DataFrame) else df)
    missing = [c for c in required if c not in found]
    if missing:
        raise error(f"{where}: missing {what}(s) {missing}; found {found}")


def _refuse_blank_cells(df: pd.DataFrame, columns: Sequence[str], path) -> None:
    """A missing or blank value in a required column names the file, line, column and well."""
    for c in columns:
        blank = (df[c].isna() | (df[c].astype(str).str.strip() == "")).to_numpy()
        if blank.any():
            i = int(blank.argmax())
            r = df.iloc[i]
            where = ", ".join(f"{k} {r[k]}" for k in ("PLATE_ID", "well_id") if k != c and k in df and pd.notna(r[k]))
            raise LayoutError(f"{path}: line {i + 2}{f' ({where})' if where else ''}: blank {c!r} "
                              f"({int(blank.sum())} row(s) with a blank {c!r}); every well needs one")


def index_well_ids(df: pd.DataFrame, plate: str, path) -> pd.DataFrame:
    """Normalise ``df["well_id"]`` to the authors' form and add integer ``ROW`` and ``COLUMN``, in
    place; a malformed id or a well given twice on one plate (column ``plate``) raises
    :class:`LayoutError` naming ``path``."""
    rc = [parse_well_id(w, where=path) for w in df["well_id"]]
    df["well_id"] = [format_well_id(r, c) for r, c in rc]
    df["ROW"], df["COLUMN"] = np.array(rc, dtype=np.int64).reshape(-1, 2).T
    dup = df.duplicated([plate, "well_id"]).to_numpy()
    if dup.any():
        r = df.loc[dup].iloc[0]
        raise LayoutError(f"{path}: duplicated well {r['well_id']} on plate {r[plate]}")
    return df


def read_metadata(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read ``metadata.csv`` (imaging wells); adds integer ``ROW`` and ``COLUMN`` columns, ``well_id``
    normalised to the authors' form. A malformed id, a missing column or a blank cell raises
    :class:`LayoutError` naming the file."""
    path = Path(path) if path is not None else bucket_paths()["metadata"]
    if not path.exists():
        raise LayoutError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, dtype={"well_id": str, "PLATE_ID": str, "target": str, "cell_state": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise LayoutError(f"{path}: not a readable CSV table (empty or malformed): {e}") from None
    require_columns(df, METADATA_COLUMNS, path)
    _refuse_blank_cells(df, ("well_id", "PLATE_ID", "target", "cell_state"), path)
    index_well_ids(df, "PLATE_ID", path)
    df["cell_state"] = df["cell_state"].str.lower()
    return df


def write_metadata(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    require_columns(df, METADATA_COLUMNS, path)
    return write_csv_atomic(df[list(METADATA_COLUMNS)], path)


def gt_path(omics: str, stimulus: str, root: str | os.PathLike | None = None, fmt: str | None = None) -> Path:
    """``data/GT/{omics}_{stimulus}.csv`` (the authors'), or the ``.parquet`` a simulated screen of
    the paper's size writes instead; ``fmt`` (``"csv"``/``"parquet"``) asks for one, ``None``
    takes the one that exists (the CSV if neither does)."""
    p = bucket_paths(root)["gt"] / f"{omics}_{stimulus.lower()}.csv"
    if fmt == "parquet" or (fmt is None and not p.exists() and p.with_suffix(".parquet").exists()):
        return p.with_suffix(".parquet")
    return p


def read_gt(path: str | os.PathLike) -> pd.DataFrame:
    """Read a GT long table, the five :data:`GT_COLUMNS` (the authors' CSV, or the Parquet form a
    simulated screen of the paper's size writes); well ids are normalised. A missing file, column
    (the message lists those found) or value raises :class:`LayoutError` naming the file (and the
    gene, well and plate of a missing value)."""
    path = Path(path)
    t = _read_gt_arrow(path, (GT_PLATE, GT_WELL, GT_GENE, GT_FOLD), GT_MEASURED)
    df = t.to_pandas().astype({c: str for c in (GT_PLATE, GT_WELL, GT_GENE, GT_FOLD)})
    df[GT_WELL] = df[GT_WELL].map({w: normalise_well_id(w, where=path) for w in df[GT_WELL].unique()})
    return df


def write_gt(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a GT long-format CSV (the five :data:`GT_COLUMNS` first, any extra columns after)."""
    require_columns(df, GT_COLUMNS, path)
    cols = list(GT_COLUMNS) + [c for c in df.columns if c not in GT_COLUMNS]
    return write_csv_atomic(df[cols], path)


def gt_to_matrix(df: pd.DataFrame, value: str = GT_MEASURED) -> pd.DataFrame:
    """Long GT -> wide (index (plate_barcode, well_id), columns the genes, named ``gene``)."""
    m = df.pivot_table(index=[GT_PLATE, GT_WELL], columns=GT_GENE, values=value, aggfunc="first", sort=True)
    return m.rename_axis(columns="gene")


def _read_gt_arrow(path: Path, keys: Sequence[str], value: str | None = None):
    """Columns ``keys`` (text, dictionary-encoded) and ``value`` (float64) of a GT table (CSV or
    Parquet) as one Arrow table; a missing file, column or value raises :class:`LayoutError` naming
    them (and the gene, well and plate of a missing value)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not path.exists():
        raise LayoutError(f"{path}: no such file")
    text = pa.dictionary(pa.int32(), pa.string())
    types = pa.schema([(k, text) for k in keys] + ([(value, pa.float64())] if value else []))
    cols = types.names
    parquet = path.suffix.lower() == ".parquet"
    if parquet:
        try:
            header = pq.read_schema(path).names
        except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
            raise LayoutError(f"{path}: not a readable Parquet file: {e}") from e
    else:
        with open(path, "rb") as f:
            header = next(csv.reader([f.readline().decode("utf-8", errors="replace").rstrip("\r\n")]))
    require_columns(header, list(dict.fromkeys([*GT_COLUMNS, *cols])), path)
    try:
        if parquet:
            t = pq.read_table(path, columns=cols).select(cols).cast(types)
        else:  # large blocks: few dictionaries to unify
            t = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=64 << 20),
                               convert_options=pacsv.ConvertOptions(include_columns=cols, column_types=types,
                                                                    strings_can_be_null=False))
    except pa.ArrowInvalid as e:  # Arrow numbers the columns from 0: name them
        msg = re.sub(r"CSV column #(\d+)", lambda m: f"column {header[int(m.group(1))]!r}"
                     if int(m.group(1)) < len(header) else m.group(0), str(e))
        raise LayoutError(f"{path}: {msg}") from e
    t = t.unify_dictionaries().combine_chunks()
    missing = np.flatnonzero(np.isnan(t.column(value).to_numpy(zero_copy_only=False))) if value else []
    if len(missing):
        row = {k: t.column(k)[int(missing[0])].as_py() for k in (GT_PLATE, GT_WELL, GT_GENE)}
        raise LayoutError(f"{path}: missing {value!r} value for gene {row[GT_GENE]} in well {row[GT_WELL]} of "
                          f"plate {row[GT_PLATE]}")
    return t


def read_gt_folds(path: str | os.PathLike) -> pd.DataFrame:
    """The fold column of a GT table: one row per (``plate_barcode``, ``well_id``, ``fold``) present,
    well ids normalised (CSV or Parquet; only the three columns are read)."""
    path = Path(path)
    t = _read_gt_arrow(path, (GT_PLATE, GT_WELL, GT_FOLD))
    df = t.group_by([GT_PLATE, GT_WELL, GT_FOLD]).aggregate([]).to_pandas().astype(str)
    df[GT_WELL] = [normalise_well_id(w, where=path) for w in df[GT_WELL]]
    return df.drop_duplicates().rename(columns={GT_FOLD: "fold"}).reset_index(drop=True)


def read_gt_matrix(path: str | os.PathLike, value: str = GT_MEASURED) -> pd.DataFrame:
    """``gt_to_matrix(read_gt(path), value)`` without the long table in memory (CSV or Parquet).

    Arrow parses the CSV (all cores) with the text columns dictionary-encoded, and the matrix is
    filled from the codes: for a transcriptomics table of the paper's scale (40 M rows, 1.8 GB)
    about 15 s and 3 GB at peak on 2 cores, against about 90 s and 8 GB through the long table.
    The same checks as :func:`read_gt` (missing file, columns or values raise, naming them; well
    ids normalised); a (plate, well, gene) given twice keeps its first value, as
    :func:`gt_to_matrix` does.
    """
    path = Path(path)
    keys = (GT_PLATE, GT_WELL, GT_GENE)
    t = _read_gt_arrow(path, keys, value)
    codes, levels = {}, {}
    for k in keys:
        col = t.column(k).combine_chunks()
        names = col.dictionary.to_pylist()
        if k == GT_WELL:
            names = [normalise_well_id(w, where=path) for w in names]
        # sorted distinct names (spellings of one well merged), and each code's place among them
        levels[k], rank = np.unique(np.asarray(names, dtype=str), return_inverse=True)
        codes[k] = rank[col.indices.to_numpy(zero_copy_only=False)]
    n_wells, n_genes = len(levels[GT_WELL]), len(levels[GT_GENE])
    row_key = codes.pop(GT_PLATE) * n_wells + codes.pop(GT_WELL)
    present = np.bincount(row_key, minlength=len(levels[GT_PLATE]) * n_wells) > 0
    rows = np.flatnonzero(present)  # the (plate, well) pairs present, in sorted order
    flat = (np.cumsum(present) - 1)[row_key] * n_genes + codes.pop(GT_GENE)
    del row_key
    v = t.column(value).to_numpy(zero_copy_only=False)
    m = np.full(len(rows) * n_genes, np.nan)
    seen = np.zeros(len(m), dtype=bool)
    seen[flat] = True
    if int(seen.sum()) != len(flat):  # a cell given twice: keep its first value
        flat, first = np.unique(flat, return_index=True)
        v = v[first]
    m[flat] = v
    index = pd.MultiIndex.from_arrays([levels[GT_PLATE][rows // n_wells], levels[GT_WELL][rows % n_wells]],
                                      names=[GT_PLATE, GT_WELL])
    return pd.DataFrame(m.reshape(len(rows), n_genes), index=index, columns=pd.Index(levels[GT_GENE], name="gene"))


# --------------------------------------------------------------------------------------------
# the screen's description and, for a simulated screen, its truth
# --------------------------------------------------------------------------------------------
SCREEN_FILE = "SCREEN.json"
"""At the data root: what the data are (written by the simulator; real data have none)."""
TRUTH_KINDS = ("visible", "hidden", "noise", "low")
TRUTH_COLUMNS = ("omics", "gene", "kind", "r2_expected")


def parse_bool(value) -> bool | None:
    """``True``/``False`` for the usual spellings (``true``, ``1``, ``yes``, ``t``, ``y`` and their
    opposites, any case), ``None`` for anything else."""
    v = str(value).strip().lower()
    return True if v in ("true", "1", "yes", "y", "t") else False if v in ("false", "0", "no", "n", "f") else None


def read_screen_info(root: str | os.PathLike | None = None) -> dict | None:
    """The ``SCREEN.json`` of a data root, or ``None`` if there is none (real data)."""
    f = bucket_paths(root)["root"] / SCREEN_FILE
    if not f.exists():
        return None
    try:
        info = json.loads(f.read_text())
        if not isinstance(info, dict):
            raise ValueError("expected a JSON object")
    except ValueError as e:  # UnicodeDecodeError too
        raise LayoutError(f"{f}: not a readable screen description (truncated or edited?): {e}; "
                          "regenerate the screen with overwrite=True (i2o simulate --overwrite)") from None
    return info


def truth_path(root: str | os.PathLike | None = None) -> Path:
    """``<data root>/simulation/truth_genes.csv``."""
    return bucket_paths(root)["simulation"] / "truth_genes.csv"


def nuclei_truth_path(root: str | os.PathLike | None = None) -> Path:
    """``<data root>/simulation/nuclei_truth.parquet`` (the simulated nucleus centres)."""
    return bucket_paths(root)["simulation"] / "nuclei_truth.parquet"


def read_truth_genes(path: str | os.PathLike | None = None) -> pd.DataFrame | None:
    """The simulator's gene truth table (``omics, gene, kind, r2_expected, ...``; default
    :func:`truth_path`), or ``None`` where there is none (real data). A missing column, an unknown
    ``kind`` or a gene listed twice for one omics (and stimulus) raises :class:`LayoutError`."""
    path = Path(path) if path is not None else truth_path()
    if not path.exists():
        return None
    df = pd.read_csv(path, dtype={c: str for c in ("omics", "gene", "kind", "symbol", "location")})
    require_columns(df, TRUTH_COLUMNS, path)
    df = df.fillna({"symbol": "", "location": ""})  # the columns a table has
    bad = sorted(set(df["kind"]) - set(TRUTH_KINDS))
    if bad:
        raise LayoutError(f"{path}: unknown kind(s) {bad}; expected {TRUTH_KINDS}")
    key = ["omics", "stimulus", "gene"] if "stimulus" in df.columns else ["omics", "gene"]
    dup = df.duplicated(key)
    if dup.any():
        raise LayoutError(f"{path}: {df.loc[dup, key].iloc[0].tolist()} appears more than once")
    if "predictable" in df.columns:  # a null screen plants 'visible' genes that the images cannot show
        df["predictable"] = df["predictable"].map(parse_bool).fillna(False).astype(bool)
    return df
