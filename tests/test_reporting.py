"""The book's table helper and the list of written files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from i2o_utils import reporting
from i2o_utils.reporting import format_number, table, written_files


@pytest.mark.parametrize("x, text", [
    (0.583626, "0.584"), (18.72, "18.7"), (99.96, "100"), (0.9996, "1"), (0.04, "0.04"),
    (1234.5, "1234"), (123456.7, "123,457"), (12345, "12,345"), (7, "7"), (np.int64(5), "5"),
    (1.2e-05, "1.20e-05"), (-0.583626, "-0.584"), (0.0, "0"), (float("nan"), "–"), (None, "–"),
    (float("inf"), "∞"), (True, "True"),
])
def test_numbers_are_rounded_to_significant_digits(x, text):
    assert format_number(x) == text


def test_table_drops_the_row_number_and_keeps_a_named_index():
    df = pd.DataFrame({"wells": [3, 4]}, index=pd.Index(["m1", "m2"], name="cell_state"))
    t = table(df)
    assert list(t.parts[0].columns) == ["cell_state", "wells"]
    plain = table(pd.DataFrame({"a": [1.23456, 2.0]}, index=[7, 9]))
    assert list(plain.parts[0].columns) == ["a"] and plain.parts[0]["a"].tolist() == ["1.23", "2"]
    html = plain._repr_html_()
    assert "<th>a</th>" in html and ">7<" not in html and 'class="num"' in html


def test_units_are_named_and_unknown_columns_refused():
    t = table(pd.DataFrame({"size": [1.5], "name": ["x"]}), units={"size": "MiB"})
    assert list(t.parts[0].columns) == ["size (MiB)", "name"]
    with pytest.raises(KeyError, match="sizes"):
        table(pd.DataFrame({"size": [1.5]}), units={"sizes": "MiB"})


def test_wide_tables_fit_the_text_column_by_splitting_or_transposing():
    wide = pd.DataFrame({"gene": [f"GENE{i}" for i in range(10)],
                         **{f"long column name {j}": np.linspace(0, 1, 10) + j for j in range(12)}})
    t = table(wide, max_chars=80)
    assert len(t.parts) > 1 and not t.transposed
    for part in t.parts:
        assert part.columns[0] == "gene"  # the key column is repeated in every part
        assert sum(reporting._width(c, part[c].tolist()) for c in part.columns) <= 80
    shown = [c for p in t.parts for c in p.columns if c != "gene"]
    assert shown == [c for c in wide.columns if c != "gene"]  # every column shown once, in order
    few_rows = wide.head(2)
    tt = table(few_rows, max_chars=80)
    assert tt.transposed and list(tt.parts[0].columns) == ["", "GENE0", "GENE1"]
    narrow = table(wide[["gene", "long column name 0"]], max_chars=80)
    assert len(narrow.parts) == 1 and not narrow.transposed


def test_long_tables_are_folded():
    t = table(pd.DataFrame({"x": range(50)}), max_rows=30, caption="fifty rows")
    assert t.collapsed and t._repr_html_().startswith('<details class="i2o-details"><summary>fifty rows: 50 rows')
    assert not table(pd.DataFrame({"x": range(5)}), max_rows=30).collapsed


def test_written_files_are_relative_to_the_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("I2O_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("I2O_RESULTS_DIR", str(tmp_path / "results"))
    (tmp_path / "results" / "00_x").mkdir(parents=True)
    (tmp_path / "data" / "data").mkdir(parents=True)
    fig = tmp_path / "results" / "00_x" / "plate_maps.png"
    fig.write_bytes(b"x" * 2048)
    meta = tmp_path / "data" / "data" / "metadata.csv"
    pd.DataFrame({"well_id": ["A1"], "target": ["NT"]}).to_csv(meta, index=False)
    elsewhere = tmp_path / "other" / "notes.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text("x")
    t = written_files([fig, meta, elsewhere])
    rows = t.data[["root", "path"]].values.tolist()
    assert rows == [["results", "00_x/plate_maps.png"], ["data", "data/metadata.csv"], ["", "notes.txt"]]
    assert str(tmp_path) not in t._repr_html_() and str(tmp_path) not in repr(t)
    assert "size (MiB)" in t.parts[0].columns or any("size (MiB)" in p.columns for p in t.parts)
    assert t.data.loc[1, "content"].startswith("1 rows x 2 columns")


def test_dataframes_displayed_in_a_kernel_go_through_the_table_helper():
    class Formatter:
        def __init__(self):
            self.types = {}

        def for_type(self, typ, func):
            self.types[typ] = func

    class Shell:
        def __init__(self):
            self.display_formatter = type("DF", (), {"formatters": {"text/html": Formatter()}})()

    shell = Shell()
    assert reporting.format_dataframes_for_book(shell)
    render = shell.display_formatter.formatters["text/html"].types[pd.DataFrame]
    html = render(pd.DataFrame({"r2": [0.583626, 0.1]}, index=[4, 5]))
    assert "0.584" in html and "0.583626" not in html and ">4<" not in html
    long = render(pd.DataFrame({"x": range(500)}))
    assert "first 200 of 500 rows" in long and long.count("<tr>") == 201
    assert not reporting.format_dataframes_for_book(type("NoShell", (), {})())


def test_paths_break_after_their_slashes_and_are_measured_by_their_longest_segment():
    path = "40_finetune_omics/predictions/proteomics_m1/proteomics_m1_predictions.csv"
    assert reporting._width("path", [path]) == len("proteomics_m1_predictions.csv") + 1 + 2
    html = table(pd.DataFrame({"path": [path], "size": [1.5]}))._repr_html_()
    assert "40_finetune_omics/<wbr>predictions/<wbr>proteomics_m1/<wbr>proteomics_m1_predictions.csv" in html
    assert "<wbr>" not in html.split('class="num"')[1].split("</td>")[0]  # numbers never break
