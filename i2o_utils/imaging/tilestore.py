"""The tile store: every cell-centred tile of the screen, ready for training.

Layout of a store folder (written by :func:`write_plate_tiles` and :func:`finalise_store`)::

    store.json              format, tile_size, dtype, channels, per-channel scale, plate files
    wells.parquet           one row per well with tiles: plate, well_id, target, cell_state,
                            n_tiles, start (first row in the plate array), + other metadata
    index.parquet           one row per tile: plate, well_id, fov, row, col (nucleus centre),
                            r0, c0 (tile corner in the field), i (row in the plate array)
    plates/<plate>.h5       dataset ``tiles`` of shape (n, 3, s, s), uncompressed and contiguous:
                            every tile is one contiguous block (the natural chunk), a well's
                            tiles are consecutive rows

``store.json`` is written last: a folder without it is not a store.

dtype and scaling
    Tiles are stored as ``uint8`` (default) or ``uint16``. A flat-field corrected intensity
    ``I`` of channel ``c`` is stored as ``round(clip(I / scale[c], 0, 1) * M)``, ``M`` the
    dtype's maximum (255 or 65535); ``scale[c]`` (in ``store.json``) is the 99.9th percentile
    of the channel's corrected intensities over sampled fields of every plate.
    :meth:`TileStore.to_float` maps stored values to float32 ``x / M`` in ``[0, 1]``.

Reads
    Each plate array is memory-mapped (its byte offset in the HDF5 file is read once), so
    ``sample`` is one fancy-indexed read per well that touches only the pages of the drawn
    tiles. Maps are opened lazily and per process, so a store can be handed to data-loader
    worker processes.

Model code depends only on the interface of :class:`TileStore` (``wells``, ``tile_size``,
``dtype``, ``sample``, ``read_well``, ``to_float``); :class:`i2o_utils.model.data.InMemoryTiles`
implements the same interface on arrays.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np
import pandas as pd

from i2o_utils import cache
from i2o_utils.data.layout import atomic_path, require_columns
from i2o_utils.imaging.tiles import dtype_max
from i2o_utils.paths import results_dir

log = logging.getLogger(__name__)

STORE_FORMAT = "i2o-tilestore"
STORE_VERSION = 1
WELL_COLUMNS = ("plate", "well_id", "target", "cell_state", "n_tiles", "start")
INDEX_COLUMNS = ("plate", "well_id", "fov", "row", "col", "r0", "c0", "i")


class TileStoreError(ValueError):
    """A store folder is missing, incomplete or inconsistent; the message names the file."""


class TileStore:
    """Read the tile store folder ``root`` (holding ``store.json``; see the module docstring). A store
    whose preprocessing had failed wells is refused unless ``allow_failed``.

    Attributes
    ----------
    wells : pandas.DataFrame
        One row per well (position = well index): plate, well_id, target, cell_state, n_tiles, ...
    tile_size : int
    dtype : numpy.dtype
        ``uint8`` or ``uint16``.
    channels : list of str
    scale : numpy.ndarray
        Per-channel corrected intensity stored as the dtype's maximum.
    """

    def __init__(self, root: str | os.PathLike, allow_failed: bool = False):
        self.root = Path(root)
        meta_path = self.root / "store.json"
        if not meta_path.exists():
            raise TileStoreError(f"{meta_path}: no such file (not a tile store, or an unfinished one)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != STORE_FORMAT:
            raise TileStoreError(f"{meta_path}: format {meta.get('format')!r} is not {STORE_FORMAT!r}")
        if meta.get("failed_wells") and not allow_failed:
            raise TileStoreError(f"{meta_path}: {meta['failed_wells']} well(s) failed in the image preprocessing "
                                 "(see its wells_status.csv); fix their files and re-run it before using the store")
        self.meta = meta
        self.tile_size = int(meta["tile_size"])
        self.dtype = np.dtype(meta["dtype"])
        self.channels = list(meta["channels"])
        self.scale = np.asarray(meta["scale"], dtype=np.float32)
        self._max = dtype_max(self.dtype)
        self.wells = pd.read_parquet(self.root / "wells.parquet").reset_index(drop=True)
        require_columns(self.wells, WELL_COLUMNS, self.root / "wells.parquet", error=TileStoreError)
        self._plate_files = {p: self.root / f for p, f in meta["plates"].items()}
        absent = sorted(set(self.wells["plate"]) - set(self._plate_files))
        if absent:
            raise TileStoreError(f"{meta_path}: no plate file for plate(s) {absent}")
        self._plate = self.wells["plate"].to_numpy()
        self._start = self.wells["start"].to_numpy(np.int64)
        self._n = self.wells["n_tiles"].to_numpy(np.int64)
        self._files: dict[str, np.ndarray] = {}
        self._pid = os.getpid()

    # -- file handles (lazy, per process) ---------------------------------------------------
    def _dataset(self, plate: str) -> np.ndarray:
        """The plate's tile array, a read-only numpy memmap (an empty array for a plate without tiles)."""
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        arr = self._files.get(plate)
        if arr is None:
            path = self._plate_files[plate]
            try:
                with h5py.File(path, "r") as f:
                    ds = f["tiles"]
                    shape, dtype, offset = ds.shape, ds.dtype, ds.id.get_offset()
            except (OSError, KeyError) as e:
                raise TileStoreError(f"{path}: not a readable tile array (corrupt or truncated?): {e}") from e
            if offset is None and int(np.prod(shape)) > 0:
                raise TileStoreError(f"{path}: the tile array is not contiguous (chunked, compressed or never "
                                     "written), so it cannot be memory-mapped; write it with write_plate_tiles")
            arr = np.zeros(shape, dtype) if offset is None else np.memmap(path, dtype=dtype, mode="r",
                                                                          offset=offset, shape=shape)
            self._files[plate] = arr
        return arr

    def close(self) -> None:
        self._files = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def __len__(self) -> int:
        return len(self.wells)

    def content_key(self) -> str:
        """Fingerprint of what the store holds: its wells (identity, labels, tile counts), the
        preprocessing parameters and, per plate, the inputs its tiles were cut from."""
        layouts = {}
        for plate, path in sorted(self._plate_files.items()):
            try:
                with h5py.File(path, "r") as f:
                    layouts[plate] = str(f.attrs.get("layout", ""))
            except OSError:
                layouts[plate] = cache.file_fingerprint(path)
        cols = [c for c in ("plate", "well_id", "target", "cell_state", "n_tiles") if c in self.wells]
        return cache.fingerprint(wells=cache.table_fingerprint(self.wells, cols), scale=list(self.scale),
                                 params=self.meta.get("params_key"), plates=layouts)

    def wells_note(self, one_line: bool = False) -> str:
        """How many wells the store holds and which imaged wells were left out, and why."""
        left = self.meta.get("left_out", [])
        head = f"{len(self.wells)} wells with tiles are used"
        if not left:
            return head + "; no imaged well was left out"
        counts = pd.Series([w["status"] for w in left]).value_counts()
        lines = [f"{head}; {len(left)} imaged well(s) left out ("
                 + ", ".join(f"{n} {k}" for k, n in counts.items()) + "):"]
        lines += [f"  {w['plate']} {w['well_id']}: {w['reason']}" for w in left[:20]]
        if len(left) > 20:
            lines.append(f"  ... and {len(left) - 20} more (see wells_status.csv of notebook 20)")
        return (lines[0] + " " + "; ".join(x.strip() for x in lines[1:])) if one_line else "\n".join(lines)

    @property
    def index(self) -> pd.DataFrame:
        """One row per tile: plate, well_id, fov, row, col, r0, c0, i."""
        return pd.read_parquet(self.root / "index.parquet")

    @property
    def n_tiles(self) -> int:
        return int(self._n.sum())

    # -- reads -----------------------------------------------------------------------------
    def read_well(self, i: int) -> np.ndarray:
        """All tiles of well ``i``: ``(n_tiles, 3, s, s)`` in the store's dtype."""
        i = int(i)
        start, n = int(self._start[i]), int(self._n[i])
        return np.array(self._dataset(self._plate[i])[start:start + n])

    def read_tiles(self, i: int, tile_numbers: np.ndarray) -> np.ndarray:
        """Tiles ``tile_numbers`` (0-based within well ``i``, any order, repeats allowed)."""
        i = int(i)
        tile_numbers = np.asarray(tile_numbers, dtype=np.int64)
        if len(tile_numbers) and (tile_numbers.min() < 0 or tile_numbers.max() >= self._n[i]):
            raise IndexError(f"well {i} ({self._plate[i]} {self.wells['well_id'].iat[i]}) has "
                             f"{self._n[i]} tiles; asked for {tile_numbers.min()}..{tile_numbers.max()}")
        return self._dataset(self._plate[i])[self._start[i] + tile_numbers]  # one read of the drawn tiles

    def sample(self, well_idx: Sequence[int] | np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` random tiles from each well: ``(len(well_idx), n, 3, s, s)`` in the store's dtype.

        Without replacement when the well has at least ``n`` tiles, else with replacement
        (logged at INFO level). One read per well.
        """
        well_idx = np.asarray(well_idx, dtype=np.int64).reshape(-1)
        s = self.tile_size
        out = np.empty((len(well_idx), int(n), len(self.channels), s, s), dtype=self.dtype)
        for k, i in enumerate(well_idx):
            n_tiles = int(self._n[i])
            if n_tiles < n:
                where = f"plate {self._plate[i]}, well {self.wells['well_id'].iat[i]}"
                if n_tiles <= 0:
                    raise TileStoreError(f"{where}: the well has no tiles")
                log.info("%s: %d tiles for %d requested; sampling with replacement", where, n_tiles, n)
            out[k] = self.read_tiles(i, rng.choice(n_tiles, size=int(n), replace=n_tiles < n))
        return out

    def to_float(self, x):
        """Stored integers -> float32 in [0, 1] (``x / 255`` or ``x / 65535``); numpy or torch."""
        if isinstance(x, np.ndarray) or np.isscalar(x):
            return np.asarray(x, dtype=np.float32) / np.float32(self._max)
        return x.float() / self._max  # a torch tensor: stays on its device


def stored_wells_note(store_dir: str | os.PathLike | None = None) -> str | None:
    """:meth:`TileStore.wells_note` (one line) of notebook 20's store; ``None`` when there is none."""
    if store_dir is None:
        store_dir = results_dir() / "20_preprocess_images" / "tilestore"
    try:
        return TileStore(store_dir).wells_note(one_line=True)
    except (TileStoreError, OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def write_plate_tiles(path: str | os.PathLike, wells: Iterable[tuple[str, np.ndarray]], n_total: int,
                      tile_size: int, dtype="uint8", n_channels: int = 3,
                      attrs: dict | None = None) -> list[tuple[str, int, int]]:
    """Write one plate's tile array (uncompressed and contiguous), well after well, atomically.

    ``wells`` yields ``(well_id, tiles)`` pairs in store order, ``tiles`` of shape ``(n_i, C, s, s)``
    (so tiles can be loaded one well at a time and a plate is never held in memory); ``n_total``
    is the sum of ``n_i``; ``attrs`` are stored on the file (``plates/<plate>.h5``).

    Returns
    -------
    list of (well_id, start, n_tiles)
    """
    dtype = np.dtype(dtype)
    dtype_max(dtype)
    s = int(tile_size)
    placed = []
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset("tiles", shape=(int(n_total), n_channels, s, s), dtype=dtype)
        start = 0
        for well_id, tiles in wells:
            tiles = np.asarray(tiles)
            if tiles.shape[1:] != (n_channels, s, s) or tiles.dtype != dtype:
                raise TileStoreError(f"{path}: well {well_id}: tiles are {tiles.shape} {tiles.dtype}, "
                                     f"expected (n, {n_channels}, {s}, {s}) {dtype}")
            if start + len(tiles) > n_total:
                raise TileStoreError(f"{path}: more tiles than the {n_total} announced (at well {well_id})")
            ds[start:start + len(tiles)] = tiles
            placed.append((well_id, start, len(tiles)))
            start += len(tiles)
        if start != n_total:
            raise TileStoreError(f"{path}: {start} tiles written, {n_total} announced")
        f.attrs.update(attrs or {})
    return placed


def finalise_store(root: str | os.PathLike, wells: pd.DataFrame, index: pd.DataFrame,
                   plate_files: dict[str, str], tile_size: int, dtype, scale: Sequence[float],
                   channels: Sequence[str], extra: dict | None = None) -> Path:
    """Write ``wells.parquet``, ``index.parquet`` and, last, ``store.json`` (atomically each).

    ``wells`` must hold :data:`WELL_COLUMNS`; only wells with tiles are kept. ``plate_files``
    maps plate to a path relative to ``root``.
    """
    root = Path(root)
    require_columns(wells, WELL_COLUMNS, "wells table", error=TileStoreError)
    require_columns(index, INDEX_COLUMNS, "index table", error=TileStoreError)
    wells = wells.loc[wells["n_tiles"] > 0].reset_index(drop=True)
    with atomic_path(root / "wells.parquet") as tmp:
        wells.to_parquet(tmp, index=False)
    with atomic_path(root / "index.parquet") as tmp:
        index.reset_index(drop=True).to_parquet(tmp, index=False)
    meta = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "tile_size": int(tile_size),
        "dtype": np.dtype(dtype).name,
        "channels": list(channels),
        "scale": [float(x) for x in scale],
        "to_float": f"stored / {dtype_max(dtype)}",
        "stored_value": "round(clip(corrected / scale[channel], 0, 1) * dtype max)",
        "plates": dict(plate_files),
        "n_wells": int(len(wells)),
        "n_tiles": int(wells["n_tiles"].sum()),
        **(extra or {}),
    }
    with atomic_path(root / "store.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    return root
