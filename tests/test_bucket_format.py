"""Compatibility with the authors' bucket format, checked on the smoke screen.

Each check states a fact that the authors' released readers, post-processing and plotting code
rely on (as recorded in this project's data contract, :mod:`i2o_utils.data.layout`), and tests
the files this project writes against it with plain h5py / pandas, the way a client of the
bucket would read them:

* GT tables (``data/GT/*.csv``): columns ``plate_barcode, well_id, gene/protein,
  train/test/val fold, measured (absolute)``; ``well_id = chr(ROW + 64) + str(COLUMN)``; the
  ``plate_barcode`` of a row is the ``PLATE_BARCODE`` of an image file, so predictions keyed by
  the image attributes join the GT on ``plate_barcode, well_id, gene/protein``.
* ICF files: attributes ``PLATE_BARCODE, ROW, COLUMN, PLANE``; one group per channel with
  ``fov_0 ... fov_{F-1}`` (their figure code opens ``fov_1``); file name
  ``ICF.X<ROW>.Y<COLUMN>.P<PLANE>.<13-digit timestamp>.<ELN>_<PLATE>.h5``.
* TILES files: attributes ``ROW, COLUMN, PLANE, PLATE_BARCODE`` (read for every file, the
  barcode compared with a list of text barcodes) and ``INPUT_POINTER``, a fixed-length byte
  string decoded with ``.decode("UTF-8")`` and opened as a path; top-level keys are ``fov_<i>``
  and ``all_fovs`` only (every other key is taken for a field and its number parsed from the
  name); ``all_fovs/{tile_coords, fovs_indices, well_coords}`` stack to ``(N, 2, 3)``; a tile is
  ``img[x:x+s, y:y+s]`` for ``(x, y) = tile_coords[i]``, so it must lie inside the field.
* ``metadata.csv``: ``PLATE_ID = PLATE_BARCODE.rsplit("_")[1]``, joined to the image wells on
  ``well_id, PLATE_ID`` without losing a well.
* The predictions table: ``plate_barcode, well_id, seed, gene/protein, train/test/val fold,
  measured (absolute), predicted from images (absolute)`` after an unnamed row number, read
  with ``index_col=0`` and the plotting code's dtypes.
"""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from i2o_utils.config import CHANNELS, OMICS, STIMULI, get_profile
from i2o_utils.paths import bucket_paths

GT_HEADER = "plate_barcode,well_id,gene/protein,train/test/val fold,measured (absolute)"
NAME_RE = r"(ICF|TILES)\.X(\d+)\.Y(\d+)\.P(\d+)\.(\d{13})\.([A-Za-z0-9]+)_([A-Za-z0-9]+)\.h5"


@pytest.fixture(scope="module")
def bucket(smoke_screen, tmp_path_factory):
    """A copy of the smoke screen after the project's omics and image preprocessing (notebooks
    10 and 20)."""
    from i2o_utils import omics
    from i2o_utils.data import layout
    from i2o_utils.data.splits import screen_splits
    from i2o_utils.imaging.pipeline import preprocess_images

    root = tmp_path_factory.mktemp("bucket") / "root"
    shutil.copytree(smoke_screen, root)
    prof = get_profile("smoke")
    sets = omics.preprocess_omics(omics.read_all_omics_raw(root), prof.omics, progress=False)
    meta = layout.read_metadata(bucket_paths(root)["metadata"])
    split_table = screen_splits(meta, 1, prof.evaluation.split_fractions, gt_given=False)
    gt = omics.build_ground_truth(sets, meta, prof.omics, split_table=split_table)
    omics.write_outputs(sets, gt, root / "results10", root=root)
    preprocess_images(prof, data_root=root, out_dir=root / "results20", progress=False)
    return root


def _attrs(path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: f.attrs[k] for k in f.attrs}


def test_quick_and_smoke_profiles_image_at_least_two_fields():
    for name in ("quick", "smoke"):
        assert get_profile(name).screen.fields_per_well >= 2


def test_gt_tables_have_the_authors_columns_and_join_the_images(bucket):
    root = bucket
    bp = bucket_paths(root)
    image_wells = set()
    for p in sorted(bp["icf"].glob("*.h5")):
        a = _attrs(p)
        image_wells.add((a["PLATE_BARCODE"], chr(int(a["ROW"]) + 64) + str(int(a["COLUMN"]))))
    for o in OMICS:
        for s in STIMULI:
            path = bp["gt"] / f"{o}_{s}.csv"
            assert path.read_text().splitlines()[0] == GT_HEADER
            gt = pd.read_csv(path)
            assert gt["gene/protein"].unique().size > 0
            assert set(gt["train/test/val fold"]) <= {"train", "test", "val"}
            assert gt["measured (absolute)"].dtype == np.float64 and gt["measured (absolute)"].notna().all()
            ids = gt["gene/protein"].astype(str)
            assert ids.str.startswith("ENSG").all() if o == "transcriptomics" else not ids.str.startswith("ENSG").any()
            keys = set(zip(gt["plate_barcode"], gt["well_id"]))
            assert keys <= image_wells, f"{path}: GT wells without an image file"
            assert len(keys) == sum(1 for b, _ in image_wells if b in set(gt["plate_barcode"]))


