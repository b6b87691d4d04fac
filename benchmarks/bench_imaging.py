"""Image preprocessing throughput (notebook 20).

Reports
1. fields per second per core for flat-field correction + nuclei centres + tiling of
   1080x1080x3 uint16 fields (the paper's geometry; one process, so per core), and for the
   whole per-well function (also features and the HDF5 reads and writes);
2. the flat-field fast method against the literal one: maximum relative deviation and speed ratio,
   on a realistic smooth field and on the mean image of a simulated plate;
3. tiles per second read from a tile store when sampling N random tiles from K random wells.

``python -m benchmarks imaging``; ``I2O_BENCH_FULL=1`` also runs the literal flat field at the
paper's full geometry (1080 px, k = 250, sigma = 50; 10-40 minutes), otherwise its time is
measured on a band of rows and scaled to the image (the literal filter's cost is the same for
every row).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import hardware_summary, peak_rss_mib
from i2o_utils.config import get_profile
from i2o_utils.data import layout
from i2o_utils.data.simulate import acquire, render_field, vignetting
from i2o_utils.imaging.flatfield import (MeanAccumulator, correct_image, default_step, flatfield_from_mean,
                                         grid_percentile, percentile_filter_exact)
from i2o_utils.imaging.nuclei import find_nuclei_centres
from i2o_utils.imaging.plan import WellTask
from i2o_utils.imaging.tiles import extract_tiles, tile_corners, to_tile_dtype
from i2o_utils.imaging.tilestore import TileStore, finalise_store, write_plate_tiles
from i2o_utils.imaging.well import process_well
from tests.support.imaging import relative_deviation, vignetting_field

GAINS = np.array([1800.0, 1400.0, 1600.0])


def _fields(n: int, size: int, cells: float, d: float, cell_d: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    shading = vignetting((size, size), 0.45, (size * 0.47, size * 0.55))
    out = np.empty((n, 3, size, size), np.uint16)
    for i in range(n):
        signal, _ = render_field(rng.normal(0, 1, 4), (size, size), cells, d, cell_d, rng)
        out[i] = acquire(signal, shading, GAINS, rng)
    return out, shading


def bench_fields() -> None:
    prof = get_profile("paper")
    sc, im = prof.screen, prof.imaging
    fields, shading = _fields(4, sc.field_size, sc.cells_per_field, sc.nucleus_diameter_px, sc.cell_diameter_px)
    ff = np.stack([shading * 1000.0 + 100.0] * 3).astype(np.float32)  # any positive flat field: same cost
    scale = np.array([20.0, 15.0, 10.0], np.float32)
    reps, n, tiles = 3, 0, 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reps):
        for f in fields:
            corrected = correct_image(f, ff)
            centres = find_nuclei_centres(corrected[0], sc.nucleus_diameter_px)
            corners, _ = tile_corners(centres, corrected.shape[1:], im.tile_size, "drop")
            t = extract_tiles(to_tile_dtype(corrected, scale, "uint8"), corners, im.tile_size)
            n += 1
            tiles += len(t)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"correction + nuclei + tiling, {sc.field_size}x{sc.field_size}x3 uint16, {sc.cells_per_field:g} "
          f"cells/field, {im.tile_size}px tiles: {n / cpu:.1f} fields per CPU-second of one core "
          f"(target >= 20; {n / dt:.1f} fields/s of wall time on this shared machine); {tiles / n:.1f} tiles/field")
    # the whole per-well function (16 fields as in the paper), features and file I/O included
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        well = np.concatenate([fields] * 4)[: sc.fields_per_well]
        layout.write_well_images(tmp / "RAW.X1.Y1.P1.h5", "ELN1_P", 1, 1, well)
        task = WellTask(plate="ELN1_P", well_id="A1", image_path=str(tmp / "RAW.X1.Y1.P1.h5"),
                        icf_path=str(tmp / "ICF.X1.Y1.P1.h5"), tiles_path=str(tmp / "TILES.X1.Y1.P1.h5"),
                        input_pointer="data/ICF/ICF.X1.Y1.P1.h5", shard_path=str(tmp / "s.npy"),
                        cells_path=str(tmp / "c.parquet"), marker_path=str(tmp / "m.json"))
        for features in (False, True):
            params = replace(prof.imaging.resolved(sc), features=features)
            t0, c0 = time.perf_counter(), time.process_time()
            row = process_well(task, ff, scale, params)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert row["status"] == "ok", row
            print(f"process_well ({len(well)} fields, read + correct + nuclei + tiles"
                  f"{' + features' if features else ''} + write ICF/TILES): {len(well) / cpu:.1f} fields per "
                  f"CPU-second ({len(well) / dt:.1f} per wall second)")


def _smooth_realistic(size: int, seed: int = 0) -> np.ndarray:
    """A plate mean as many fields average to: smooth cell density, vignetting, camera offset, noise."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    density = 1.0 + 0.15 * ndi.gaussian_filter(rng.normal(0, 1, (size, size)), size / 12) * (size / 12)
    return 100.0 + 400.0 * vignetting_field((size, size), 0.45) * density + rng.normal(0, 2.0, (size, size))


