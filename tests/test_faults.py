"""Faults injected into small screens: each stops with an error naming the file, well or row at
fault, or leaves outputs that equal a clean computation. None may exit 0 with wrong results.

The five silent failures this guards against: flat fields reused after the screen changed;
finished wells whose input file changed kept as they were; a data root made with other settings
silently regenerated; a blank ``target`` turned into a perturbation "nan"; NaN pixels reported as
a well without nuclei.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from i2o_utils import cli
from i2o_utils.config import CHANNELS, get_profile
from i2o_utils.data import layout
from i2o_utils.data.layout import LayoutError
from i2o_utils.data.prepare import prepare_data
from i2o_utils.data.simulate import ScreenMismatch, acquire, read_screen_info, render_field, simulate_screen, vignetting
from i2o_utils.imaging.pipeline import ImagingError, preprocess_images
from i2o_utils.imaging.tilestore import TileStore, TileStoreError
from i2o_utils.locks import LOCK_NAME, LockHeld, run_lock
from i2o_utils.paths import bucket_paths

SHAPE = (96, 96)
PROFILE = get_profile("smoke").with_overrides(imaging={"tile_size": 24, "flatfield_size": 31,
                                                      "flatfield_sigma": 6.0, "scheduler": "synchronous"})
PLATES = ("ELN90001_IMG01M1", "ELN90001_IMG02M2")
"""Barcodes in the authors' form; metadata.csv names a plate by the part after the underscore."""


def _screen(root, seed=0, wells_per_plate=3):
    """Two plates of simulated raw wells (one field each); plate names with an underscore."""
    rng = np.random.default_rng(seed)
    bp = bucket_paths(root)
    rows = []
    for k, plate in enumerate(PLATES):
        shading = vignetting(SHAPE, 0.3 + 0.15 * rng.random(), (40.0 + 10 * rng.random(), 50.0))
        gains = np.array([1800.0, 1400.0, 1600.0]) * np.exp(rng.normal(0, 0.3, 3))
        for col in range(1, wells_per_plate + 1):
            signal, _ = render_field(rng.normal(0, 1, 4), SHAPE, 14.0, 10.0, 28.0, rng)
            raw = acquire(signal, shading, gains, rng)
            layout.write_well_images(bp["raw"] / layout.image_file_name("RAW", plate, 2, col), plate, 2, col, raw[None])
            rows.append({"well_id": f"B{col}", "PLATE_ID": layout.plate_id(plate), "target": "NT" if col == 1 else f"G{col}",
                         "cell_state": "m1" if k == 0 else "m2", "Column": col})
    layout.write_metadata(pd.DataFrame(rows), bp["metadata"])
    return bp


def _run(root, out, **kw):
    return preprocess_images(PROFILE, data_root=root, out_dir=out, progress=False, **kw)


@pytest.fixture()
def done_run(tmp_path):
    """A screen and a finished, clean run of notebook 20's step on it."""
    bp = _screen(tmp_path / "data")
    res = _run(tmp_path / "data", tmp_path / "res")
    assert (res.status["status"] == "ok").all()
    return tmp_path, bp, res


def _raw(bp, plate, col):
    return bp["raw"] / layout.image_file_name("RAW", plate, 2, col)


# --------------------------------------------------------------------------------------------
# finding 1: flat fields (and tile scale) follow the images they were computed from
# --------------------------------------------------------------------------------------------
def test_regenerated_screen_is_not_corrected_with_old_flat_fields(done_run):
    tmp, bp, first = done_run
    _screen(tmp / "data", seed=7)  # the same plates and wells, other images
    again = _run(tmp / "data", tmp / "res")
    icf = sorted(layout.list_well_files(bp["icf"]))
    corrected = [layout.read_well_images(p).fields for p in icf]
    fresh = _run(tmp / "data", tmp / "fresh")  # rewrites data/ICF from scratch
    assert not again.status["skipped"].any()
    for plate in PLATES:
        assert not np.allclose(first.flatfields[plate], fresh.flatfields[plate])
        np.testing.assert_array_equal(again.flatfields[plate], fresh.flatfields[plate])
    np.testing.assert_array_equal(again.scale, fresh.scale)
    for p, c in zip(icf, corrected):
        np.testing.assert_array_equal(c, layout.read_well_images(p).fields)
    a, b = TileStore(again.store_dir), TileStore(fresh.store_dir)
    assert a.n_tiles == b.n_tiles
    np.testing.assert_array_equal(a.read_well(0), b.read_well(0))
    pd.testing.assert_frame_equal(pd.read_parquet(again.paths["features_wells"]),
                                  pd.read_parquet(fresh.paths["features_wells"]))


