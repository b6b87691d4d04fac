"""Smoke execution of every notebook, in order, with papermill on a fresh smoke screen.

The chain runs once per session (fixture ``smoke_run`` in conftest.py, shared with the browser test)
into temporary data/results roots; each notebook is then reported as its own test, so a failure names
the notebook and its cell.
"""

from __future__ import annotations

import json

import nbformat
import pytest

from i2o_utils.runner import NotebookFailed, list_notebooks, run_notebooks

NOTEBOOKS = [p.stem for p in list_notebooks()]


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_runs_on_smoke_profile(stem, smoke_run):
    root, outcome = smoke_run
    result = outcome[stem]
    if isinstance(result, Exception):
        pytest.fail(str(result))
    nb = nbformat.read(result, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert (root / "results" / stem).is_dir(), f"{stem} wrote nothing to its results folder"


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_source_is_clean(stem):
    """Sources carry no outputs, one parameters cell with a profile, no def/class."""
    nb = nbformat.read(list_notebooks([stem])[0], as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'profile = "quick"' in params[0].source
    src = "\n".join(c.source for c in code)
    assert "os.environ" not in src and "../" not in src
    n_defs = sum(line.lstrip().startswith(("def ", "class ")) for line in src.splitlines())
    assert n_defs <= 1


def test_runner_refuses_to_overwrite_sources(tmp_path):
    from i2o_utils.paths import NOTEBOOKS_DIR

    with pytest.raises(ValueError, match="must not overwrite"):
        run_notebooks("smoke", output_dir=NOTEBOOKS_DIR)
    with pytest.raises(ValueError, match="unknown profile"):
        run_notebooks("huge", output_dir=tmp_path)
    with pytest.raises(ValueError, match="no notebook matches"):
        list_notebooks(["99_nothing"])


def test_failing_notebook_is_named_with_its_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('profile = "quick"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise ValueError('bad well G13')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(nb, src / "05_fail_here.ipynb")
    import i2o_utils.runner as runner

    books = runner.list_notebooks(folder=src)
    assert [b.name for b in books] == ["05_fail_here.ipynb"]
    orig = runner.list_notebooks
    try:
        runner.list_notebooks = lambda select=None, folder=src: orig(select, folder=src)
        with pytest.raises(NotebookFailed, match=r"05_fail_here failed in cell \d+: ValueError: bad well G13") as e:
            runner.run_notebooks("smoke", output_dir=tmp_path / "out", progress=False, log=lambda *a: None)
    finally:
        runner.list_notebooks = orig
    assert e.value.executed.exists()
    assert json.loads(e.value.executed.read_text())["cells"]
