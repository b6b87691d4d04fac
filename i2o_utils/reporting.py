"""What a notebook wrote: one row per file with its size and shape or columns."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd


def _describe(p: Path) -> str:
    try:
        if p.suffix == ".csv":
            head = pd.read_csv(p, nrows=5)
            n = sum(1 for _ in open(p)) - 1
            return f"{n} rows x {head.shape[1]} columns: {', '.join(map(str, head.columns[:8]))}" + \
                (" ..." if head.shape[1] > 8 else "")
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            md = pq.ParquetFile(p).metadata
            names = pq.ParquetFile(p).schema_arrow.names
            return f"{md.num_rows} rows x {len(names)} columns: {', '.join(names[:8])}" + (" ..." if len(names) > 8 else "")
        if p.suffix == ".h5ad":
            import h5py

            with h5py.File(p, "r") as f:
                x = f["X"]
                shape = x.shape if hasattr(x, "shape") else tuple(x.attrs.get("shape", ()))
                layers = list(f["layers"].keys()) if "layers" in f else []
            return f"AnnData {shape[0]} x {shape[1]}" + (f"; layers {', '.join(layers)}" if layers else "")
        if p.suffix == ".json":
            return "JSON"
    except Exception as e:  # describing is best-effort; the file list itself is what matters
        return f"(could not read: {e})"
    return ""


def written_files(paths: Iterable[str | Path], root: str | Path | None = None,
                  max_per_folder: int = 12) -> pd.DataFrame:
    """A table of files (folders are expanded): path, MiB, and shape/columns where readable.

    Folders with many files (per-well HDF5) are summarised as one row with the file count.
    """
    rows = []
    for item in paths:
        item = Path(item)
        if item.is_dir():
            files = sorted(f for f in item.rglob("*") if f.is_file() and not f.name.startswith("."))
            if len(files) > max_per_folder:
                size = sum(f.stat().st_size for f in files)
                rows.append((str(item), size / 2**20, f"{len(files)} files"))
                continue
        else:
            files = [item] if item.exists() else []
        for f in files:
            rows.append((str(f), f.stat().st_size / 2**20, _describe(f)))
    df = pd.DataFrame(rows, columns=["path", "MiB", "content"])
    if root is not None:
        df["path"] = [str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p for p in df["path"]]
    df["MiB"] = df["MiB"].round(2)
    return df