def test_unchanged_screen_is_reused(done_run):
    tmp, _, first = done_run
    again = _run(tmp / "data", tmp / "res")
    assert again.status["skipped"].all()
    for plate in PLATES:
        np.testing.assert_array_equal(again.flatfields[plate], first.flatfields[plate])


# --------------------------------------------------------------------------------------------
# finding 2: a finished well's input file is rechecked
# --------------------------------------------------------------------------------------------
def test_finished_well_whose_channel_was_deleted_fails_named(done_run):
    tmp, bp, _ = done_run
    path = _raw(bp, PLATES[0], 2)
    with h5py.File(path, "a") as f:
        del f[CHANNELS[1]]
    with pytest.raises(ImagingError) as e:
        _run(tmp / "data", tmp / "res")
    assert str(path) in str(e.value) and "well B2" in str(e.value) and "channel" in str(e.value)


def test_finished_well_converted_to_float_fails_named(done_run):
    tmp, bp, _ = done_run
    path = _raw(bp, PLATES[1], 3)
    w = layout.read_well_images(path)
    layout.write_well_images(path, w.plate, w.row, w.column, w.fields.astype(np.float32))
    with pytest.raises(ImagingError) as e:
        _run(tmp / "data", tmp / "res")
    assert str(path) in str(e.value) and "float32" in str(e.value)


def test_finished_well_zeroed_loses_its_old_tiles(done_run):
    tmp, bp, first = done_run
    path = _raw(bp, PLATES[0], 3)
    w = layout.read_well_images(path)
    layout.write_well_images(path, w.plate, w.row, w.column, np.zeros_like(w.fields))
    res = _run(tmp / "data", tmp / "res")
    st = res.status.set_index(["plate", "well_id"])
    assert st.loc[(PLATES[0], "B3"), "status"] == "no_nuclei" and not st.loc[(PLATES[0], "B3"), "skipped"]
    assert st.loc[(PLATES[0], "B3"), "n_tiles"] == 0
    wells = TileStore(res.store_dir).wells
    assert not ((wells["plate"] == PLATES[0]) & (wells["well_id"] == "B3")).any()
    assert TileStore(res.store_dir).n_tiles == int(st["n_tiles"].sum()) < int(first.status["n_tiles"].sum())


# --------------------------------------------------------------------------------------------
# stale features: a corrected metadata.csv reaches the features and the tile store
# --------------------------------------------------------------------------------------------
def test_corrected_metadata_reaches_features(done_run):
    tmp, bp, _ = done_run
    meta = pd.read_csv(bp["metadata"], dtype=str)
    meta.loc[(meta["PLATE_ID"] == layout.plate_id(PLATES[1])) & (meta["well_id"] == "B2"), "target"] = "STAT6"
    meta.to_csv(bp["metadata"], index=False)
    res = _run(tmp / "data", tmp / "res")
    st = res.status.set_index(["plate", "well_id"])
    assert not st.loc[(PLATES[1], "B2"), "skipped"] and st.drop((PLATES[1], "B2"))["skipped"].all()
    cells = pd.read_parquet(res.paths["features_cells"])
    mine = cells[(cells["Metadata_Plate"] == PLATES[1]) & (cells["Metadata_Well"] == "B2")]
    assert len(mine) and (mine["Metadata_Target"] == "STAT6").all()
    wf = pd.read_parquet(res.paths["features_wells"])
    assert "G2" not in set(wf.loc[wf["Metadata_Plate"] == PLATES[1], "Metadata_Target"])
    w = TileStore(res.store_dir).wells
    assert w.loc[(w["plate"] == PLATES[1]) & (w["well_id"] == "B2"), "target"].tolist() == ["STAT6"]


