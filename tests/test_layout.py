"""The bucket layout: round trips, well ids, and clear errors for bad input."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pandas as pd
import pytest

from i2o_utils.config import CHANNELS
from i2o_utils.data import layout
from i2o_utils.data.layout import LayoutError


@pytest.mark.parametrize("wid, expected", [("G13", (7, 13)), ("A01", (1, 1)), ("A1", (1, 1)),
                                           ("p24", (16, 24)), (" B07 ", (2, 7))])
def test_parse_well_id_accepts_both_styles(wid, expected):
    assert layout.parse_well_id(wid) == expected


@pytest.mark.parametrize("wid", ["Q1", "A25", "A0", "AA1", "13G", "", "A-1", "G1.5"])
def test_parse_well_id_rejects_malformed(wid):
    with pytest.raises(LayoutError, match="well id"):
        layout.parse_well_id(wid, where="plate.csv")


def test_malformed_well_id_names_the_file():
    with pytest.raises(LayoutError, match="plate.csv"):
        layout.parse_well_id("Z99", where="plate.csv")


def test_format_is_the_authors_form():
    assert layout.format_well_id(7, 13) == "G13" == chr(7 + 64) + "13"
    assert layout.format_well_id(1, 1, padded=True) == "A01"
    assert layout.normalise_well_id("a01") == "A1"


def _fields(f=2, h=20, w=24, dtype=np.uint16, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, (f, 3, h, w)).astype(dtype)


def test_well_images_round_trip(tmp_path):
    fields = _fields()
    name = layout.image_file_name("ICF", "ELN1_PL1", 7, 13, timestamp="2021159114145")
    p = layout.write_well_images(tmp_path / name, "ELN1_PL1", 7, 13, fields)
    assert p.name == "ICF.X7.Y13.P1.2021159114145.ELN1_PL1.h5"
    assert layout.parse_image_file_name(p) == {"prefix": "ICF", "row": 7, "column": 13, "plane": 1,
                                               "timestamp": "2021159114145", "barcode": "ELN1_PL1"}
    w = layout.read_well_images(p)
    assert (w.plate, w.row, w.column, w.plane, w.well_id) == ("ELN1_PL1", 7, 13, 1, "G13")
    np.testing.assert_array_equal(w.fields, fields)
    with h5py.File(p) as f:  # the authors' structure, literally
        assert set(f.keys()) == set(CHANNELS)
        assert sorted(f[CHANNELS[0]].keys()) == ["fov_0", "fov_1"]
        assert f.attrs["PLATE_BARCODE"] == "ELN1_PL1" and f.attrs["ROW"] == 7 and f.attrs["COLUMN"] == 13
    np.testing.assert_array_equal(layout.read_well_images(p, fields=[1]).fields[0], fields[1])
    idx = layout.index_wells(tmp_path)
    assert idx[["plate", "well_id", "n_fields"]].values.tolist() == [["ELN1_PL1", "G13", 2]]


def test_barcodes_plate_ids_and_timestamps_in_the_authors_form():
    from datetime import datetime

    assert layout.plate_id("ELN27012_G212LFO") == "G212LFO"
    for bad in ("G212LFO", "ELN_27012_G212LFO", "ELN27012_"):
        with pytest.raises(LayoutError, match="one underscore"):
            layout.plate_id(bad)
    assert layout.format_timestamp(datetime(2021, 6, 8, 11, 41, 45)) == "2021159114145"
    with pytest.raises(LayoutError, match="13 digits"):
        layout.image_file_name("ICF", "E_P", 1, 1, timestamp="20210608T114145")
    assert layout.parse_image_file_name("ICF.X7.Y13.h5") is None


def test_missing_channel_group_is_named(tmp_path):
    p = layout.write_well_images(tmp_path / "w.h5", "P", 1, 1, _fields())
    with h5py.File(p, "a") as f:
        del f[CHANNELS[1]]
    with pytest.raises(LayoutError, match=r"w\.h5.*missing channel group.*MitoTracker"):
        layout.read_well_images(p)


def test_wrong_dtype_is_named(tmp_path):
    p = layout.write_well_images(tmp_path / "w.h5", "P", 1, 1, _fields())
    with h5py.File(p, "a") as f:
        del f[CHANNELS[2]]["fov_1"]
        f[CHANNELS[2]].create_dataset("fov_1", data=np.zeros((20, 24), np.int32))
    with pytest.raises(LayoutError, match=r"w\.h5.*Alexa 647.*fov_1 has dtype int32"):
        layout.read_well_images(p)


def test_unequal_field_shapes_are_named(tmp_path):
    p = layout.write_well_images(tmp_path / "w.h5", "P", 1, 1, _fields())
    with h5py.File(p, "a") as f:
        del f[CHANNELS[0]]["fov_1"]
        f[CHANNELS[0]].create_dataset("fov_1", data=np.zeros((20, 23), np.uint16))
    with pytest.raises(LayoutError, match=r"w\.h5.*fov_1 is \(20, 23\).*share shape"):
        layout.read_well_images(p)


def test_truncated_file_is_named(tmp_path):
    p = layout.write_well_images(tmp_path / "w.h5", "P", 1, 1, _fields())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(LayoutError, match=r"w\.h5: not a readable HDF5 file"):
        layout.read_well_images(p)


def test_writer_refuses_bad_arrays_and_leaves_nothing(tmp_path):
    with pytest.raises(LayoutError, match="shape"):
        layout.write_well_images(tmp_path / "w.h5", "P", 1, 1, np.zeros((2, 20, 24), np.uint16))
    with pytest.raises(LayoutError, match="dtype"):
        layout.write_well_images(tmp_path / "w.h5", "P", 1, 1, np.zeros((1, 3, 4, 4), np.int64))
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "t.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with layout.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_staged_files_are_published_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "sub" / "b.csv"
    a.write_text("old a")
    with pytest.raises(RuntimeError):
        with layout.staged_paths() as stage:
            stage(a).write_text("new a")
            stage(b).write_text("new b")
            raise RuntimeError("interrupted")
    assert a.read_text() == "old a" and not b.exists() and list(b.parent.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="never written"):
        with layout.staged_paths() as stage:
            stage(a).write_text("new a")
            stage(b)
    assert a.read_text() == "old a"
    with layout.staged_paths() as stage:
        stage(a).write_text("new a")
        stage(b).write_text("new b")
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.csv", "b.csv", "sub"]


def test_tiles_round_trip_in_the_authors_form(tmp_path):
    corners = [np.array([[0, 5], [10, 20]]), np.array([[3, 4]])]
    p = layout.write_well_tiles(tmp_path / "t.h5", 7, 13, "/data/ICF/x.h5", corners, plate_barcode="E1_P1")
    t = layout.read_well_tiles(p)
    assert (t.row, t.column, t.plane, t.plate_barcode, t.input_pointer, t.n_tiles) == (7, 13, 1, "E1_P1",
                                                                                      "/data/ICF/x.h5", 3)
    np.testing.assert_array_equal(t.tile_coords, [[0, 5], [10, 20], [3, 4]])
    np.testing.assert_array_equal(t.fovs_indices, [[0, 0], [0, 1], [1, 0]])
    with h5py.File(p) as f:
        np.testing.assert_array_equal(f["all_fovs/well_coords"][()], [[7, 13]] * 3)
        np.testing.assert_array_equal(f["fov_1"][()], [[3, 4]])
        assert isinstance(f.attrs["INPUT_POINTER"], bytes) and f.attrs["INPUT_POINTER"].decode("UTF-8") == "/data/ICF/x.h5"
    with h5py.File(p, "a") as f:
        del f.attrs["PLANE"]
    with pytest.raises(LayoutError, match=r"missing attribute\(s\) \['PLANE'\]"):
        layout.read_well_tiles(p)


def test_input_pointer_resolved_against_the_data_root(tmp_path):
    icf = tmp_path / "data" / "ICF" / "ICF.X1.Y1.P1.2021159114145.E_P.h5"
    icf.parent.mkdir(parents=True)
    icf.write_bytes(b"")
    for pointer in (str(icf), b"data/ICF/ICF.X1.Y1.P1.2021159114145.E_P.h5",
                    "/elsewhere/ICF/ICF.X1.Y1.P1.2021159114145.E_P.h5", "ICF.X1.Y1.P1.2021159114145.E_P.h5"):
        assert layout.resolve_input_pointer(pointer, tmp_path) == icf


def _metadata(**change):
    df = pd.DataFrame({"well_id": ["A01", "G13"], "PLATE_ID": ["P1", "P1"], "target": ["NT", "STAT1"],
                       "cell_state": ["M1", "m1"], "Column": [1, 13]})
    return df.assign(**change)


def test_metadata_round_trip_normalises(tmp_path):
    p = layout.write_metadata(_metadata(), tmp_path / "metadata.csv")
    m = layout.read_metadata(p)
    assert m["well_id"].tolist() == ["A1", "G13"]
    assert m["ROW"].tolist() == [1, 7] and m["COLUMN"].tolist() == [1, 13]
    assert m["cell_state"].tolist() == ["m1", "m1"]


def test_metadata_missing_column_is_named(tmp_path):
    p = tmp_path / "metadata.csv"
    _metadata().drop(columns="target").to_csv(p, index=False)
    with pytest.raises(LayoutError, match=r"metadata\.csv: missing column\(s\) \['target'\]"):
        layout.read_metadata(p)


def test_metadata_malformed_and_duplicated_wells(tmp_path):
    p = tmp_path / "metadata.csv"
    _metadata(well_id=["A01", "Z7"]).to_csv(p, index=False)
    with pytest.raises(LayoutError, match=r"well id 'Z7' in .*metadata\.csv"):
        layout.read_metadata(p)
    _metadata(well_id=["A01", "A1"]).to_csv(p, index=False)
    with pytest.raises(LayoutError, match="duplicated well A1 on plate P1"):
        layout.read_metadata(p)


def _gt(**cols) -> pd.DataFrame:
    """A GT table in the authors' columns from short keyword names."""
    short = dict(zip(("plate_barcode", "well_id", "gene", "fold", "measured"), layout.GT_COLUMNS))
    return pd.DataFrame({short.get(k, k): v for k, v in cols.items()})


