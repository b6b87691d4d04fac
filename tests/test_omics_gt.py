"""GT tables: the compact form, its long table and its writers (Arrow's CSV and Parquet writers,
batch by batch). The output is compared with the long table written in one piece (pandas for
fields that need quotes) and read back with pandas and the project's GT readers.
"""

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from i2o_utils.omics import OmicsInputError
from i2o_utils.omics import gt as gtmod
from i2o_utils.omics.gt import GT_COLUMNS, GT_GENE, GT_MEASURED, WellLabels


def table(n_wells=37, n_genes=301, n_labels=5, seed=0, genes=None, plates=None):
    rng = np.random.default_rng(seed)
    wells = pd.DataFrame({
        "plate_barcode": plates if plates is not None else [f"IMG_M1_P{i // 24}" for i in range(n_wells)],
        "well_id": [f"{chr(65 + (i % 384) // 24)}{i % 24 + 1}" for i in range(n_wells)],
        "fold": rng.choice(["train", "val", "test"], n_wells)})
    # values of every magnitude and sign: Arrow's shortest float32 text varies in length
    vals = (rng.normal(5, 3, (n_labels, n_genes)) * rng.choice([1, 1e-7, 1e7, -1], (n_labels, n_genes)))
    vals = vals.astype(np.float32)
    vals[0, :3] = [0.0, 1.0, -0.5]
    genes = genes if genes is not None else [f"ENSG{k:0{1 + k % 11}d}" for k in range(n_genes)]
    return WellLabels(wells, rng.integers(0, n_labels, n_wells), vals, genes)


def arrow_csv(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    buf.write((",".join(df.columns) + "\n").encode())
    pacsv.write_csv(pa.Table.from_pandas(df, preserve_index=False), buf,
                    write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return buf.getvalue()


@pytest.mark.parametrize("rows", [1 << 22, 1_000, 1])
def test_csv_equals_the_long_table_written_in_one_piece(tmp_path, rows, monkeypatch):
    monkeypatch.setattr(gtmod, "_BATCH_ROWS", rows)  # one batch, several, one well per batch
    t = table()
    path = t.write(tmp_path / "gt.csv")
    assert path.read_bytes() == arrow_csv(t.frame())
    assert path.read_text().splitlines()[0] == ",".join(GT_COLUMNS)


def test_values_read_back_as_the_same_float32(tmp_path):
    t = table(n_wells=5, n_genes=2000, n_labels=3)
    df = pd.read_csv(t.write(tmp_path / "gt.csv"), dtype={GT_GENE: str})
    assert list(df.columns) == list(GT_COLUMNS) and len(df) == len(t) == t.shape[0]
    np.testing.assert_array_equal(df[GT_MEASURED].to_numpy(np.float32), t.frame()[GT_MEASURED].to_numpy())


def test_parquet_and_csv_read_back_the_same(tmp_path):
    from i2o_utils.data import layout

    t = table(n_wells=40, n_genes=50, n_labels=4)
    csv, pq = t.write(tmp_path / "gt.csv"), t.write(tmp_path / "gt.parquet")
    a, b = layout.read_gt(csv), layout.read_gt(pq)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    pd.testing.assert_frame_equal(layout.read_gt_matrix(csv), layout.read_gt_matrix(pq))
    with pytest.raises(OmicsInputError, match=".csv or .parquet"):
        t.write(tmp_path / "gt.txt")


def test_large_tables_are_written_as_parquet(tmp_path, monkeypatch):
    from i2o_utils.data import layout
    from i2o_utils.omics.pipeline import GroundTruth, write_gt_tables

    t = table(n_wells=10, n_genes=20, n_labels=2)
    gt = GroundTruth(tables={("proteomics", "m1"): t})
    (tmp_path / "data" / "GT").mkdir(parents=True)
    [p] = write_gt_tables(gt, tmp_path)
    assert p.suffix == ".csv" and layout.gt_path("proteomics", "m1", tmp_path) == p
    monkeypatch.setattr(gtmod, "GT_CSV_MAX_ROWS", 100)
    [p2] = write_gt_tables(gt, tmp_path)
    assert p2.suffix == ".parquet" and not p.exists() and layout.gt_path("proteomics", "m1", tmp_path) == p2
    pd.testing.assert_frame_equal(layout.read_gt_matrix(p2), layout.gt_to_matrix(t.frame().astype(
        {GT_GENE: str, "plate_barcode": str, "well_id": str}).assign(**{GT_MEASURED: lambda d: d[GT_MEASURED].astype(float)})),
        check_exact=False, rtol=1e-7)


def test_fields_with_commas_or_quotes_read_back(tmp_path):
    t = table(n_wells=3, n_genes=4, n_labels=2, genes=["a,b", 'say "x"', "plain", "line\nbreak"],
              plates=["P,1", "P2", 'P"3'])
    back = pd.read_csv(t.write(tmp_path / "gt.csv"))
    assert set(back[GT_GENE]) == {"a,b", 'say "x"', "plain", "line\nbreak"}
    assert set(back["plate_barcode"]) == {"P,1", "P2", 'P"3'}
    np.testing.assert_array_equal(back[GT_MEASURED].to_numpy(np.float32), t.frame()[GT_MEASURED].to_numpy())


def test_head_shape_and_frame_agree():
    t = table(n_wells=4, n_genes=3, n_labels=2)
    f = t.frame()
    assert t.shape == f.shape == (12, 5) and len(t) == 12
    pd.testing.assert_frame_equal(t.head(7).reset_index(drop=True), f.head(7).reset_index(drop=True),
                                  check_categorical=False)
    assert list(f[GT_GENE][:3]) == t.genes and (f[GT_MEASURED][:3].to_numpy() == t.values[t.label_index[0]]).all()


@pytest.mark.parametrize("name", ["gt.csv", "gt.parquet"])
def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, name):
    path = tmp_path / name
    path.write_text("old\n")
    real = WellLabels._batches

    def fail_second(self, rows=1_000):
        schema, batches = real(self, rows)

        def gen():
            for i, b in enumerate(batches):
                if i == 1:
                    raise OSError("disk full")
                yield b
        return schema, gen()
    monkeypatch.setattr(WellLabels, "_batches", fail_second)
    with pytest.raises(OSError, match="disk full"):
        table().write(path)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("change, message", [
    (lambda k: k.update(values=np.full((2, 3), np.nan, np.float32)), "NaN"),
    (lambda k: k.update(label_index=np.array([0, 5])), "out of range"),
    (lambda k: k.update(genes=["a", "b"]), "for 2 genes"),
    (lambda k: k.update(wells=k["wells"].drop(columns="fold")), "fold"),
])
def test_bad_tables_raise(change, message):
    kw = dict(wells=pd.DataFrame({"plate_barcode": ["P", "P"], "well_id": ["A1", "A2"], "fold": ["train"] * 2}),
              label_index=np.array([0, 1]), values=np.zeros((2, 3), np.float32), genes=["a", "b", "c"])
    change(kw)
    with pytest.raises(OmicsInputError, match=message):
        WellLabels(**kw)