# --------------------------------------------------------------------------------------------
# finding 3: a data root is never replaced without being asked
# --------------------------------------------------------------------------------------------
TINY = get_profile("smoke").with_overrides(screen={"n_knockouts": 2, "nt_wells_per_plate": 2, "field_size": 48,
                                                   "cells_per_field": 3.0, "n_transcripts": 60, "n_proteins": 20})


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_screen_made_with_other_settings_is_not_replaced(tmp_path):
    root = tmp_path / "screen"
    simulate_screen(root, profile=TINY, seed=3, progress=False)
    before = _mtimes(root)
    with pytest.raises(ScreenMismatch, match=r"seed 3 \(asked 0\)") as e:
        prepare_data(source="simulated", profile=TINY, seed=0, root=root, progress=False)  # notebook 00
    assert "overwrite=True" in str(e.value) and "Nothing was changed" in str(e.value)
    with pytest.raises(ScreenMismatch, match=r"null False \(asked True\)"):
        simulate_screen(root, profile=TINY, seed=3, null=True, progress=False)
    assert _mtimes(root) == before
    again = simulate_screen(root, profile=TINY, seed=3, progress=False)  # the same settings: used as is
    assert again.skipped and "already present" in str(again) and _mtimes(root) == before
    redo = simulate_screen(root, profile=TINY, seed=0, overwrite=True, progress=False)
    assert not redo.skipped and read_screen_info(root)["seed"] == 0


