"""GT tables: the compact form, its long table and the compiled CSV writer.

The writer's output is compared byte for byte with an independent writer: pyarrow's CSV writer
on the long table (the writer this project used before), and pandas for fields that need quotes.
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


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("chunk_bytes", [64 << 20, 5_000, 1])
def test_csv_is_byte_identical_to_arrow_writer(tmp_path, direct, chunk_bytes):
    t = table()
    path = t.write_csv(tmp_path / "gt.csv", chunk_bytes=chunk_bytes, direct=direct)
    assert path.read_bytes() == arrow_csv(t.frame())


def test_values_read_back_as_the_same_float32(tmp_path):
    t = table(n_wells=5, n_genes=2000, n_labels=3)
    df = pd.read_csv(t.write_csv(tmp_path / "gt.csv"), dtype={GT_GENE: str})
    assert list(df.columns) == list(GT_COLUMNS) and len(df) == len(t) == t.shape[0]
    np.testing.assert_array_equal(df[GT_MEASURED].to_numpy(np.float32), t.frame()[GT_MEASURED].to_numpy())


def test_fields_with_commas_or_quotes_are_quoted_like_pandas(tmp_path):
    t = table(n_wells=3, n_genes=4, n_labels=2, genes=["a,b", 'say "x"', "plain", "line\nbreak"],
              plates=["P,1", "P2", 'P"3'])
    got = t.write_csv(tmp_path / "gt.csv").read_bytes()
    frame = t.frame().astype({GT_MEASURED: object})
    frame[GT_MEASURED] = [str(v) for v in pa.array(t.frame()[GT_MEASURED]).cast(pa.string()).to_pylist()]
    assert got == frame.to_csv(index=False, lineterminator="\n").encode()
    back = pd.read_csv(tmp_path / "gt.csv")
    assert set(back[GT_GENE]) == {"a,b", 'say "x"', "plain", "line\nbreak"}


def test_head_shape_and_frame_agree():
    t = table(n_wells=4, n_genes=3, n_labels=2)
    f = t.frame()
    assert t.shape == f.shape == (12, 5) and len(t) == 12
    pd.testing.assert_frame_equal(t.head(7).reset_index(drop=True), f.head(7).reset_index(drop=True),
                                  check_categorical=False)
    assert list(f[GT_GENE][:3]) == t.genes and (f[GT_MEASURED][:3].to_numpy() == t.values[t.label_index[0]]).all()


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "gt.csv"
    path.write_text("old\n")
    calls = []
    real = gtmod._Sink.commit

    def fail_second(self, n):
        calls.append(n)
        if len(calls) == 2:
            raise OSError("disk full")
        real(self, n)
    monkeypatch.setattr(gtmod._Sink, "commit", fail_second)
    with pytest.raises(OSError, match="disk full"):
        table().write_csv(path, chunk_bytes=5_000)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["gt.csv"]


def test_direct_io_refused_falls_back_to_normal_writes(tmp_path, monkeypatch):
    import os

    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *args)
    monkeypatch.setattr(os, "open", no_direct)
    t = table()
    assert t.write_csv(tmp_path / "gt.csv", direct=True).read_bytes() == arrow_csv(t.frame())


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


def test_float_text_matches_arrow_on_every_kind_of_float32():
    """The compiled shortest-text conversion (Ryu) against Arrow's, on random bit patterns (every
    exponent, subnormals, both signs), integers, short decimals and the edge cases."""
    import pyarrow.compute as pc

    rng = np.random.default_rng(11)
    f32 = np.finfo(np.float32)
    v = np.concatenate([
        rng.integers(0, 2**32, 300_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        np.arange(-20_000, 20_000, dtype=np.float32), (np.arange(1, 20_000) / 1000).astype(np.float32),
        rng.normal(5, 3, 50_000).astype(np.float32),
        np.array([0.0, -0.0, 1e-7, 1e-6, 1.25e-6, 1e9, 9.999e9, 1e10, 123456789, 16777217, f32.max, -f32.max,
                  f32.tiny, f32.smallest_subnormal, np.inf, -np.inf, np.nan], dtype=np.float32)])
    data, row_start, lengths = gtmod._format_floats(v.reshape(4, -1) if len(v) % 4 == 0 else v[None, :])
    assert lengths.max() <= 17
    texts = []
    for r in range(lengths.shape[0]):
        p = int(row_start[r])
        for n in lengths[r].tolist():
            texts.append(data[p:p + n].tobytes().decode())
            p += n
    expect = pc.cast(pa.array(v), pa.string()).to_pylist()
    bad = [(float(a), t, e) for a, t, e in zip(v, texts, expect) if t != e]
    assert not bad, bad[:5]
    finite = np.isfinite(v)
    back = np.array([np.float32(t) for t in np.array(texts)[finite]], dtype=np.float32)
    np.testing.assert_array_equal(back.view(np.uint32), v[finite].view(np.uint32))  # reads back exactly
