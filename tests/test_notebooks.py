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


# --------------------------------------------------------------------------------------------
# what each notebook promises to write (checked on the smoke run's outputs)
# --------------------------------------------------------------------------------------------
SETS = [(o, s) for o in ("transcriptomics", "proteomics") for s in ("m1", "m2")]


def _png(path):
    from PIL import Image

    assert path.exists(), f"{path.name} missing"
    with Image.open(path) as im:
        assert im.size[0] >= 200 and im.size[1] >= 100, f"{path.name} is {im.size}"


def _rows(path, n=None, columns=()):
    import pandas as pd

    assert path.exists(), f"{path.name} missing"
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    assert len(df) > 0 if n is None else len(df) == n, f"{path.name}: {len(df)} rows"
    assert set(columns) <= set(df.columns), f"{path.name}: missing {set(columns) - set(df.columns)}"
    return df


def _promises_00(res, data):
    wells = _rows(data / "data" / "metadata.csv", columns=("plate_barcode", "well_id", "target", "cell_state"))
    assert (data / "SCREEN.json").exists()
    for name in ("plate_maps.png", "example_fields.png"):
        _png(res / name)
    return {"imaging_wells": len(wells)}


def _promises_10(res, data, n_splits):
    import anndata as ad

    from i2o_utils.data import layout

    genes = {}
    for o, s in SETS:
        a = ad.read_h5ad(res / f"{o}_{s}.h5ad")
        assert a.n_obs > 0 and a.n_vars > 0 and {"raw", "normalised", "corrected"} <= set(a.layers)
        table = _rows(res / f"genes_{o}_{s}.csv", columns=("gene", "symbol", "kept"))
        assert int(table["kept"].sum()) == a.n_vars
        genes[(o, s)] = (a.n_vars, len(table))
        assert layout.gt_path(o, s, data).exists()
    splits = _rows(res / "splits.csv", columns=("split", "target", "fold"))
    assert sorted(splits["split"].unique()) == list(range(n_splits))
    per_split = splits.groupby("split")["target"]
    assert (per_split.nunique() == per_split.size()).all()  # each perturbation once per split
    assert set(splits["fold"]) <= {"train", "val", "test"} and "test" in set(splits["fold"])
    _png(res / "fig9_plate_effects.png")
    return {"genes": genes}


def _promises_20(res, imaging_wells):
    status = _rows(res / "wells_status.csv", n=imaging_wells)
    assert (res / "tilestore").is_dir()
    _rows(res / "features_wells.parquet", n=int((status["status"] == "ok").sum()) if "status" in status else None)
    for name in ("fig8_channels.png", "fig11_preprocessing.png"):
        _png(res / name)


def _promises_40(res, n_splits, genes, imaging_wells):
    import anndata as ad

    files = sorted(p.name for p in (res / "predictions").iterdir())
    assert files == sorted(f"{o}_{s}_split{k:02d}.h5ad" for o, s in SETS for k in range(n_splits))
    for o, s in SETS:
        for k in range(n_splits):
            a = ad.read_h5ad(res / "predictions" / f"{o}_{s}_split{k:02d}.h5ad")
            assert a.n_obs > 0 and a.n_vars == genes[(o, s)][0]
            assert {"measured", "predicted"} <= set(a.layers) and "test" in set(a.obs["fold"]) <= {"test", "val"}
    assert (res / "heads.pt").exists()
    _rows(res / "embeddings" / "well_embeddings.parquet", n=imaging_wells)
    _png(res / "validation_curves.png")


def _promises_50(res, genes, executed):
    per_gene = _rows(res / "per_gene.parquet", columns=("omics", "stimulus", "gene", "r2", "r2_oos", "q"))
    sizes = per_gene.groupby(["omics", "stimulus"]).size()
    assert {k: int(v) for k, v in sizes.items()} == {k: v[1] for k, v in genes.items()}
    from i2o_utils.evaluation.pipeline import TESTS_COMPARED_COLUMNS

    _rows(res / "tests_compared.csv", n=len(SETS) * 3, columns=TESTS_COMPARED_COLUMNS)
    _rows(res / "headline.csv", n=len(SETS))
    _rows(res / "truth_recovery.csv", n=len(SETS) * 2, columns=("precision", "recall"))
    if (res / "label_oracle.csv").exists():
        _rows(res / "label_oracle.csv", n=sum(v[0] for v in genes.values()), columns=("oracle_predictable",))
    else:  # too few perturbations for it (the smoke screen): the notebook says so
        assert "label oracle not computed" in executed.read_text()
    for name in ("headline.png", "fig2_r2_violins.png", "fig3_predictability.png", "fig12_measured_vs_predicted.png"):
        _png(res / name)


def test_notebooks_write_what_they_promise(smoke_run):
    """Each notebook's outputs exist with the expected shape: the smoke run, read back."""
    from i2o_utils.config import get_profile

    root, outcome = smoke_run
    failed = [s for s, r in outcome.items() if isinstance(r, Exception)]
    if failed:
        pytest.fail(f"notebook(s) failed, outputs not checked: {failed}")
    res, data = root / "results", root / "data"
    n_splits = get_profile("smoke").evaluation.n_splits
    by = {stem[:2]: res / stem for stem in NOTEBOOKS}
    screen = _promises_00(by["00"], data)
    out10 = _promises_10(by["10"], data, n_splits)
    _promises_20(by["20"], screen["imaging_wells"])
    assert (by["30"] / "backbone.pt").exists()
    _rows(by["30"] / "loss_history.csv")
    _promises_40(by["40"], n_splits, out10["genes"], screen["imaging_wells"])
    _promises_50(by["50"], out10["genes"], outcome["50_evaluate"])
    _rows(by["55"] / "files_read.csv")
    # the smoke screen's splits hold too few perturbations for an r² (every gene "not evaluated"), so
    # notebook 60's tables are empty there: only that they and the figures exist is checked
    for name in ("fig4_location_r2.png", "fig5_forest.png"):
        _png(by["60"] / name)
    assert (by["60"] / "ols_coefficients.csv").exists() and (by["60"] / "per_gene_annotated.parquet").exists()
    for stem, figures, table in (("70", ("fig6_attribution.png",), "genes.csv"),
                                 ("80", ("fig7_umap.png",), "map.csv"),
                                 ("90", ("fig13_cca_similarity.png",), "canonical_correlations.csv")):
        for name in figures:
            _png(by[stem] / name)
        _rows(by[stem] / table)
    umap = _rows(by["80"] / "umap.parquet")
    assert len(umap) == umap["embedding"].nunique() * screen["imaging_wells"]  # every well, before and after CORAL
