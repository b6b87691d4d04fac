"""Execute the numbered notebooks with papermill, in order, into the book's build folder.

Sources in ``notebooks/`` are never written: executed copies go to ``book/executed/`` (or any
folder outside ``notebooks/``). A failing notebook stops the run with the notebook and cell named.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

from i2o_utils.config import PROFILE_NAMES
from i2o_utils.paths import DATA_ENV, EXECUTED_DIR, NOTEBOOKS_DIR, RESULTS_ENV

_NAME_RE = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""

    def __init__(self, notebook: str, cell: int | None, error: str, executed: Path):
        self.notebook, self.cell, self.error, self.executed = notebook, cell, error, executed
        where = f"cell {cell}" if cell is not None else "an unknown cell"
        super().__init__(f"notebook {notebook} failed in {where}: {error}\n"
                         f"the executed copy with the full traceback is {executed}")


def list_notebooks(select: Iterable[str] | None = None, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks in run order; ``select`` keeps those whose stem or number matches."""
    books = sorted(p for p in Path(folder).glob("*.ipynb") if _NAME_RE.match(p.name))
    if select:
        wanted = list(select)
        chosen = [p for p in books if any(p.stem == s or p.stem.startswith(f"{s}_") or p.name == s
                                          for s in wanted)]
        unknown = [s for s in wanted if not any(p.stem == s or p.stem.startswith(f"{s}_") or p.name == s
                                                for p in books)]
        if unknown:
            raise ValueError(f"no notebook matches {unknown}; available: {[p.stem for p in books]}")
        return chosen
    return books


@contextmanager
def _environ(**values: str | None):
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is not None:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_notebooks(profile: str = "quick", select: Sequence[str] | None = None,
                  output_dir: str | Path = EXECUTED_DIR, parameters: dict | None = None,
                  data_dir: str | Path | None = None, results_dir: str | Path | None = None,
                  progress: bool = True, log=print) -> list[Path]:
    """Execute notebooks in order with ``profile`` (and extra ``parameters``) via papermill.

    Parameters
    ----------
    profile
        'smoke', 'quick' or 'paper', passed to every notebook as the ``profile`` parameter.
    select
        Notebook stems or numbers (``"10"``, ``"10_preprocess_omics"``); default all.
    output_dir
        Where executed copies go; must not be the source folder.
    parameters
        Further papermill parameters given to every notebook (unknown ones are ignored by
        papermill with a warning).
    data_dir, results_dir
        Override ``I2O_DATA_DIR`` / ``I2O_RESULTS_DIR`` for the kernels.

    Returns
    -------
    list of Path
        The executed notebooks.

    Raises
    ------
    NotebookFailed
        At the first failing notebook, naming it and its cell.
    """
    import papermill as pm

    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    output_dir = Path(output_dir).resolve()
    if output_dir == NOTEBOOKS_DIR.resolve():
        raise ValueError("executed notebooks must not overwrite the sources in notebooks/")
    output_dir.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, **(parameters or {})}
    done = []
    with _environ(**{DATA_ENV: data_dir, RESULTS_ENV: results_dir}):
        for src in list_notebooks(select):
            dst = output_dir / src.name
            t0 = time.perf_counter()
            log(f"[i2o] running {src.name} (profile {profile}) -> {dst}")
            try:
                pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3",
                                    progress_bar=progress, cwd=str(src.parent), log_output=False)
            except pm.PapermillExecutionError as e:
                raise NotebookFailed(src.stem, e.exec_count, f"{e.ename}: {e.evalue}", dst) from None
            log(f"[i2o] {src.name} done in {time.perf_counter() - t0:.1f} s")
            done.append(dst)
    return done


NULL_SCREEN_LAST = 50
"""The null screen runs the notebooks up to the evaluation (numbers <= this)."""
NULL_SCREEN_SHARED = ("20_preprocess_images", "30_pretrain_backbone")
"""Steps the null screen takes from the main screen instead of running them: the imaging steps,
which never see the omics."""


def run_null_screen(profile: str = "quick", results_root: str | Path | None = None, seed: int = 0,
                    progress: bool = True, log=print) -> list[Path]:
    """Evaluate a **null screen**: the main screen's images with omics drawn independently of them.

    The simulator, with the main screen's ``seed`` and ``null=True``, lays out the same plates,
    wells and perturbations but draws the omics' perturbation effects independently of the
    imaging wells'. The imaging steps (:data:`NULL_SCREEN_SHARED`: tiles and pre-trained
    backbone, which never see the omics) are the main screen's, linked, so the images carry no
    information about the null omics; notebooks 00, 10, 40 and 50 run again into
    :func:`i2o_utils.paths.null_screen_dirs` of ``results_root`` (default: the results root).
    Notebook 50 of the main screen then reads the null screen's p-values from there.

    The main screen's notebooks 20 and 30 must have run (into ``results_root``).
    """
    from i2o_utils.paths import null_screen_dirs, results_dir

    root = Path(results_root) if results_root is not None else results_dir()
    dirs = null_screen_dirs(root)
    dirs["results"].mkdir(parents=True, exist_ok=True)
    for step in NULL_SCREEN_SHARED:
        src, dst = (root / step).resolve(), dirs["results"] / step
        if not src.is_dir():
            raise FileNotFoundError(f"{src}: the null screen shares the main screen's {step}; run it first")
        if dst.is_symlink() or dst.exists():
            if dst.is_symlink() and dst.resolve() == src:
                continue
            if dst.is_symlink() or dst.is_file():
                dst.unlink()
            else:
                raise FileExistsError(f"{dst} exists and is not a link to {src}; remove it")
        dst.symlink_to(src, target_is_directory=True)
    stems = [p.stem for p in list_notebooks() if int(p.name[:2]) <= NULL_SCREEN_LAST
             and p.stem not in NULL_SCREEN_SHARED]
    log(f"[i2o] null screen (seed {seed}, the main screen's images): notebooks "
        f"{', '.join(s[:2] for s in stems)} -> {dirs['base']}")
    return run_notebooks(profile, select=stems, output_dir=dirs["executed"],
                         parameters={"null": True, "seed": int(seed)}, data_dir=dirs["data"],
                         results_dir=dirs["results"], progress=progress, log=log)
