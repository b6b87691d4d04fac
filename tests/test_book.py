"""The executed copies as the book shows them, the timing table, and the results page's reading."""

from __future__ import annotations

import nbformat
import pandas as pd
import pytest

from i2o_utils import book
from i2o_utils.runner import TIMINGS_NAME, present_for_book, record_timing


def _widget_notebook(tmp_path, data_root):
    """An executed notebook as papermill leaves it: a tqdm widget, an injected cell, a machine path."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "quick"', metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell('profile = "smoke"', metadata={"tags": ["injected-parameters"]})
    work = nbformat.v4.new_code_cell("run()")
    work.outputs = [
        nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "box", "version_major": 2, "version_minor": 0},
            "text/plain": "wells:   0%|          | 0/64 [00:00<?, ?well/s]"}),
        nbformat.v4.new_output("stream", name="stdout", text=f"screen at {data_root}/data: 64 wells\n"),
        nbformat.v4.new_output("execute_result", data={"text/html": f"<td>{data_root}/data/GT/x.csv</td>",
                                                       "text/plain": f"{data_root}/data/GT/x.csv"}),
    ]
    nb.cells = [params, injected, work]
    state = {
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_bar", "IPY_MODEL_r"]}},
        "l": {"model_name": "HTMLModel", "state": {"value": "wells:\u2007100%"}},
        "bar": {"model_name": "FloatProgressModel", "state": {"min": 0, "max": 64.0, "value": 64.0}},
        "r": {"model_name": "HTMLModel", "state": {"value": "\u200764/64\u2007[00:03&lt;00:00,\u200719.1well/s]"}},
    }
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state, "version_major": 2,
                                                                            "version_minor": 0}}
    path = tmp_path / "10_x.ipynb"
    nbformat.write(nb, path)
    return path


def test_executed_copy_is_presented_for_reading(tmp_path, monkeypatch):
    data_root = tmp_path / "somewhere" / "data-root"
    monkeypatch.setenv("I2O_DATA_DIR", str(data_root))
    monkeypatch.setenv("I2O_RESULTS_DIR", str(tmp_path / "results"))
    path = present_for_book(_widget_notebook(tmp_path, data_root))
    nb = nbformat.read(path, as_version=4)
    assert "widgets" not in nb.metadata
    params, injected, work = nb.cells
    assert "hide-cell" in injected.metadata["tags"] and "hide-cell" not in params.metadata["tags"]
    bar = work.outputs[0]
    assert bar.output_type == "stream"
    assert bar.text == "wells: 100%|██████████| 64/64 [00:03<00:00, 19.1well/s]\n"
    assert work.outputs[1].text == "screen at $I2O_DATA_DIR/data: 64 wells\n"
    assert work.outputs[2].data["text/html"] == "<td>$I2O_DATA_DIR/data/GT/x.csv</td>"
    assert str(tmp_path) not in path.read_text()
    present_for_book(path)  # idempotent
    assert nbformat.read(path, as_version=4).cells[1].metadata["tags"].count("hide-cell") == 1


def test_timings_table_keeps_the_last_run_of_every_notebook(tmp_path):
    record_timing("00_a", 1.25, "smoke", results_root=tmp_path)
    record_timing("10_b", 2.0, "smoke", results_root=tmp_path)
    record_timing("00_a", 3.0, "quick", results_root=tmp_path)
    df = pd.read_csv(tmp_path / TIMINGS_NAME)
    assert df["notebook"].tolist() == ["00_a", "10_b"]
    assert df["seconds"].tolist() == [3.0, 2.0] and df["profile"].tolist() == ["quick", "smoke"]
    assert df["machine"].str.contains("cores").all()
    page = book.timings_markdown(tmp_path)
    assert "Total: 5 s" in page and "00_a" in page and "seconds (s)" in page
    assert "No timing table" in book.timings_markdown(tmp_path / "nothing")


def test_glance_reads_the_saved_results_and_names_what_is_missing(tmp_path):
    folder = tmp_path / "50_evaluate"
    folder.mkdir()
    pd.DataFrame({"omics": ["transcriptomics"], "stimulus": ["M1"], "this run": ["2.00% (95% CI: 1%, 3%); 4 / 200"],
                  "this run, BH 5% FDR": ["0.00%; 0 / 200"], "paper": ["18.72%"], "test": ["mannwhitney"],
                  "profile": ["smoke"], "data source": ["simulated screen"]}).to_csv(folder / "headline.csv", index=False)
    pd.DataFrame({"omics": ["proteomics"], "stimulus": ["m1"], "precision": [0.5], "recall": [0.04]}).to_csv(
        folder / "truth_recovery.csv", index=False)
    g = book.Glance.read(folder)
    assert set(g.missing) == set(book.GLANCE_FILES) - {"headline.csv", "truth_recovery.csv"}
    assert "**Not written by this run:**" in g.describe() and "`null_calibration.csv`" in g.describe()
    assert "profile: smoke" in g.context() and "data: simulated screen" in g.context()
    head = g.headline()
    assert "data source" not in head.data.columns and head.data.loc[0, "paper"] == "18.72%"
    assert "was not written; no null screen" in g.show("null_calibration.csv", why_missing="no null screen").data
    shown = g.show("truth_recovery.csv", columns=["omics", "stimulus", "precision", "recall", "false_positive_rate"])
    assert list(shown.data.columns) == ["omics", "stimulus", "precision", "recall"]
    assert "false_positive_rate" in shown.caption
    with pytest.raises(KeyError):
        g.tables["tests_compared.csv"]


def test_staged_book_holds_the_sources_and_the_chapters(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "00_x.ipynb").write_text("{}")
    (executed / "00_x.md").write_text("stray")
    dest = book.stage_book(tmp_path / "book", executed)
    assert (dest / "_config.yml").exists() and (dest / "_toc.yml").exists() and (dest / "references.bib").exists()
    assert (dest / "executed" / "00_x.ipynb").exists() and not (dest / "executed" / "00_x.md").exists()
    assert not (dest / "_build").exists()
    written = book.write_generated_pages(dest, tmp_path / "results")
    assert [p.name for p in written] == ["run_timings.md", "layout_reference.txt"]
    assert "data/ICF" in written[1].read_text()


def test_glance_status_lists_every_file_the_page_reads(tmp_path):
    g = book.Glance.read(tmp_path)
    st = g.status()
    assert len(st) == len(book.GLANCE_FILES) and not st["found"].any()
    assert st["file"].iloc[0] == "50_evaluate/headline.csv"
