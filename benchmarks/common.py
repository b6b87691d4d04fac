"""Shared helpers for the benchmarks: hardware description, timing, peak memory."""

from __future__ import annotations

import os
import platform
import resource
import time
from contextlib import contextmanager


def hardware_summary() -> str:
    """One line naming the machine: CPU model, cores, memory, and the GPU if torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        mem = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"GPU {torch.cuda.get_device_name(0)}"
        torch_threads = f", torch threads {torch.get_num_threads()}"
    except ImportError:
        torch_threads = ""
    return f"hardware: {cpu}, {os.cpu_count()} cores{mem}{torch_threads}, {gpu}"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timed(label: str, results: dict | None = None):
    """Print (and store) the wall time of a block."""
    t0 = time.perf_counter()
    yield
    dt = time.perf_counter() - t0
    if results is not None:
        results[label] = dt
    print(f"{label}: {dt:.3f} s")