def bench_flatfield() -> None:
    full = os.environ.get("I2O_BENCH_FULL") == "1"
    # paper geometry: speed ratio (literal filter timed on a band of rows unless I2O_BENCH_FULL=1)
    img = _smooth_realistic(1080)
    t0 = time.perf_counter()
    fast = flatfield_from_mean(img, 10, 250, 50, "fast")
    t_fast = time.perf_counter() - t0
    if full:
        t0 = time.perf_counter()
        exact = flatfield_from_mean(img, 10, 250, 50, "exact")
        t_exact = time.perf_counter() - t0
        print(f"flat field 1080 px, k=250, sigma=50 (realistic smooth field): fast {t_fast:.2f} s, literal "
              f"{t_exact:.0f} s: speed ratio {t_exact / t_fast:.0f}x (target >= 500), max relative deviation "
              f"{100 * relative_deviation(fast, exact):.3f}% (target <= 1%)")
    else:
        rows = 6
        t0 = time.perf_counter()
        percentile_filter_exact(img, 10, 250, rows=slice(537, 537 + rows))
        t_exact = (time.perf_counter() - t0) * 1080 / rows
        print(f"flat field 1080 px, k=250, sigma=50: fast {t_fast:.2f} s; literal percentile filter "
              f"{t_exact:.0f} s (timed on {rows} rows, x{1080 // rows}): speed ratio {t_exact / t_fast:.0f}x "
              "(target >= 500)")
        # the fast method's percentile stage against the literal filter at its grid points
        step = default_step(250)
        off = step // 2
        grid = grid_percentile(img, 10, 250, step, off)
        ys = [0, 27, 53, 107]  # grid rows: top border, upper quarter, centre, bottom border
        ref = np.stack([percentile_filter_exact(img, 10, 250, rows=slice(off + step * j, off + step * j + 1))[0]
                        for j in ys])[:, off::step]
        print(f"  percentile stage at paper geometry, grid rows {ys}: max relative deviation "
              f"{100 * np.max(np.abs(grid[ys] - ref) / ref):.3f}%")
    # deviation at a reduced geometry where the literal computation takes seconds, same ratios
    for name, size, mean in (("realistic smooth field", 270, _smooth_realistic(270, seed=1)),
                             ("simulated plate mean (quick geometry, 84 fields)", 256, None)):
        if mean is None:
            q = get_profile("quick")
            fields, _ = _fields(84, 256, q.screen.cells_per_field, q.screen.nucleus_diameter_px,
                                q.screen.cell_diameter_px, seed=2)
            acc = MeanAccumulator()
            for f in fields:
                acc.add(f)
            mean = acc.mean
            k, sigma = q.imaging.flatfield_size, q.imaging.flatfield_sigma
        else:
            k, sigma = round(250 * size / 1080), 50 * size / 1080
        devs, tf, te = [], 0.0, 0.0
        planes = mean if mean.ndim == 3 else mean[None]
        for plane in planes:
            t0 = time.perf_counter()
            a = flatfield_from_mean(plane, 10, k, sigma, "fast")
            tf += time.perf_counter() - t0
            t0 = time.perf_counter()
            b = flatfield_from_mean(plane, 10, k, sigma, "exact")
            te += time.perf_counter() - t0
            devs.append(relative_deviation(a, b))
        print(f"flat field {name}, {size} px, k={k}, sigma={sigma:.1f}: max relative deviation fast vs literal "
              f"{100 * max(devs):.3f}% over {len(planes)} channel(s) (target <= 1%); speed ratio {te / tf:.0f}x")


def bench_store() -> None:
    rng = np.random.default_rng(0)
    s, n_wells, per_well = 128, 48, 160
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = rng.integers(0, 60, (per_well, 3, s, s)).astype(np.uint8)  # dim, noisy tiles
        wells, index, placed = [], [], []
        for plate in ("P1", "P2"):
            ids = [f"W{k}" for k in range(n_wells // 2)]
            placed = write_plate_tiles(root / f"plates/{plate}.h5", ((w, base) for w in ids), per_well * len(ids), s)
            for w, start, n in placed:
                wells.append({"plate": plate, "well_id": w, "target": "NT", "cell_state": "m1", "n_tiles": n,
                              "start": start})
                index.append({"plate": plate, "well_id": w, "fov": 0, "row": 0, "col": 0, "r0": 0, "c0": 0,
                              "i": start})
        finalise_store(root, pd.DataFrame(wells), pd.DataFrame(index), {"P1": "plates/P1.h5", "P2": "plates/P2.h5"},
                       s, "uint8", [1.0, 1.0, 1.0], ["a", "b", "c"])
        store = TileStore(root)
        size_mib = sum(f.stat().st_size for f in root.rglob("*.h5")) / 2**20
        for k, n in ((240, 12), (64, 64)):
            store.sample(rng.integers(0, len(store), 8), n, rng)  # open files, warm the cache
            t0 = time.perf_counter()
            reps = 3
            for _ in range(reps):
                store.sample(rng.integers(0, len(store), k), n, rng)
            dt = time.perf_counter() - t0
            print(f"tile store ({len(store)} wells x {per_well} tiles of 3x{s}x{s} uint8, {size_mib:.0f} MiB, "
                  f"page cache warm): K={k} wells x N={n} tiles: {reps * k * n / dt:.0f} tiles/s")


def main() -> None:
    print(hardware_summary())
    print("profile: paper geometry (1080x1080 fields, 128 px tiles) unless stated")
    bench_fields()
    bench_flatfield()
    bench_store()
    print(f"peak memory {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
