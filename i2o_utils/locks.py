"""A lock file per data or results root, so that two runs never write one root at once.

:func:`run_lock` creates ``<root>/.i2o.lock`` exclusively and writes the holder's process id,
host and start time into it; it is removed when the block ends. A second run finds the file and
either waits (``wait_s``) or stops with :class:`LockHeld`, naming the root, the holder's process
and when it started. A lock whose process no longer exists on this host is stale: it is taken
over, with a message. Locks are re-entrant within one process (the runner holds the roots while
the notebooks it starts call the library).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

LOCK_NAME = ".i2o.lock"
_HELD: dict[Path, int] = {}


class LockHeld(RuntimeError):
    """Another live process holds the lock of a root."""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def read_lock(root: str | os.PathLike) -> dict | None:
    """The holder recorded in a root's lock file (``pid``, ``host``, ``since``, ``what``), or ``None``."""
    path = Path(root) / LOCK_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            age = 0.0
        return {"pid": -1, "host": "", "since": "?", "what": "unreadable lock file", "age_s": age}


def is_stale(holder: dict | None) -> bool:
    """A lock of this host whose process is gone (or an unreadable one)."""
    if holder is None:
        return True
    if holder.get("pid") == -1:  # unreadable: stale unless it is being written right now
        return holder.get("age_s", 0.0) > 5.0
    if holder.get("host") not in ("", socket.gethostname()):
        return False  # another machine's process: cannot check, assume alive
    return not _alive(int(holder.get("pid", -1)))


def _try_create(path: Path, what: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "what": what}, f)
    return True


@contextlib.contextmanager
def run_lock(root: str | os.PathLike, what: str = "i2o run", wait_s: float = 0.0,
             poll_s: float = 0.5) -> Iterator[Path]:
    """Hold ``<root>/.i2o.lock`` for the block.

    Parameters
    ----------
    root
        The data or results root (created if absent).
    what
        What holds the lock (written in the file and shown to a second run).
    wait_s
        How long to wait for a live holder before giving up (0: refuse at once).

    Raises
    ------
    LockHeld
        When another live process still holds the lock after ``wait_s``.
    """
    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    if root in _HELD:  # re-entrant within this process
        _HELD[root] += 1
        try:
            yield path
        finally:
            _HELD[root] -= 1
        return
    deadline = time.monotonic() + wait_s
    while not _try_create(path, what):
        holder = read_lock(root)
        if holder is None:  # released meanwhile
            continue
        if is_stale(holder):
            log.warning("%s: removing a stale lock of process %s (started %s), which no longer runs",
                        path, (holder or {}).get("pid"), (holder or {}).get("since"))
            path.unlink(missing_ok=True)
            continue
        if time.monotonic() >= deadline:
            raise LockHeld(f"{root} is in use by process {holder.get('pid')} on {holder.get('host') or 'this host'} "
                           f"({holder.get('what')}, since {holder.get('since')}); wait for it to finish, or "
                           f"remove {path} if that process is gone")
        time.sleep(poll_s)
    _HELD[root] = 1
    try:
        yield path
    finally:
        _HELD.pop(root, None)
        holder = read_lock(root)
        if holder is not None and holder.get("pid") == os.getpid():
            path.unlink(missing_ok=True)
