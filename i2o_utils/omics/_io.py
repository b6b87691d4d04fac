"""Large writes past the page cache (``O_DIRECT``), falling back to normal writes where refused.

Writing gigabytes through the page cache costs a kernel copy per byte and fills memory with pages
nobody reads again; ``O_DIRECT`` hands the data to the device. It needs offsets, lengths and
memory addresses aligned to the device's block size (``ALIGN`` covers every common one), so data
go through aligned bounce buffers and each unaligned tail is written normally. File systems
without ``O_DIRECT`` (tmpfs, some network mounts) refuse the flag or the first write; the data are
then written normally.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ALIGN = 4096
DIRECT_MIN_BYTES = 1 << 20
"""Extents smaller than this are written normally (O_DIRECT gains nothing there)."""
_BOUNCE = 16 << 20


def aligned_empty(n: int) -> np.ndarray:
    """An uninitialised uint8 array of ``n`` bytes whose address is a multiple of ``ALIGN``."""
    raw = np.empty(n + ALIGN, np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off:off + n]


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def write_arrays_at(path: str | os.PathLike, extents: list[tuple[int, np.ndarray]], direct: bool = True,
                    bounce_bytes: int = _BOUNCE) -> bool:
    """Write the bytes of each C-contiguous array at its offset of the existing file ``path``.

    Extents whose offset is a multiple of ``ALIGN`` and that hold at least ``DIRECT_MIN_BYTES``
    are written with ``O_DIRECT`` (when ``direct`` and the file system accepts it), their last
    partial block normally. Returns whether ``O_DIRECT`` was used.
    """
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    dfd = -1
    try:
        if direct and hasattr(os, "O_DIRECT") and any(o % ALIGN == 0 and a.nbytes >= DIRECT_MIN_BYTES
                                                      for o, a in extents):
            try:
                dfd = os.open(path, os.O_WRONLY | os.O_DIRECT | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                dfd = -1
        bounce = aligned_empty(min(bounce_bytes, max((a.nbytes for _, a in extents), default=0))) \
            if dfd >= 0 else None
        used = False
        for offset, arr in extents:
            data = memoryview(np.ascontiguousarray(arr)).cast("B")
            body = len(data) - len(data) % ALIGN
            pos = 0
            if dfd >= 0 and offset % ALIGN == 0 and len(data) >= DIRECT_MIN_BYTES:
                step = len(bounce) - len(bounce) % ALIGN
                while pos < body:
                    n = min(step, body - pos)
                    bounce[:n] = np.frombuffer(data[pos:pos + n], np.uint8)
                    try:
                        _pwrite_all(dfd, memoryview(bounce)[:n], offset + pos)
                    except OSError:  # the device refused this transfer: the rest goes normally
                        os.close(dfd)
                        dfd = -1
                        break
                    pos += n
                    used = True
            _pwrite_all(fd, data[pos:], offset + pos)
        return used
    finally:
        if dfd >= 0:
            os.close(dfd)
        os.close(fd)