def test_gt_columns_are_the_authors():
    assert layout.GT_COLUMNS == ("plate_barcode", "well_id", "gene/protein", "train/test/val fold",
                                 "measured (absolute)")


def test_gt_round_trip_and_matrix(tmp_path):
    df = _gt(plate_barcode=["E_P1"] * 4, well_id=["A01", "A01", "B2", "B2"], gene=["ENSG1", "ENSG2"] * 2,
             fold=["train"] * 4, measured=[1.0, 2.0, 3.0, 4.0])
    p = layout.write_gt(df, layout.gt_path("transcriptomics", "M1", root=tmp_path))
    assert p == tmp_path / "data" / "GT" / "transcriptomics_m1.csv"
    assert p.read_text().splitlines()[0] == "plate_barcode,well_id,gene/protein,train/test/val fold,measured (absolute)"
    back = layout.read_gt(p)
    assert list(back.columns) == list(layout.GT_COLUMNS)
    assert back["well_id"].tolist() == ["A1", "A1", "B2", "B2"]
    m = layout.gt_to_matrix(back)
    assert m.shape == (2, 2) and m.loc[("E_P1", "B2"), "ENSG2"] == 4.0
    df.drop(columns=layout.GT_FOLD).to_csv(p, index=False)
    with pytest.raises(LayoutError, match="missing column.*train/test/val fold"):
        layout.read_gt(p)
    df.rename(columns={layout.GT_GENE: "gene"}).to_csv(p, index=False)  # the short names are not the format
    with pytest.raises(LayoutError, match="missing column.*gene/protein"):
        layout.read_gt_matrix(p)


