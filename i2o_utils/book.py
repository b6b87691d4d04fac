"""The book: build it from the executed notebooks, and the "Results at a glance" page's reading.

The book renders the executed copies that ``i2o run`` writes to ``book/executed/`` (execution is off
in the book itself). :func:`build_book` also writes the one generated page, the run's timing table
(``run_timings.md``, from ``<results root>/run_timings.csv``). :func:`stage_book` copies the book's
sources and a set of executed notebooks elsewhere, to build a book of another run (the tests build
the smoke run's book that way).

:class:`Glance` reads what notebook 50 saved for the results page and nothing else; a file that a
run did not write is reported as missing, never recomputed.
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from i2o_utils.paths import BOOK_DIR

TIMINGS_PAGE = "run_timings.md"
LAYOUT_REFERENCE = "layout_reference.txt"


# ------------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------------
def timings_markdown(results_root: str | Path | None = None) -> str:
    """The page listing the seconds each notebook took (profile and machine named)."""
    from i2o_utils.reporting import table
    from i2o_utils.runner import TIMINGS_NAME

    if results_root is None:
        from i2o_utils.paths import results_dir

        results_root = results_dir()
    path = Path(results_root) / TIMINGS_NAME
    lines = ["# How long this run took", "",
             "Seconds of wall time per notebook, as measured by the runner (`i2o run`) for the run this "
             "book shows, with the profile and the machine. The table is saved as "
             f"`{TIMINGS_NAME}` in the results root.", ""]
    if not path.exists():
        lines.append(f"```{{note}}\nNo timing table: `{TIMINGS_NAME}` is not in the results root "
                     "(the notebooks were not run by `i2o run`).\n```")
        return "\n".join(lines) + "\n"
    df = pd.read_csv(path)
    total = df["seconds"].sum()
    machines = sorted(df["machine"].dropna().unique())
    lines += [f"Total: {total:.0f} s ({total / 60:.1f} min) over {len(df)} notebooks; "
              f"machine: {'; '.join(machines)}.", ""]
    shown = table(df[["notebook", "seconds", "profile", "finished"]], units={"seconds": "s"}, max_rows=100)
    lines += ["```{raw} html", shown._repr_html_(), "```", ""]
    return "\n".join(lines)


def write_generated_pages(book_dir: Path = BOOK_DIR, results_root: str | Path | None = None) -> list[Path]:
    """The pages made from the code and the run: the timing page and the data layout's reference."""
    import i2o_utils.data.layout as layout

    book_dir = Path(book_dir)
    timings = book_dir / TIMINGS_PAGE
    timings.write_text(timings_markdown(results_root))
    ref = book_dir / LAYOUT_REFERENCE
    ref.write_text(inspect.cleandoc(layout.__doc__ or "(i2o_utils.data.layout has no docstring)") + "\n")
    return [timings, ref]