def test_icf_files_carry_the_authors_attributes_fields_and_names(bucket):
    import re

    root = bucket
    files = sorted(bucket_paths(root)["icf"].glob("*.h5"))
    assert len(files) == 64
    for p in files:
        m = re.fullmatch(NAME_RE, p.name)
        assert m and m.group(1) == "ICF", p.name
        a = _attrs(p)
        assert isinstance(a["PLATE_BARCODE"], str)
        assert (int(a["ROW"]), int(a["COLUMN"]), int(a["PLANE"])) == tuple(int(m.group(i)) for i in (2, 3, 4))
        assert a["PLATE_BARCODE"] == f"{m.group(6)}_{m.group(7)}"
        with h5py.File(p, "r") as f:
            assert set(f.keys()) == set(CHANNELS)
            for c in CHANNELS:
                assert sorted(f[c].keys()) == [f"fov_{i}" for i in range(len(f[c]))]
                assert "fov_1" in f[c] and f[c]["fov_1"].ndim == 2


def test_tiles_files_read_as_the_authors_readers_read_them(bucket, tmp_path):
    root = bucket
    bp = bucket_paths(root)
    files = sorted(bp["tiles"].glob("*.h5"))
    assert len(files) == 64
    barcodes = sorted({_attrs(p)["PLATE_BARCODE"] for p in bp["icf"].glob("*.h5")})
    here = os.getcwd()
    os.chdir(tmp_path)  # the pointer must open from any working directory
    try:
        n_tiles = 0
        for p in files:
            assert p.name.startswith("TILES.") and (bp["icf"] / ("ICF." + p.name[len("TILES."):])).exists()
            a = _attrs(p)
            for k in ("ROW", "COLUMN", "PLANE"):
                assert isinstance(a[k], (int, np.integer)), k
            assert isinstance(a["PLATE_BARCODE"], str) and a["PLATE_BARCODE"] in barcodes
            with h5py.File(p, "r") as f:
                dtype = f.attrs.get_id("INPUT_POINTER").dtype
                assert dtype.kind == "S" and dtype.itemsize > 0  # fixed-length bytes
                pointer = f.attrs["INPUT_POINTER"].decode("UTF-8")
                fov_keys = [k for k in f.keys() if k != "all_fovs"]
                fov_ids = [int(k.strip().split("_")[-1]) for k in fov_keys]
                assert sorted(fov_keys) == sorted(f"fov_{i}" for i in fov_ids)
                tc = f["all_fovs/tile_coords"][...]
                fi = f["all_fovs/fovs_indices"][...]
                wc = f["all_fovs/well_coords"][...]
                info = np.stack((tc, fi, wc), axis=2)
                assert info.shape == (len(tc), 2, 3)
                assert (wc == [int(a["ROW"]), int(a["COLUMN"])]).all()
                assert set(fi[:, 0]) <= set(fov_ids)
            assert os.path.basename(pointer) == "ICF." + p.name[len("TILES."):]
            with h5py.File(pointer, "r") as icf:  # as their PlateDataset opens it
                assert icf.attrs["PLATE_BARCODE"] == a["PLATE_BARCODE"]
                s = get_profile("smoke").imaging.tile_size
                for x, y, fov in zip(tc[:, 0], tc[:, 1], fi[:, 0]):
                    img = icf[CHANNELS[0]][f"fov_{fov}"]
                    assert img[x:x + s, y:y + s].shape == (s, s)
            n_tiles += len(tc)
        assert n_tiles > 0
    finally:
        os.chdir(here)


def test_metadata_plate_ids_join_the_image_barcodes(bucket):
    root = bucket
    bp = bucket_paths(root)
    meta = pd.read_csv(bp["metadata"], encoding="utf-8")
    assert list(meta.columns[:5]) == ["well_id", "PLATE_ID", "target", "cell_state", "Column"]
    rows = [_attrs(p) for p in sorted(bp["icf"].glob("*.h5"))]
    df = pd.DataFrame({"PLATE_BARCODE": [r["PLATE_BARCODE"] for r in rows],
                       "Row": [int(r["ROW"]) for r in rows], "Column": [int(r["COLUMN"]) for r in rows]})
    df["PLATE_ID"] = df["PLATE_BARCODE"].str.rsplit("_", expand=True)[1]
    df["well_id"] = [f"{chr(ord('a') + r - 1).upper()}{c:d}" for r, c in zip(df["Row"], df["Column"])]
    merged = pd.merge(df, meta, on=["well_id", "PLATE_ID"])
    assert len(merged) == len(df) == len(meta)