def test_gt_matrix_read_directly_equals_the_long_table_pivoted(tmp_path):
    rng = np.random.default_rng(3)
    n = 4000  # random cells: many given twice (the first value counts), spellings A1/A01 merged
    df = _gt(plate_barcode=rng.choice(["E_P1", "E_P2", "E_Q10"], n),
             well_id=rng.choice(["A1", "A01", "B2", "P24", "A10", "c3"], n),
             gene=rng.choice([f"ENSG{i}" for i in range(60)], n), fold="train",
             measured=rng.normal(size=n).astype(np.float32), predicted=rng.normal(size=n))
    p = layout.write_gt(df, tmp_path / "gt.csv")
    long = pd.read_csv(p, dtype={"plate_barcode": str, "well_id": str})  # the reference: pandas and a pivot
    long["well_id"] = long["well_id"].map(layout.normalise_well_id)
    for value in (layout.GT_MEASURED, "predicted"):
        expect = layout.gt_to_matrix(long, value)
        got = layout.read_gt_matrix(p, value)
        pd.testing.assert_frame_equal(got, expect, check_exact=False, rtol=1e-15)
    assert got.index.get_level_values("well_id").isin(["A1", "B2", "P24", "A10", "C3"]).all()
    # a table without duplicates (the usual case) takes the direct fill
    key = ["plate_barcode", "well_id", layout.GT_GENE]
    once = df.drop_duplicates(key).assign(
        well_id=lambda d: d["well_id"].str.upper().str.replace("A01", "A1")).drop_duplicates(key)
    p2 = layout.write_gt(once, tmp_path / "gt2.csv")
    pd.testing.assert_frame_equal(layout.read_gt_matrix(p2), layout.gt_to_matrix(layout.read_gt(p2)),
                                  check_exact=False, rtol=1e-15)


@pytest.mark.parametrize("change, message", [
    ("no_file", "no such file"), ("no_fold", "missing column.*train/test/val fold"),
    ("missing_value", r"missing 'measured \(absolute\)' value for gene ENSG2 in well B2 of plate E_P1"),
    ("bad_well", "well"), ("bad_number", "measured")])
def test_gt_matrix_reader_names_what_is_wrong(tmp_path, change, message):
    df = _gt(plate_barcode=["E_P1"] * 4, well_id=["A01", "A01", "B2", "B2"], gene=["ENSG1", "ENSG2"] * 2,
             fold=["train"] * 4, measured=["1.0", "2.0", "3.0", ""])
    p = tmp_path / "gt.csv"
    if change == "no_fold":
        df = df.drop(columns=layout.GT_FOLD)
    elif change == "bad_well":
        df.loc[0, "well_id"] = "Z99"
    elif change == "bad_number":
        df.loc[0, layout.GT_MEASURED] = "one"
    if change != "missing_value":
        df.loc[3, layout.GT_MEASURED] = "4.0"
    if change != "no_file":
        df.to_csv(p, index=False)
    with pytest.raises(LayoutError, match=message):
        layout.read_gt_matrix(p)


def test_atomic_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    p = layout.write_csv_atomic(pd.DataFrame({"a": [1]}), tmp_path / "x.csv")
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask
