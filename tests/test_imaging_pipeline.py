"""The per-well map of notebook 20: outputs, resumability, bad input, features."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from i2o_utils.config import get_profile
from i2o_utils.data import layout
from i2o_utils.data.simulate import acquire, render_field, vignetting
from i2o_utils.imaging import pipeline
from i2o_utils.imaging.features import aggregate_wells, cell_features, feature_columns, shape_features
from i2o_utils.imaging.pipeline import ImagingError, preprocess_images
from i2o_utils.imaging.tilestore import TileStore
from i2o_utils.paths import bucket_paths

SHAPE = (96, 96)
PROFILE = get_profile("smoke").with_overrides(imaging={"tile_size": 24, "flatfield_size": 31,
                                                      "flatfield_sigma": 6.0, "scheduler": "synchronous"})


def _screen(root, wells_per_plate=3, empty=("E_P2", 3), seed=0):
    """Two plates of simulated wells (one field each); one well of plate P2 has no cells."""
    rng = np.random.default_rng(seed)
    bp = bucket_paths(root)
    rows = []
    for plate in ("E_P1", "E_P2"):
        shading = vignetting(SHAPE, 0.4, (40.0, 50.0))
        for col in range(1, wells_per_plate + 2):
            n_cells = 0.0 if (plate, col) == empty else 14.0
            signal, _ = render_field(rng.normal(0, 1, 4), SHAPE, n_cells, 10.0, 28.0, rng)
            raw = acquire(signal, shading, np.array([1800.0, 1400.0, 1600.0]), rng)
            name = layout.image_file_name("RAW", plate, 2, col)
            layout.write_well_images(bp["raw"] / name, plate, 2, col, raw[None])
            rows.append({"well_id": f"B{col}", "PLATE_ID": layout.plate_id(plate), "target": "NT" if col == 1 else f"G{col}",
                         "cell_state": "m1" if plate == "E_P1" else "m2", "Column": col})
    layout.write_metadata(pd.DataFrame(rows), bp["metadata"])
    return bp


def _run(root, out, **kw):
    return preprocess_images(PROFILE, data_root=root, out_dir=out, progress=False, **kw)


def test_outputs_and_resume(tmp_path):
    bp = _screen(tmp_path / "data")
    out = tmp_path / "results"
    res = _run(tmp_path / "data", out)
    st = res.status.set_index(["plate", "well_id"])
    assert len(st) == 8 and not st["skipped"].any()
    assert st.loc[("E_P2", "B3"), "status"] == "no_nuclei" and st.loc[("E_P2", "B3"), "n_tiles"] == 0
    assert (st.drop(("E_P2", "B3"))["status"] == "ok").all()
    # corrected images in the per-well layout, tiles files with corners inside the field
    icf = layout.index_wells(bp["icf"])
    assert len(icf) == 8
    w = layout.read_well_images(icf["path"].iat[0])
    assert w.fields.dtype == np.float32 and w.fields.shape == (1, 3, *SHAPE)
    tiles_files = layout.list_well_files(bp["tiles"])
    assert len(tiles_files) == 8
    for f in tiles_files:
        t = layout.read_well_tiles(f)
        assert Path(t.input_pointer).is_absolute() and t.plate_barcode in ("E_P1", "E_P2") and t.plane == 1
        assert t.image_path(bp["root"]) == bp["icf"] / f.name.replace("TILES.", "ICF.", 1)
        assert ((t.tile_coords >= 0) & (t.tile_coords <= SHAPE[0] - 24)).all()
    # the store holds every tile of the wells with tiles; it matches the TILES corners
    store = TileStore(res.store_dir)
    assert store.n_tiles == int(st["n_tiles"].sum()) and len(store) == 7 and store.tile_size == 24
    assert set(store.wells.columns) >= {"plate", "well_id", "target", "cell_state", "n_tiles"}
    idx = store.index
    first = store.wells.iloc[0]
    tf = layout.read_well_tiles(bp["tiles"] / "TILES.X2.Y1.P1.2023001000000.E_P1.h5")
    mine = idx[(idx["plate"] == first["plate"]) & (idx["well_id"] == first["well_id"])]
    np.testing.assert_array_equal(mine[["r0", "c0"]].to_numpy(), tf.tile_coords)
    # a stored tile is the corrected field's pixels at the TILES corner, scaled
    icf_img = layout.read_well_images(bp["icf"] / "ICF.X2.Y1.P1.2023001000000.E_P1.h5").fields[0]
    r0, c0 = tf.tile_coords[0]
    expect = np.clip(np.rint(icf_img[:, r0:r0 + 24, c0:c0 + 24] / res.scale[:, None, None] * 255), 0, 255)
    assert np.abs(store.read_well(0)[0].astype(int) - expect).max() <= 1
    # features per cell and per well, identity in Metadata_* columns
    cells = pd.read_parquet(res.paths["features_cells"])
    wells = pd.read_parquet(res.paths["features_wells"])
    assert {"Metadata_Plate", "Metadata_Well", "Metadata_Target", "Metadata_CellState"} <= set(cells.columns)
    assert "Nuclei_AreaShape_Area" in feature_columns(wells) and len(wells) == 7
    assert (cells["Metadata_TileNumber"] >= 0).sum() == store.n_tiles
    # flat fields: one per plate and channel, smooth and positive
    assert set(res.flatfields) == {"E_P1", "E_P2"} and res.flatfields["E_P1"].shape == (3, *SHAPE)
    # a re-run skips every well and changes nothing
    before = {p: p.stat().st_mtime_ns for p in bp["icf"].iterdir()}
    again = _run(tmp_path / "data", out)
    assert again.status["skipped"].all() and again.n_processed == 0
    assert {p: p.stat().st_mtime_ns for p in bp["icf"].iterdir()} == before
    assert TileStore(again.store_dir).n_tiles == store.n_tiles
    # a well whose outputs no longer verify is redone, and only that one
    (bp["tiles"] / "TILES.X2.Y2.P1.2023001000000.E_P1.h5").write_bytes(b"truncated")
    third = _run(tmp_path / "data", out)
    redone = third.status[~third.status["skipped"]]
    assert redone[["plate", "well_id"]].values.tolist() == [["E_P1", "B2"]]
    assert TileStore(third.store_dir).n_tiles == store.n_tiles
    assert not list(out.rglob("*.part")) and not list(bp["root"].rglob("*.part"))


def test_changing_the_flatfield_method_recomputes_the_flat_fields_and_the_wells(tmp_path):
    _screen(tmp_path / "data", wells_per_plate=1)
    out = tmp_path / "results"
    fast = _run(tmp_path / "data", out)
    exact = preprocess_images(PROFILE.with_overrides(imaging={"flatfield_method": "exact"}), data_root=tmp_path / "data",
                              out_dir=out, progress=False)
    with h5py.File(exact.paths["flatfields"]) as f:
        assert {f[p].attrs["method"] for p in f} == {"exact"}
    assert not exact.status["skipped"].any()  # corrected with the new flat fields
    assert any(not np.array_equal(fast.flatfields[p], exact.flatfields[p]) for p in fast.flatfields)


def test_bad_files_are_named_and_the_rest_is_kept(tmp_path):
    bp = _screen(tmp_path / "data", wells_per_plate=2, empty=None)
    bad = bp["raw"] / layout.image_file_name("RAW", "E_P1", 2, 2)
    bad.write_bytes(bad.read_bytes()[:300])  # truncated HDF5
    wrong = bp["raw"] / layout.image_file_name("RAW", "E_P2", 2, 1)  # the plate's first well: wrong shape
    layout.write_well_images(wrong, "E_P2", 2, 1, np.zeros((1, 3, 50, 50), np.uint16))
    dark = bp["raw"] / layout.image_file_name("RAW", "E_P1", 2, 3)  # an all-dark field: recorded, no crash
    layout.write_well_images(dark, "E_P1", 2, 3, np.zeros((1, 3, *SHAPE), np.uint16))
    with pytest.raises(ImagingError) as e:
        _run(tmp_path / "data", tmp_path / "res")
    msg = str(e.value)
    assert str(bad) in msg and "well B2" in msg and str(wrong) in msg and "well B1" in msg
    res = _run(tmp_path / "data", tmp_path / "res", on_error="record")
    st = res.status.set_index(["plate", "well_id"])
    assert st.loc[("E_P1", "B2"), "status"] == "error" and st.loc[("E_P2", "B1"), "status"] == "error"
    assert st.loc[("E_P1", "B3"), "status"] == "no_nuclei" and "all-dark" in st.loc[("E_P1", "B3"), "notes"]
    assert (st["status"] == "ok").sum() == 3 and st.loc[("E_P1", "B1"), "skipped"]  # kept from the first run
    assert len(TileStore(res.store_dir)) == 3


def test_interrupted_well_leaves_no_half_file(tmp_path, monkeypatch):
    bp = _screen(tmp_path / "data", wells_per_plate=1, empty=None)

    def boom(*a, **k):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(pipeline.layout, "write_well_tiles", boom)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "data", tmp_path / "res")
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("done/*/*.json"))
    assert not bp["tiles"].exists() or not list(bp["tiles"].iterdir())
    monkeypatch.undo()
    res = _run(tmp_path / "data", tmp_path / "res")
    assert (res.status["status"] == "ok").all() and not res.status["skipped"].any()


def test_dask_local_cluster_gives_the_same_result(tmp_path):
    _screen(tmp_path / "data", wells_per_plate=2, empty=None)
    sync = _run(tmp_path / "data", tmp_path / "a")
    dist = _run(tmp_path / "data", tmp_path / "b", scheduler="threads", n_workers=2)
    a, b = TileStore(sync.store_dir), TileStore(dist.store_dir)
    pd.testing.assert_frame_equal(a.wells, b.wells)
    for i in range(len(a)):
        np.testing.assert_array_equal(a.read_well(i), b.read_well(i))


def test_shape_features_match_scikit_image():
    from skimage.draw import ellipse
    from skimage.measure import regionprops

    lab = np.zeros((80, 90), np.int32)
    lab[ellipse(30, 30, 10, 20, rotation=0.5)] = 1
    lab[ellipse(60, 65, 8, 8)] = 2
    f = shape_features(lab, 3, "Cells")
    for p in regionprops(lab):
        k = p.label - 1
        assert f["Cells_AreaShape_Area"][k] == p.area
        assert f["Cells_AreaShape_MajorAxisLength"][k] == pytest.approx(p.axis_major_length, rel=1e-6)
        assert f["Cells_AreaShape_MinorAxisLength"][k] == pytest.approx(p.axis_minor_length, rel=1e-6)
        assert f["Cells_AreaShape_Eccentricity"][k] == pytest.approx(p.eccentricity, abs=1e-5)
        assert f["Cells_AreaShape_Perimeter"][k] == pytest.approx(p.perimeter, rel=0.1)
    assert np.isnan(f["Cells_AreaShape_Area"][2])
    assert f["Cells_AreaShape_FormFactor"][1] == pytest.approx(1.0, abs=0.1)  # a disk


def test_cell_features_follow_the_cells():
    rng = np.random.default_rng(3)
    field = np.zeros((3, 120, 120), np.float32)
    yy, xx = np.mgrid[0:120, 0:120]
    centres = np.array([[30, 30], [80, 85]])
    for (r, c), rad in zip(centres, (5, 9)):
        field[0][(yy - r) ** 2 + (xx - c) ** 2 <= rad**2] = 100
        field[2][(yy - r) ** 2 + (xx - c) ** 2 <= (2.5 * rad) ** 2] = 50
    field += rng.normal(0, 1, field.shape).astype(np.float32) + 5
    t = cell_features(field, centres, 10.0)
    assert len(t) == 2
    big, small = t["Nuclei_AreaShape_Area"].iloc[1], t["Nuclei_AreaShape_Area"].iloc[0]
    assert big == pytest.approx(np.pi * 81, rel=0.25) and small == pytest.approx(np.pi * 25, rel=0.3)
    assert t["Cells_AreaShape_Area"].iloc[1] > t["Cells_AreaShape_Area"].iloc[0] > small
    from scipy import ndimage as ndi

    from i2o_utils.imaging.features import segment_cells

    nuclei, cells = segment_cells(field, centres, 10.0)
    np.testing.assert_allclose(t["Cells_Intensity_MeanIntensity_Phalloidin"], ndi.mean(field[2], cells, [1, 2]), rtol=1e-5)
    np.testing.assert_allclose(t["Cells_Intensity_StdIntensity_Hoechst"],
                               ndi.standard_deviation(field[0], cells, [1, 2]), rtol=1e-4)
    np.testing.assert_allclose(t["Nuclei_Intensity_IntegratedIntensity_Hoechst"], ndi.sum(field[0], nuclei, [1, 2]),
                               rtol=1e-5)
    t["Metadata_Plate"], t["Metadata_Well"] = "P", ["A1", "A1"]
    t["Metadata_Target"], t["Metadata_Field"], t["Metadata_TileNumber"] = "T1", 0, [0, 1]
    w = aggregate_wells(t)
    assert w["Cells_Count"].tolist() == [2] and w["Metadata_Well"].tolist() == ["A1"]
    # the well's metadata are kept, a cell's own (its field, its tile) are not, even where equal
    assert w["Metadata_Target"].tolist() == ["T1"]
    assert "Metadata_TileNumber" not in w and "Metadata_Field" not in w


def test_real_data_layout_icf_only(tmp_path):
    """Real data ship data/ICF (already corrected) and no RAW: no flat field, tiles from ICF."""
    bp = _screen(tmp_path / "data", wells_per_plate=1, empty=None)
    bp["icf"].mkdir(parents=True)
    for f in bp["raw"].iterdir():
        f.rename(bp["icf"] / f.name.replace("RAW.", "ICF.", 1))
    bp["raw"].rmdir()
    res = _run(tmp_path / "data", tmp_path / "res")
    assert not res.corrected and res.flatfields == {}
    assert (res.status["status"] == "ok").all()
    assert not bp["tiles"].exists() and res.paths["tiles"] == tmp_path / "res" / "TILES"
    t = layout.read_well_tiles(next(res.paths["tiles"].iterdir()))
    assert t.image_path(bp["root"]).parent == bp["icf"] and t.n_tiles > 0
    assert TileStore(res.store_dir).n_tiles == res.status["n_tiles"].sum()


def test_downloaded_files_are_never_modified(tmp_path):
    """A data root as fetched (ICF, TILES, GT, metadata; no RAW): notebooks 10 and 20 leave every
    file in it byte for byte as it was."""
    import hashlib

    from i2o_utils import omics

    bp = _screen(tmp_path / "data", wells_per_plate=1, empty=None)
    bp["icf"].mkdir(parents=True)
    for f in bp["raw"].iterdir():
        f.rename(bp["icf"] / f.name.replace("RAW.", "ICF.", 1))
    bp["raw"].rmdir()
    bp["tiles"].mkdir(parents=True)
    for f in bp["icf"].iterdir():  # the authors' tiles: other corners than this project's, another machine's path
        a = layout.read_well_attrs(f)
        layout.write_well_tiles(bp["tiles"] / f.name.replace("ICF.", "TILES.", 1), a["row"], a["column"],
                                "/cluster/ICF/" + f.name, [np.array([[1, 2]])], plate_barcode=a["plate"])
    gt = pd.DataFrame({c: v for c, v in zip(layout.GT_COLUMNS, (["E_P1"], ["B1"], ["ENSG1"], ["train"], [1.5]))})
    for o in ("transcriptomics", "proteomics"):
        for s in ("m1", "m2"):
            layout.write_gt(gt, layout.gt_path(o, s, bp["root"]))

    def digests():
        return {p.relative_to(bp["root"]): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(bp["root"].rglob("*")) if p.is_file()}

    before = digests()
    assert sum(str(p).startswith("data/TILES") for p in before) == 4  # 2 plates x 2 wells
    # notebook 10: no omics to label here; the GT guard leaves data/GT alone
    assert not omics.may_write_gt(bp["root"])[0]
    sets = omics.preprocess_omics(omics.read_all_omics_raw(bp["root"]), progress=False)
    ground = omics.build_ground_truth(sets, layout.read_metadata(bp["metadata"]))
    omics.write_outputs(sets, ground, tmp_path / "res10", root=bp["root"])
    # notebook 20: tiles from ICF into the results folder
    res = _run(bp["root"], tmp_path / "res20")
    assert (res.status["status"] == "ok").all() and res.paths["tiles"].parent == tmp_path / "res20"
    assert digests() == before


def test_parameters_key_follows_what_a_well_depends_on():
    from dataclasses import replace

    from i2o_utils.imaging.well import params_key

    p = PROFILE.imaging.resolved(PROFILE.screen)
    assert p.nucleus_diameter_px == PROFILE.screen.nucleus_diameter_px == 10.0
    assert p.cell_radius_px == 0.75 * PROFILE.screen.cell_diameter_px
    key = params_key(p, [1.0, 2.0, 3.0])
    assert params_key(replace(p, scheduler="local", n_workers=7, flatfield_method="exact"), [1.0, 2.0, 3.0]) == key
    assert params_key(replace(p, min_response=0.3), [1.0, 2.0, 3.0]) != key
    assert params_key(p, [1.0, 2.0, 3.5]) != key


def test_example_field_names_a_plate_or_well_it_cannot_show():
    from types import SimpleNamespace

    from i2o_utils.imaging.qc import example_field

    status = pd.DataFrame({"plate": ["P1", "P2"], "well_id": ["A1", "A2"], "n_tiles": [5, 0]})
    result = SimpleNamespace(status=status)
    with pytest.raises(ImagingError, match="no well with tiles on plate P2"):
        example_field(result, plate="P2")
    with pytest.raises(ImagingError, match=r"^no well B7$"):
        example_field(result, well_id="B7")
    with pytest.raises(ImagingError, match="no well B7 on plate P1"):
        example_field(result, plate="P1", well_id="B7")
