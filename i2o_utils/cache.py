"""Fingerprints that key a cached result on what it was computed from, and leftover-file cleanup.

A step that reuses an earlier output (a flat field, a well's tiles, a feature table) stores,
beside that output, a fingerprint of its inputs and parameters; on the next run it recomputes the
fingerprint and reuses the output only when both agree. Fingerprints are short hex strings:

* :func:`file_fingerprint`: a file's size and modification time in nanoseconds (cheap for the
  large image files; any rewrite, even with the same size, moves the modification time);
* :func:`table_fingerprint`: a hash of the values of the columns a result used;
* :func:`value_fingerprint`: a hash of parameters (anything JSON can write, arrays included);
* :func:`fingerprint`: one hash of several named parts; :func:`describe_change` names the parts
  that differ between two records, for messages that say what changed.

:func:`remove_partial_files` deletes the temporary ``.NAME.XXXX.part`` (and ``.staged``) files that
an interrupted atomic write (:func:`i2o_utils.data.layout.atomic_path`, ``staged_paths``) leaves
behind. Resumable downloads (``NAME.part``, no leading dot) are not touched.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

_LEN = 16


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:_LEN]


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return {"dtype": str(v.dtype), "shape": list(v.shape),
                "sha1": hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest()}
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        items = [_jsonable(x) for x in v]
        return sorted(items, key=repr) if isinstance(v, (set, frozenset)) else items
    if hasattr(v, "__dataclass_fields__"):
        from dataclasses import asdict

        return _jsonable(asdict(v))
    return v


def value_fingerprint(value: Any) -> str:
    """Hash of parameters: dicts, lists, numbers, strings, dataclasses and NumPy arrays."""
    return _digest(json.dumps(_jsonable(value), sort_keys=True, default=str).encode())


def file_fingerprint(path: str | os.PathLike) -> str:
    """Size and modification time (ns) of a file; ``"missing"`` when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    return f"{st.st_size}-{st.st_mtime_ns}"


def files_fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """One hash of several files' names, sizes and modification times (order does not matter)."""
    parts = sorted((str(p), file_fingerprint(p)) for p in paths)
    return value_fingerprint(parts)


def table_fingerprint(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """Hash of the values of ``columns`` (default all) of a table, in row order, index ignored."""
    cols = list(columns) if columns is not None else list(df.columns)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"table has no column(s) {missing}")
    sub = df[cols].reset_index(drop=True)
    h = pd.util.hash_pandas_object(sub, index=False).to_numpy()
    return _digest(json.dumps(cols).encode() + h.tobytes())


def fingerprint(**parts: Any) -> str:
    """One hash of named parts (each a string fingerprint or any value :func:`value_fingerprint` takes)."""
    return value_fingerprint(parts)


def describe_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """Which recorded parts differ, e.g. ``"inputs changed, params changed"``; ``""`` if none."""
    if old is None:
        return "no record of what it was computed from"
    changed = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k} changed" for k in changed)


INPUTS_RECORD = "inputs.json"


def write_record(folder: str | os.PathLike, **parts: Any) -> Path:
    """Write ``folder/inputs.json``: the fingerprints a step's outputs in ``folder`` were computed from."""
    from i2o_utils.data.layout import atomic_path

    path = Path(folder) / INPUTS_RECORD
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(parts), indent=1, sort_keys=True))
    return path


def read_record(folder: str | os.PathLike) -> dict | None:
    """The record written by :func:`write_record`, or ``None`` (absent or unreadable)."""
    try:
        return json.loads((Path(folder) / INPUTS_RECORD).read_text())
    except (OSError, ValueError):
        return None


def clear_record(folder: str | os.PathLike) -> None:
    """Remove a step's record before it rewrites its outputs (a half-finished run has none)."""
    (Path(folder) / INPUTS_RECORD).unlink(missing_ok=True)


def remove_partial_files(folders: Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Delete leftover temporary files of interrupted atomic writes (``.NAME.*.part``, ``.NAME.*.staged``).

    Call it at the start of a run that holds the lock on these folders (no other writer can be
    writing them). Returns the files removed.
    """
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for p in (folder.rglob(".*") if recursive else folder.glob(".*")):
            if p.name.endswith((".part", ".staged")) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