def stage_book(dest: str | Path, executed_dir: str | Path, book_dir: Path = BOOK_DIR) -> Path:
    """Copy the book's sources (config, toc, pages) to ``dest`` with ``executed_dir`` as its chapters."""
    dest = Path(dest)
    ignore = shutil.ignore_patterns("_build", "executed", TIMINGS_PAGE, LAYOUT_REFERENCE)
    shutil.copytree(book_dir, dest, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(executed_dir, dest / "executed", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.md", ".*"))
    return dest


def build_book(book_dir: Path = BOOK_DIR, strict: bool = True, results_root: str | Path | None = None,
               quiet: bool = False) -> Path:
    """Write the timing page, run ``jupyter-book build`` (``-W -n --keep-going`` when strict).

    Returns the index page. Raises ``subprocess.CalledProcessError`` when the build fails or, when
    strict, warns (the output then names every warning).
    """
    book_dir = Path(book_dir)
    write_generated_pages(book_dir, results_root)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(book_dir)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    if quiet:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
    else:
        subprocess.run(cmd, check=True)
    index = book_dir / "_build" / "html" / "index.html"
    if not index.exists():
        raise FileNotFoundError(f"the build finished but {index} is missing")
    return index


# ------------------------------------------------------------------------------------------------
# Results at a glance: what notebook 50 saved
# ------------------------------------------------------------------------------------------------
#: The files the results page reads (under ``results/50_evaluate``) and what each holds.
GLANCE_FILES = {
    "headline.csv": "this run's fractions of significant gene products beside the paper's",
    "headline.png": "the headline figure",
    "fig3_predictability.png": "Fig 3: significant, not significant and filtered, with intervals",
    "tests_compared.csv": "the significance tests side by side",
    "truth_recovery.csv": "precision and recall against the simulated truth (simulated screens only)",
    "null_calibration.csv": "the evaluation of the null screen (no image carries information)",
    "null_qq.png": "p-values of the null screen against the uniform",
}


@dataclass
class Glance:
    """The saved results of notebook 50 that the results page shows; ``missing`` lists the rest."""

    folder: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, folder: str | Path) -> "Glance":
        folder = Path(folder)
        g = cls(folder=folder)
        for name in GLANCE_FILES:
            p = folder / name
            if not p.exists():
                g.missing.append(name)
            elif name.endswith(".csv"):
                g.tables[name] = pd.read_csv(p)
            else:
                g.figures[name] = p
        return g

    def describe(self) -> str:
        """Markdown: which files were found and which are missing."""
        found = [n for n in GLANCE_FILES if n not in self.missing]
        text = f"Read from `50_evaluate/` in the results root: {', '.join(f'`{n}`' for n in found) or 'nothing'}."
        if self.missing:
            text += (" **Not written by this run:** " + ", ".join(f"`{n}` ({GLANCE_FILES[n]})" for n in self.missing)
                     + "; the sections that need them say so below.")
        return text

    def status(self) -> pd.DataFrame:
        """One row per file the page reads: whether this run wrote it, and what it holds."""
        return pd.DataFrame({"file": [f"50_evaluate/{n}" for n in GLANCE_FILES],
                             "found": [n not in self.missing for n in GLANCE_FILES],
                             "holds": list(GLANCE_FILES.values())})

    def note_missing(self, name: str, why: str = "") -> str:
        return (f"**Not available in this run:** `50_evaluate/{name}` ({GLANCE_FILES[name]}) was not written"
                + (f"; {why}" if why else "") + ".")

    def headline(self):
        """The headline table: this run beside the paper, with the test, profile and data source."""
        from i2o_utils.reporting import table

        df = self.tables["headline.csv"]
        cols = [c for c in ("omics", "stimulus", "this run", "this run, BH 5% FDR", "paper") if c in df.columns]
        return table(df[cols], key=["omics", "stimulus"])

    def context(self) -> str:
        """One line: the test, profile and data source named in the headline table."""
        df = self.tables["headline.csv"]
        parts = []
        for col, label in (("data source", "data"), ("profile", "profile"), ("test", "test"), ("n_splits", "splits"),
                           ("alpha", "alpha")):
            if col in df.columns:
                parts.append(f"{label}: {', '.join(map(str, pd.unique(df[col])))}")
        return "; ".join(parts)

    def show(self, name: str, columns: list[str] | None = None, why_missing: str = "", **table_kw):
        """The table or figure saved under ``name``, or a note saying it is missing (IPython objects)."""
        from IPython.display import Image, Markdown

        from i2o_utils.reporting import table

        if name in self.missing:
            return Markdown(self.note_missing(name, why_missing))
        if name in self.figures:
            return Image(filename=str(self.figures[name]))
        df = self.tables[name]
        caption = None
        if columns is not None:
            present = [c for c in columns if c in df.columns]
            absent = [c for c in columns if c not in df.columns]
            if not present:
                return Markdown(f"**`50_evaluate/{name}` has none of the columns {columns}**; it has {list(df.columns)}.")
            df = df[present]
            if absent:
                caption = f"50_evaluate/{name} has no column {', '.join(absent)}"
        units = {c: "%" for c in df.columns if str(c).startswith("pct_")}
        return table(df, units=units or None, caption=table_kw.pop("caption", caption), **table_kw)
