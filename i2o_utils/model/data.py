"""The model's data path: tiles from a tile store to a device tensor, on GPU and CPU alike.

The model depends only on the tile store *interface* (``i2o_utils.imaging.tilestore.TileStore``):

* ``wells`` (DataFrame: plate, well_id, target, cell_state, n_tiles; position = well index),
* ``tile_size``, ``dtype`` (uint8 or uint16),
* ``sample(well_idx, n, rng) -> (len(well_idx), n, 3, s, s)``, ``read_well(i) -> (n_i, 3, s, s)``,
* ``to_float(x)``: the store's scaling to float32 in [0, 1], on numpy arrays and torch tensors.

:class:`InMemoryTiles` implements the interface over arrays in memory (tests, benchmarks).

The hot path (:func:`prepare_tiles`) moves the stored integers (uint8/uint16, from pinned
memory on a GPU) to the device, converts them there with the store's scaling, applies the
random flips / 90-degree rotations as one gather over a precomputed table (no per-tile Python),
optionally resizes (area interpolation) and returns channels-last float tensors.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

__all__ = [
    "InMemoryTiles", "Runtime", "resolve_runtime", "dihedral_table", "dihedral_augment",
    "to_device", "prepare_tiles", "sample_tile_indices", "Prefetcher", "WELL_COLUMNS",
]

WELL_COLUMNS = ("plate", "well_id", "target", "cell_state", "n_tiles")


class InMemoryTiles:
    """A tile store held in memory, with the interface of ``TileStore``.

    Parameters
    ----------
    tiles
        One array per well, shape (n_i, 3, s, s), dtype uint8 or uint16 (all the same).
    wells
        One row per well (same order): plate, well_id, target, cell_state; ``n_tiles`` is
        filled in from ``tiles``.
    """

    def __init__(self, tiles: list[np.ndarray], wells: pd.DataFrame) -> None:
        if len(tiles) != len(wells):
            raise ValueError(f"{len(tiles)} tile arrays for {len(wells)} wells")
        if not tiles:
            raise ValueError("an empty tile store")
        dtypes = {t.dtype for t in tiles}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (np.dtype("uint8"), np.dtype("uint16")):
            raise ValueError(f"tiles must all be uint8 or all uint16, got {sorted(map(str, dtypes))}")
        shapes = {t.shape[1:] for t in tiles}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[0] != 3:
            raise ValueError(f"tiles must have shape (n, 3, s, s), got {sorted(shapes)}")
        c, h, w = next(iter(shapes))
        if h != w:
            raise ValueError(f"tiles must be square, got {h}x{w}")
        self._tiles = [np.ascontiguousarray(t) for t in tiles]
        self._dtype = next(iter(dtypes))
        self._size = int(h)
        wells = wells.reset_index(drop=True).copy()
        wells["n_tiles"] = [len(t) for t in tiles]
        missing = [c for c in WELL_COLUMNS if c not in wells.columns]
        if missing:
            raise ValueError(f"wells table lacks column(s) {missing}")
        self._wells = wells
        self._warned: set[tuple[int, int]] = set()

    @property
    def wells(self) -> pd.DataFrame:
        return self._wells

    @property
    def tile_size(self) -> int:
        return self._size

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def read_well(self, i: int) -> np.ndarray:
        return self._tiles[int(i)]

    def sample(self, well_idx: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` random tiles per well; with replacement (logged once per well) when it has fewer."""
        well_idx = np.asarray(well_idx, dtype=np.int64)
        out = np.empty((len(well_idx), n, 3, self._size, self._size), dtype=self._dtype)
        for j, i in enumerate(well_idx):
            t = self._tiles[i]
            if len(t) == 0:
                w = self._wells.iloc[i]
                raise ValueError(f"well {w['well_id']} of plate {w['plate']} has no tiles")
            if len(t) >= n:
                pick = rng.choice(len(t), size=n, replace=False)
            else:
                pick = rng.integers(0, len(t), size=n)
                if (int(i), n) not in self._warned:
                    self._warned.add((int(i), n))
                    w = self._wells.iloc[i]
                    log.warning("well %s of plate %s has %d tiles < N=%d: sampled with replacement",
                                w["well_id"], w["plate"], len(t), n)
            out[j] = t[np.sort(pick)] if len(t) >= n else t[pick]
        return out

    def to_float(self, x):
        """uint8 / 255 or uint16 / 65535 as float32 (numpy array or torch tensor)."""
        scale = float(np.iinfo(self._dtype).max)
        if isinstance(x, torch.Tensor):
            return x.to(torch.float32) / scale
        return np.asarray(x, dtype=np.float32) / np.float32(scale)


# --------------------------------------------------------------------------------------------
# device and runtime switches
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Runtime:
    """Where and how the model runs (the GPU fast path switches on by itself on CUDA)."""

    device: torch.device
    bf16: bool
    """bf16 autocast of the forward pass (CUDA only)."""
    channels_last: bool
    pin_memory: bool
    compile: bool = False

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)


