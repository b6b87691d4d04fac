"""Fingerprints of cached results' inputs, leftover-file cleanup and the run lock."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd
import pytest

from i2o_utils import cache
from i2o_utils.locks import LOCK_NAME, LockHeld, is_stale, read_lock, run_lock


def test_file_fingerprint_moves_with_any_rewrite(tmp_path):
    p = tmp_path / "a.h5"
    p.write_bytes(b"x" * 10)
    first = cache.file_fingerprint(p)
    assert cache.file_fingerprint(p) == first
    time.sleep(0.02)
    p.write_bytes(b"y" * 10)  # same size, new content
    assert cache.file_fingerprint(p) != first
    assert cache.file_fingerprint(tmp_path / "none") == "missing"
    q = tmp_path / "b.h5"
    q.write_bytes(b"z")
    assert cache.files_fingerprint([p, q]) == cache.files_fingerprint([q, p])
    assert cache.files_fingerprint([p]) != cache.files_fingerprint([p, q])


def test_table_fingerprint_uses_only_the_named_columns():
    df = pd.DataFrame({"well": ["A1", "A2"], "target": ["NT", "STAT1"], "note": ["x", "y"]})
    key = cache.table_fingerprint(df, ["well", "target"])
    assert cache.table_fingerprint(df.assign(note=["p", "q"]), ["well", "target"]) == key
    assert cache.table_fingerprint(df.assign(target=["NT", "STAT6"]), ["well", "target"]) != key
    assert cache.table_fingerprint(df.set_index("note"), ["well", "target"]) == key  # index ignored
    with pytest.raises(KeyError, match="cell_state"):
        cache.table_fingerprint(df, ["cell_state"])


def test_value_fingerprint_of_parameters_and_arrays():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert cache.value_fingerprint({"x": 1, "ff": a}) == cache.value_fingerprint({"ff": a.copy(), "x": 1})
    b = a.copy()
    b[1, 2] += 1e-3
    assert cache.value_fingerprint(b) != cache.value_fingerprint(a)
    assert cache.value_fingerprint(a.astype(np.float64)) != cache.value_fingerprint(a)
    assert cache.fingerprint(file="1-2", params={"k": 3}) != cache.fingerprint(file="1-2", params={"k": 4})
    assert cache.describe_change({"file": "1", "params": "p"}, {"file": "2", "params": "p"}) == "file changed"
    assert cache.describe_change(None, {"file": "2"}).startswith("no record")


def test_remove_partial_files(tmp_path):
    (tmp_path / "sub").mkdir()
    part = [tmp_path / ".a.h5.x1.part", tmp_path / "sub" / ".b.npy.y2.part", tmp_path / ".c.csv.0a1b.staged"]
    keep = [tmp_path / "a.h5", tmp_path / "sub" / "notes.part.txt", tmp_path / "sub" / "download.h5.part"]
    for p in part + keep:
        p.write_text("x")
    removed = cache.remove_partial_files([tmp_path, tmp_path / "absent"])
    assert sorted(removed) == sorted(part) and all(p.exists() for p in keep)


def test_run_lock_refuses_a_live_holder_and_releases(tmp_path):
    root = tmp_path / "results"
    # a lock recorded for a live process other than this one (our parent) is refused
    (root).mkdir()
    (root / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": "", "since": "t0", "what": "i2o run"}))
    assert not is_stale(read_lock(root))
    with pytest.raises(LockHeld, match=rf"{root} is in use by process {os.getppid()} .*since t0"):
        with run_lock(root, wait_s=0.2, poll_s=0.05):
            pass
    (root / LOCK_NAME).unlink()
    with run_lock(root, what="test") as path:
        held = read_lock(root)
        assert held["pid"] == os.getpid() and held["what"] == "test"
        with run_lock(root):  # re-entrant in one process
            assert path.exists()
        assert path.exists()
    assert not path.exists()


def test_run_lock_released_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with run_lock(tmp_path):
            raise RuntimeError("boom")
    assert not (tmp_path / LOCK_NAME).exists()


def test_unreadable_lock_is_stale(tmp_path):
    (tmp_path / LOCK_NAME).write_text("{half")
    assert not is_stale(read_lock(tmp_path))  # may be a lock being written this instant
    old = time.time() - 60
    os.utime(tmp_path / LOCK_NAME, (old, old))
    assert is_stale(read_lock(tmp_path))
    with run_lock(tmp_path):
        assert read_lock(tmp_path)["pid"] == os.getpid()