def test_cli_simulate_on_another_screen_one_line_exit_2(tmp_path, capsys):
    root = tmp_path / "screen"
    simulate_screen(root, profile=TINY, seed=3, progress=False)
    before = _mtimes(root)
    # the CLI takes a profile by name: a smoke request on a TINY screen differs in the screen's sizes
    assert cli.main(["simulate", "--profile", "smoke", "--seed", "0", "--out", str(root), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed 3 (asked 0)" in err[0] and "Traceback" not in err[0]
    assert _mtimes(root) == before and not (root / LOCK_NAME).exists()


def test_downloaded_data_are_never_replaced(tmp_path):
    root = tmp_path / "real"
    bp = bucket_paths(root)
    bp["icf"].mkdir(parents=True)
    (bp["icf"] / "ICF.X1.Y1.P1.t.ELN_P.h5").write_bytes(b"downloaded")
    (root / "REAL_DATA.json").write_text("{}")
    for overwrite in (False, True):
        with pytest.raises(ScreenMismatch, match="never replaced"):
            simulate_screen(root, profile=TINY, overwrite=overwrite, progress=False)
    assert (bp["icf"] / "ICF.X1.Y1.P1.t.ELN_P.h5").read_bytes() == b"downloaded"


def test_truncated_screen_json_is_named(tmp_path):
    root = tmp_path / "screen"
    root.mkdir()
    (root / "SCREEN.json").write_text('{"source": "simulated", "pro')
    with pytest.raises(LayoutError, match="SCREEN.json: not a readable screen description"):
        simulate_screen(root, profile=TINY, progress=False)


# --------------------------------------------------------------------------------------------
# finding 4 and other bad tables: blank target, empty metadata.csv
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("column", ["target", "cell_state", "PLATE_ID"])
def test_blank_metadata_cell_is_an_error_naming_file_line_and_well(tmp_path, column):
    bp = _screen(tmp_path / "data", wells_per_plate=2)
    meta = pd.read_csv(bp["metadata"], dtype=str)
    meta.loc[2, column] = " " if column == "cell_state" else np.nan
    meta.to_csv(bp["metadata"], index=False)
    with pytest.raises(LayoutError) as e:
        layout.read_metadata(bp["metadata"])
    msg = str(e.value)
    assert str(bp["metadata"]) in msg and "line 4" in msg and f"blank '{column}'" in msg and "B1" in msg
    with pytest.raises(LayoutError, match=f"blank '{column}'"):
        _run(tmp_path / "data", tmp_path / "res")
    assert not (tmp_path / "res" / "tilestore").exists()


def test_empty_metadata_csv_is_named(tmp_path):
    bp = _screen(tmp_path / "data", wells_per_plate=1)
    bp["metadata"].write_bytes(b"")
    with pytest.raises(LayoutError, match=f"{bp['metadata']}: not a readable CSV"):
        layout.read_metadata(bp["metadata"])


# --------------------------------------------------------------------------------------------
# finding 5 and other bad image files
# --------------------------------------------------------------------------------------------
def _icf_only(bp):
    """The real-data layout: corrected float32 images in data/ICF and no RAW."""
    bp["icf"].mkdir(parents=True)
    for f in bp["raw"].iterdir():
        w = layout.read_well_images(f)
        layout.write_well_images(bp["icf"] / f.name.replace("RAW.", "ICF.", 1), w.plate, w.row, w.column,
                                 w.fields.astype(np.float32) / 1000)
    shutil.rmtree(bp["raw"])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_pixels_fail_the_well_named(tmp_path, value):
    bp = _screen(tmp_path / "data", wells_per_plate=2)
    _icf_only(bp)
    path = bp["icf"] / layout.image_file_name("ICF", PLATES[1], 2, 2)
    w = layout.read_well_images(path)
    fields = w.fields.copy()
    fields[0, 0, 10:20, 10:20] = value
    layout.write_well_images(path, w.plate, w.row, w.column, fields)
    with pytest.raises(ImagingError) as e:
        _run(tmp_path / "data", tmp_path / "res")
    msg = str(e.value)
    assert str(path) in msg and f"plate {PLATES[1]}, well B2" in msg and "100 NaN or infinite pixel(s)" in msg
    assert "no_nuclei" not in msg
    # nothing downstream can use the step's outputs until the file is fixed
    with pytest.raises(TileStoreError, match="1 well\\(s\\) failed in the image preprocessing"):
        TileStore(tmp_path / "res" / "tilestore")
    assert not list((tmp_path / "res").glob("features_*.parquet"))
    layout.write_well_images(path, w.plate, w.row, w.column, w.fields)
    res = _run(tmp_path / "data", tmp_path / "res")
    assert (res.status["status"] == "ok").all()  # (the tile scale changed with the file: all redone)
    assert len(TileStore(res.store_dir)) == 4 and res.paths["features_wells"].exists()


def test_unreadable_file_is_reported_under_its_whole_plate_name(tmp_path):
    bp = _screen(tmp_path / "data", wells_per_plate=2)
    bad = _raw(bp, PLATES[0], 2)
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(ImagingError) as e:
        _run(tmp_path / "data", tmp_path / "res")
    assert str(bad) in str(e.value) and f"plate {PLATES[0]}, well B2" in str(e.value)


def test_out_of_range_row_attribute_names_the_file(tmp_path):
    bp = _screen(tmp_path / "data", wells_per_plate=2)
    bad = _raw(bp, PLATES[1], 1)
    with h5py.File(bad, "a") as f:
        f.attrs["ROW"] = 40
    with pytest.raises(ImagingError) as e:
        _run(tmp_path / "data", tmp_path / "res")
    assert str(bad) in str(e.value) and "ROW=40" in str(e.value)


def test_two_files_claiming_one_well_are_named(tmp_path):
    bp = _screen(tmp_path / "data", wells_per_plate=2)
    src = _raw(bp, PLATES[0], 1)
    twin = bp["raw"] / src.name.replace("2023001000000", "2023002000000")
    shutil.copy(src, twin)
    with pytest.raises(LayoutError) as e:
        _run(tmp_path / "data", tmp_path / "res")
    msg = str(e.value)
    assert f"plate {PLATES[0]}, well B1 is claimed by 2 files" in msg and str(src) in msg and str(twin) in msg


def test_leftover_part_files_are_removed_by_the_next_run(done_run):
    tmp, bp, _ = done_run
    left = [bp["icf"] / ".ICF.X2.Y1.P1.2023001000000.ELN90001_IMG01M1.h5.abc123.part",
            tmp / "res" / "work" / "tiles" / PLATES[0] / ".B1.npy.xyz.part"]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a file")
    _run(tmp / "data", tmp / "res")
    assert not any(p.exists() for p in left)
    assert not list(tmp.rglob("*.part"))


# --------------------------------------------------------------------------------------------
# concurrency and the command line
# --------------------------------------------------------------------------------------------
def test_second_run_on_a_locked_root_is_refused(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom i2o_utils.locks import run_lock\n"
                               "with run_lock(sys.argv[1], what='i2o run (data root)'):\n"
                               "    print('held', flush=True); time.sleep(120)", str(tmp_path / "data")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = cli.main(["run", "--profile", "smoke", "00", "--data-dir", str(tmp_path / "data"),
                      "--results-dir", str(tmp_path / "res"), "--output-dir", str(tmp_path / "ex")])
        err = capsys.readouterr().err.strip().splitlines()
        with pytest.raises(LockHeld, match=f"in use by process {holder.pid}"):
            with run_lock(tmp_path / "data"):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert r == 2 and len(err) == 1
    assert f"is in use by process {holder.pid}" in err[0] and "i2o run (data root)" in err[0]
    assert not (tmp_path / "ex" / "00_download_data.ipynb").exists()  # nothing ran
    with run_lock(tmp_path / "data") as path:  # the holder is gone: its lock is stale
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_lock_of_a_process_that_is_gone_is_taken_over(tmp_path):
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(p.stdout)
    root = tmp_path / "res"
    root.mkdir()
    (root / LOCK_NAME).write_text(json.dumps({"pid": dead, "host": "", "since": "earlier", "what": "i2o run"}))
    with run_lock(root) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


def test_s3_endpoint_unreachable_one_line_exit_2(tmp_path, capsys):
    rc = cli.main(["data", "fetch", "--source", "s3", "--s3-endpoint-url", "http://127.0.0.1:9",
                   "--dest", str(tmp_path / "d"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "127.0.0.1:9" in err[0] and "Traceback" not in err[0]


# --------------------------------------------------------------------------------------------
# a well dropped for a legitimate reason is reported downstream
# --------------------------------------------------------------------------------------------
def test_wells_left_out_are_named_for_later_notebooks(tmp_path):
    bp = _screen(tmp_path / "data", wells_per_plate=2)
    path = _raw(bp, PLATES[1], 2)
    w = layout.read_well_images(path)
    layout.write_well_images(path, w.plate, w.row, w.column, np.zeros_like(w.fields))
    res = _run(tmp_path / "data", tmp_path / "res")
    note = TileStore(res.store_dir).wells_note()
    assert note.startswith("3 wells with tiles are used; 1 imaged well(s) left out (1 no_nuclei)")
    assert f"{PLATES[1]} B2: no nuclei found (fov 0: all-dark or constant nucleus channel)" in note
    from i2o_utils.imaging.tilestore import stored_wells_note

    assert stored_wells_note(res.store_dir) == TileStore(res.store_dir).wells_note(one_line=True)
    assert "\n" not in stored_wells_note(res.store_dir) and stored_wells_note(tmp_path / "none") is None


def test_pretraining_does_not_resume_on_a_changed_store(tmp_path, torch_one_thread):
    from i2o_utils.config import PretrainConfig
    from tests.support.tiles import synthetic_tiles
    from i2o_utils.model.train import pretrain

    cfg = PretrainConfig(wells_per_batch=8, groups_per_batch=4, tiles_per_well=2, steps=2, steps_per_epoch=2,
                         backbone_width=4, dense_dims=(16, 8), lr=1e-3, seed=3)
    store = synthetic_tiles(n_targets=4, wells_per_group=3, tiles_per_well=[3, 5], tile_size=16, seed=1)
    pretrain(store, cfg, tmp_path, stop_after=1, progress=False)
    store.wells.loc[0, "target"] = "relabelled"
    with pytest.raises(ValueError, match="tile store changed since this checkpoint"):
        pretrain(store, cfg, tmp_path, resume=True, progress=False)


def test_predictions_from_another_tile_store_stop_the_evaluation(tmp_path, monkeypatch):
    from i2o_utils import cache
    from i2o_utils.evaluation.pipeline import _refuse_stale_predictions
    from i2o_utils.evaluation.predictions import PredictionsMissing, predictions_dir

    monkeypatch.setenv("I2O_RESULTS_DIR", str(tmp_path / "results"))
    bp = _screen(tmp_path / "data", wells_per_plate=2)
    out = tmp_path / "results" / "20_preprocess_images"
    res = _run(tmp_path / "data", out)
    folder = predictions_dir()
    cache.write_record(folder.parent, store=TileStore(res.store_dir).content_key())
    _refuse_stale_predictions(folder)  # made from this store
    _run(tmp_path / "data", out)  # an unchanged re-run keeps the store's key
    _refuse_stale_predictions(folder)
    meta = pd.read_csv(bp["metadata"], dtype=str)
    meta.loc[0, "target"] = "STAT1"
    meta.to_csv(bp["metadata"], index=False)
    _run(tmp_path / "data", out)
    with pytest.raises(PredictionsMissing, match="made from another tile store"):
        _refuse_stale_predictions(folder)