def resolve_runtime(device: str | torch.device = "auto", compile: bool = False,
                    bf16: bool | None = None, channels_last: bool | None = None,
                    threads: int | None = None) -> Runtime:
    """``"auto"`` picks CUDA when present; bf16, channels-last and pinned memory default to on
    for CUDA and off for CPU (where fp32 keeps runs bit-reproducible).

    ``threads`` sets torch's CPU threads for the process (``None`` leaves torch's default, one
    per core). On cores shared with other work, 1 thread can be several times faster than 2.
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
    cuda = dev.type == "cuda"
    return Runtime(device=dev, bf16=cuda if bf16 is None else bool(bf16),
                   channels_last=cuda if channels_last is None else bool(channels_last),
                   pin_memory=cuda, compile=bool(compile))


# --------------------------------------------------------------------------------------------
# augmentation and transfer
# --------------------------------------------------------------------------------------------
_TABLES: dict[tuple[int, str], torch.Tensor] = {}


def dihedral_table(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(8, size*size) source-pixel indices of the 8 flips/rotations of a square tile.

    Row ``t`` is ``rot90(k=t % 4)`` followed, for ``t >= 4``, by a left-right flip.
    """
    key = (int(size), str(device))
    if key not in _TABLES:
        grid = torch.arange(size * size, dtype=torch.int64).reshape(size, size)
        rows = []
        for t in range(8):
            g = torch.rot90(grid, k=t % 4, dims=(0, 1))
            if t >= 4:
                g = torch.flip(g, dims=(1,))
            rows.append(g.reshape(-1))
        _TABLES[key] = torch.stack(rows).to(device)
    return _TABLES[key]


def dihedral_augment(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Apply flip/rotation ``codes[m]`` (0-7, see :func:`dihedral_table`) to tile ``x[m]``.

    One gather over all tiles: ``x`` is (M, C, s, s), ``codes`` (M,) int64 on ``x``'s device.
    """
    m, c, h, w = x.shape
    if h != w:
        raise ValueError(f"tiles must be square, got {h}x{w}")
    idx = dihedral_table(h, x.device)[codes.to(x.device)]  # (M, s*s)
    out = x.reshape(m, c, h * w).gather(2, idx.unsqueeze(1).expand(m, c, h * w))
    return out.reshape(m, c, h, w)


def to_device(batch: np.ndarray, runtime: Runtime) -> torch.Tensor:
    """Stored integers (numpy) -> the same integers on the device (pinned, non-blocking on CUDA)."""
    t = torch.from_numpy(np.ascontiguousarray(batch))
    if runtime.pin_memory:
        t = t.pin_memory()
    return t.to(runtime.device, non_blocking=runtime.pin_memory)


def prepare_tiles(raw: torch.Tensor, to_float: Callable, runtime: Runtime,
                  codes: torch.Tensor | None = None, input_size: int | None = None) -> torch.Tensor:
    """Device integers (..., 3, s, s) -> float tiles (M, 3, s', s') ready for the backbone.

    Parameters
    ----------
    raw
        Stored tiles on the device, any leading shape; flattened to (M, 3, s, s).
    to_float
        The store's scaling (``store.to_float``), applied on the device.
    codes
        Optional (M,) flip/rotation codes (augmentation); ``None`` leaves tiles as they are.
    input_size
        Resize (area interpolation) to this size when it differs from the stored one.
    """
    x = raw.reshape(-1, *raw.shape[-3:])
    x = to_float(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError("the store's to_float must accept and return torch tensors")
    x = x.to(torch.float32)
    if codes is not None:
        x = dihedral_augment(x, codes)
    if input_size is not None and int(input_size) != x.shape[-1]:
        x = F.interpolate(x, size=(int(input_size), int(input_size)), mode="area")
    if runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


# --------------------------------------------------------------------------------------------
# tile indices (for cached per-tile embeddings)
# --------------------------------------------------------------------------------------------
def sample_tile_indices(n_tiles: np.ndarray, n: int, rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random tile indices for each well, vectorised over wells.

    Without replacement where a well has at least ``n`` tiles, with replacement elsewhere (the
    authors' rule). Returns the (W, n) local indices and a (W,) mask of the wells sampled with
    replacement (callers log them).

    Raises
    ------
    ValueError
        If a well has no tiles.
    """
    n_tiles = np.asarray(n_tiles, dtype=np.int64)
    if (n_tiles <= 0).any():
        raise ValueError(f"{int((n_tiles <= 0).sum())} well(s) have no tiles")
    w = len(n_tiles)
    width = int(max(n_tiles.max(), n))
    keys = rng.random((w, width))
    keys[np.arange(width)[None, :] >= n_tiles[:, None]] = np.inf
    without = np.argsort(keys, axis=1, kind="stable")[:, :n]
    short = n_tiles < n
    if short.any():
        with_repl = rng.integers(0, n_tiles[short][:, None], size=(int(short.sum()), n))
        without[short] = with_repl
    return without, short


# --------------------------------------------------------------------------------------------
# background batch production
# --------------------------------------------------------------------------------------------
class Prefetcher:
    """Runs ``produce()`` in a background thread, ``depth`` batches ahead (0: in the caller).

    ``produce`` must return ``(batch, state_after)``: the state of the random streams after
    making the batch, so that a checkpoint can store where the *consumed* stream stands even
    though the thread has run ahead.
    """

    def __init__(self, produce: Callable[[], tuple], depth: int = 0) -> None:
        self._produce = produce
        self._depth = int(depth)
        self._q: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._depth > 0:
            self._q = queue.Queue(maxsize=self._depth)
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = ("ok", self._produce())
            except BaseException as e:  # handed to the consumer
                item = ("error", e)
            while not self._stop.is_set():
                try:
                    self._q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[0] == "error":
                return

    def __next__(self) -> tuple:
        if self._q is None:
            return self._produce()
        kind, value = self._q.get()
        if kind == "error":
            raise value
        return value

    def __iter__(self) -> Iterator[tuple]:
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
