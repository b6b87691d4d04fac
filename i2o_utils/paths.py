"""Where data and results live.

Two roots, each set by one environment variable, resolved here and nowhere else:

* ``I2O_DATA_DIR``: the data root, laid out like the authors' bucket (``data/ICF``,
  ``data/TILES``, ``data/GT``, ``data/metadata.csv``, ...). Default: ``<repo>/data``.
* ``I2O_RESULTS_DIR``: what the notebooks write (one folder per notebook). Default:
  ``<repo>/results``.

Both defaults are git-ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
EXECUTED_DIR = BOOK_DIR / "executed"
MANIFESTS_DIR = REPO_ROOT / "data_manifests"

DATA_ENV = "I2O_DATA_DIR"
RESULTS_ENV = "I2O_RESULTS_DIR"


def data_dir() -> Path:
    """The data root (bucket layout); ``$I2O_DATA_DIR`` or ``<repo>/data``."""
    return Path(os.environ.get(DATA_ENV) or REPO_ROOT / "data").expanduser().resolve()


def results_dir(step: str | None = None) -> Path:
    """The results root, or the folder of one notebook step (created on demand).

    Parameters
    ----------
    step
        Notebook stem such as ``"10_preprocess_omics"``; ``None`` for the root.
    """
    root = Path(os.environ.get(RESULTS_ENV) or REPO_ROOT / "results").expanduser().resolve()
    out = root / step if step else root
    out.mkdir(parents=True, exist_ok=True)
    return out


def bucket_paths(root: Path | None = None) -> dict[str, Path]:
    """The folders and files of the bucket layout under a data root."""
    root = Path(root) if root is not None else data_dir()
    d = root / "data"
    return {
        "root": root,
        "raw": d / "RAW",  # uncorrected images (simulated screen); same per-well form as ICF
        "icf": d / "ICF",
        "tiles": d / "TILES",
        "gt": d / "GT",
        "omics_raw": d / "OMICS_RAW",  # raw counts / intensities before normalisation
        "metadata": d / "metadata.csv",
        "third_party": root / "third-party",
        "checkpoints": root / "checkpoints",
        "simulation": root / "simulation",  # truth tables of the simulated screen
    }


NULL_SCREEN_DIR = "null_screen"


def null_screen_dirs(results_root: Path | None = None) -> dict[str, Path]:
    """Where ``i2o book`` runs the null screen beside the main one: ``<results root>/null_screen/``
    with ``data`` (its data root), ``results`` (its results root) and ``executed`` (its executed
    notebooks, outside the book). Not created."""
    root = Path(results_root) if results_root is not None else results_dir()
    base = root / NULL_SCREEN_DIR
    return {"base": base, "data": base / "data", "results": base / "results", "executed": base / "executed"}
