"""Execute the numbered notebooks with papermill, in order, into the book's build folder.

Sources in ``notebooks/`` are never written: executed copies go to ``book/executed/`` (or any
folder outside ``notebooks/``). A failing notebook stops the run with the notebook and cell named.

Each executed copy is then made ready for reading (:func:`present_for_book`: progress bars as
text, papermill's injected-parameters cell folded, the data and results roots written as
``$I2O_DATA_DIR`` / ``$I2O_RESULTS_DIR``), and the seconds each notebook took are recorded with the
profile and the machine in ``<results root>/run_timings.csv`` (:func:`record_timing`), which the
book shows.
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

from i2o_utils.config import PROFILE_NAMES
from i2o_utils.paths import DATA_ENV, EXECUTED_DIR, NOTEBOOKS_DIR, RESULTS_ENV

log = logging.getLogger(__name__)
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


@contextmanager
def _root_locks():
    """Hold the data and results roots (as the kernels will see them) for the whole run."""
    from i2o_utils.cache import remove_partial_files
    from i2o_utils.locks import run_lock
    from i2o_utils.paths import data_dir, results_dir

    with run_lock(data_dir(), what="i2o run (data root)"), run_lock(results_dir(), what="i2o run (results root)"):
        for p in remove_partial_files([data_dir(), results_dir()]):  # left by an interrupted run
            log.info("removed %s, left by an interrupted write", p)
        yield


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
    LockHeld
        When another live process runs on the same data or results root (nothing is run); the
        roots are locked for the whole run and leftover temporary files of an interrupted run
        are removed.
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
    # I2O_BOOK_TABLES: the kernels show every displayed DataFrame as the book's tables.
    with _environ(**{DATA_ENV: data_dir, RESULTS_ENV: results_dir, "I2O_BOOK_TABLES": "1"}), _root_locks():
        for src in list_notebooks(select):
            dst = output_dir / src.name
            t0 = time.perf_counter()
            log(f"[i2o] running {src.name} (profile {profile}) -> {dst}")
            try:
                pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3",
                                    progress_bar=progress, cwd=str(src.parent), log_output=False)
            except pm.PapermillExecutionError as e:
                raise NotebookFailed(src.stem, e.exec_count, f"{e.ename}: {e.evalue}", dst) from None
            seconds = time.perf_counter() - t0
            present_for_book(dst)
            log(f"[i2o] {src.name} done in {seconds:.1f} s")
            record_timing(src.stem, seconds, profile)
            done.append(dst)
    return done


# ------------------------------------------------------------------------------------------------
# the executed copies as the book shows them, and how long each notebook took
# ------------------------------------------------------------------------------------------------
TIMINGS_NAME = "run_timings.csv"
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def machine_summary() -> str:
    """The machine in one line: CPU model, cores, memory and the GPU if torch sees one."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        mem = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        mem = ""
    # The NVIDIA driver names its GPUs under /proc: no need to import torch (seconds) to ask.
    gpus = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            gpus += [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("Model:")]
        except OSError:
            pass
    gpu = f"GPU {', '.join(gpus)}" if gpus else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores{mem}, {gpu}"


def record_timing(notebook: str, seconds: float, profile: str, results_root: Path | None = None) -> Path:
    """Add (or replace) the row of ``notebook`` in ``<results root>/run_timings.csv``.

    Columns: notebook, seconds, profile, finished (UTC), machine. Rows of notebooks not run this
    time are kept, so the table covers the last run of every notebook.
    """
    from datetime import datetime, timezone

    import pandas as pd

    from i2o_utils.data.layout import write_csv_atomic
    from i2o_utils.paths import results_dir

    path = Path(results_root or results_dir()) / TIMINGS_NAME
    row = {"notebook": notebook, "seconds": round(seconds, 1), "profile": profile,
           "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
           "machine": machine_summary()}
    table = pd.DataFrame([row])
    if path.exists():
        old = pd.read_csv(path)
        table = pd.concat([old[old["notebook"] != notebook], table], ignore_index=True)
    return write_csv_atomic(table.sort_values("notebook", kind="stable"), path)


def _widget_text(model_id: str, state: dict) -> str:
    """Text of a widget from the notebook's saved widget state (a tqdm bar as tqdm prints it)."""
    import html as _html

    model = state.get(model_id, {})
    name, st = model.get("model_name", ""), model.get("state", {})
    if name in ("HBoxModel", "VBoxModel", "BoxModel"):
        sep = "\n" if name == "VBoxModel" else ""
        return sep.join(_widget_text(c.removeprefix("IPY_MODEL_"), state) for c in st.get("children", []))
    if name in ("FloatProgressModel", "IntProgressModel"):
        lo, hi, v = float(st.get("min", 0)), float(st.get("max", 100)), float(st.get("value", 0))
        frac = 0.0 if hi <= lo else min(max((v - lo) / (hi - lo), 0.0), 1.0)
        full = int(round(frac * 10))
        return "|" + "█" * full + " " * (10 - full) + "|"
    value = st.get("value", st.get("description", ""))
    text = _html.unescape(re.sub(r"<[^>]+>", "", str(value)))
    return text.replace("\u2007", " ").replace("\u00a0", " ")


def present_for_book(executed: str | Path) -> Path:
    """Rewrite an executed copy for reading: progress widgets as text, run parameters folded.

    * A progress bar is an interactive widget whose output holds only its first state (0 %); it is
      replaced by a text line of its final state, read from the widget state saved in the
      notebook, and the widget state is dropped (a static page cannot run it).
    * Papermill's injected-parameters cell is folded (tag ``hide-cell``): the parameters cell
      above it shows the defaults, the folded one what this run used.
    * The data and results roots in the outputs are written as ``$I2O_DATA_DIR`` and
      ``$I2O_RESULTS_DIR``, so no machine's folders reach the book.
    """
    import nbformat

    from i2o_utils.paths import REPO_ROOT, data_dir, results_dir

    executed = Path(executed)
    nb = nbformat.read(executed, as_version=4)
    state = nb.metadata.get("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})
    roots = sorted({(str(results_dir()), "$I2O_RESULTS_DIR"), (str(data_dir()), "$I2O_DATA_DIR"),
                    (str(REPO_ROOT), ".")}, key=lambda r: -len(r[0]))

    def clean(text: str) -> str:
        for root, name in roots:
            text = text.replace(root, name)
        return text

    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            tags.append("hide-cell")
            cell.metadata["mystnb"] = {"code_prompt_show": "Parameters of this run",
                                       "code_prompt_hide": "Hide the parameters of this run"}
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if _WIDGET_VIEW in data:
                text = _widget_text(data[_WIDGET_VIEW].get("model_id", ""), state) or data.get("text/plain", "")
                out = nbformat.v4.new_output("stream", name="stdout", text=str(text).rstrip("\n") + "\n")
            elif out.get("output_type") == "stream":
                out["text"] = clean(out["text"])
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in data and isinstance(data[mime], str):
                    data[mime] = clean(data[mime])
            outputs.append(out)
        cell["outputs"] = outputs
    nb.metadata.pop("widgets", None)
    from i2o_utils.data.layout import atomic_path

    with atomic_path(executed) as tmp:
        nbformat.write(nb, tmp)
    return executed


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
    Notebook 50 of the main screen then reads the null screen's p-values from there. The null
    screen's data root is this runner's own product: it is simulated again (without images) on
    every run.

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
                         parameters={"null": True, "seed": int(seed), "images": False, "overwrite": True,
                                     "run_baselines": False}, data_dir=dirs["data"],
                         results_dir=dirs["results"], progress=progress, log=log)
