"""Build the Jupyter Book from the executed notebooks (execution is off in the book itself)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from i2o_utils.paths import BOOK_DIR


def build_book(book_dir: Path = BOOK_DIR, strict: bool = True) -> Path:
    """Run ``jupyter-book build`` (``-W -n --keep-going`` when strict); return the index page."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(book_dir)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    subprocess.run(cmd, check=True)
    index = book_dir / "_build" / "html" / "index.html"
    if not index.exists():
        raise FileNotFoundError(f"the build finished but {index} is missing")
    return index
