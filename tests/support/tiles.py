"""Synthetic tile stores for the model tests and benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from i2o_utils.model.data import InMemoryTiles


def synthetic_tiles(n_targets: int = 6, wells_per_group: int = 4, tiles_per_well: int | list[int] = 8,
                    tile_size: int = 16, stimuli: tuple[str, ...] = ("m1", "m2"), n_plates: int = 2,
                    dtype: str = "uint8", signal: float = 0.3, seed: int = 0) -> InMemoryTiles:
    """A small in-memory tile store whose wells differ by (target, stimulus): for tests and benchmarks.

    Each group gets its own random mean intensity per channel (``signal`` sets the spread) and
    tiles add noise and a random blob, so the groups are separable but not trivially.
    """
    rng = np.random.default_rng(seed)
    info = np.iinfo(np.dtype(dtype))
    targets = ["NT"] + [f"KO{i:02d}" for i in range(1, n_targets)]
    rows, tiles = [], []
    yy, xx = np.mgrid[:tile_size, :tile_size]
    k = 0
    for stim in stimuli:
        for t in targets:
            level = 0.5 + signal * rng.uniform(-1, 1, size=3)
            for w in range(wells_per_group):
                n = tiles_per_well if isinstance(tiles_per_well, int) else tiles_per_well[k % len(tiles_per_well)]
                k += 1
                cy, cx = rng.uniform(0, tile_size, size=(2, n, 1, 1))
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (tile_size / 6) ** 2))
                x = level[None, :, None, None] * (0.6 + 0.4 * blob[:, None]) + rng.normal(0, 0.05, (n, 3, tile_size, tile_size))
                tiles.append((np.clip(x, 0, 1) * info.max).astype(dtype))
                plate = f"P{stimuli.index(stim)}{w % n_plates}"
                r, c = divmod(len(rows) % 384, 24)
                rows.append({"plate": plate, "well_id": f"{chr(65 + r)}{c + 1}", "target": t, "cell_state": stim})
    return InMemoryTiles(tiles, pd.DataFrame(rows))
