"""The paper profile on one GPU, in one run, with one results file (``benchmarks/gpu.sh``).

Stages, in order, each with a time budget so that the whole run stays under 8 minutes:

1. ``gpu_tests``: the tests marked ``gpu`` (``pytest -m gpu``); on a GPU none may skip.
2. ``screen``: a simulated screen of the paper's geometry (1080x1080 fields, 120 cells per
   field, 18 px nuclei, eight 384-well imaging plates) with fewer wells and fields, through the
   project's own image preprocessing (flat fields, nuclei, 128x128 tiles, the tile store).
3. ``pretrain``: pre-training throughput at the paper's K=240 wells x N=12 tiles from that tile
   store (:func:`i2o_utils.model.train.pretrain`: sampling, transfer of the stored integers,
   scaling and flips/rotations on the device, bf16 autocast, channels-last, forward, semi-hard
   triplet loss, backward, AdamW), then the same parts timed alone (host sampling; transfer and
   device preparation; forward + backward + AdamW on a resident batch) to say where time goes.
4. ``loss_run``: a short pre-training run at the paper's settings; its loss must fall.
5. ``inference``: every tile of the store embedded by the trained backbone
   (:func:`~i2o_utils.model.finetune.cache_tile_embeddings`; a warm-up pass, then timed passes
   over the store's wells read many times over, in tiles/s), the N=512 x 3 seeds well
   embeddings from that cache (:func:`~i2o_utils.model.predict.inference_embeddings`), and the
   forward pass with and without the transfer, on batches held in memory.
6. ``heads``: the 4 x 10 linear heads on cached embeddings at the paper's wells and gene counts
   (``benchmarks.bench_model.bench_heads``: synthetic embeddings and labels).

Each stage records its wall time and peak GPU memory. The results file (JSON) names the GPU,
torch, CUDA and cuDNN versions and judges the targets (pre-training >= 25,000 tiles/s,
inference >= 80,000 tiles/s, the 40 heads in <= 120 s) on the measured numbers. The run exits
with status 1 when a stage fails or the loss does not fall; a missed target is a result, not a
failure. ``--dry-run`` (``--device cpu --tiny``) runs the same stages at the smoke profile's sizes
on a CPU, with fixed step counts so that its outcome does not depend on the machine's load; the
test suite runs it. In a dry run targets are not judged.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import hardware_summary, peak_rss_mib

ROOT = Path(__file__).resolve().parent.parent

TARGETS = {
    "pretrain_tiles_per_s": (">=", 25_000.0, "tiles/s", "pre-training throughput, K=240 x N=12, bf16, from the tile store"),
    "inference_tiles_per_s": (">=", 80_000.0, "tiles/s", "inference: embedding every tile of the store"),
    "heads_seconds": ("<=", 120.0, "s", "fine-tuning all 4 x 10 heads from cached embeddings"),
}
"""Targets on one H100 or H200: (comparison, value, unit, what)."""

BUDGETS = {
    "paper": {"gpu_tests": 60, "screen": 150, "pretrain": 45, "loss_run": 45, "inference": 30, "heads": 125},
    "tiny": {"gpu_tests": 120, "screen": 60, "pretrain": 20, "loss_run": 30, "inference": 10, "heads": 60},
}
"""Seconds per stage, each cut to what is left of the whole run. The screen cannot stop part-way:
its default size (6 knock-outs and NT on eight plates, one field per well: 64 fields) is an
estimate from CPU timings (about 1 s to simulate a 1080x1080 field and 2 s to preprocess it on
one core, the preprocessing spread over up to 16 processes). The other stages size their step
counts from the measured throughput (paper) or use fixed counts (tiny), and stop at their budget."""
TOTAL_BUDGET_S = 450
"""The whole run when started directly; ``gpu.sh`` passes what its set-up left of its 460 s and
stops the process at that limit (results are written after every stage, so a stopped run leaves
what it measured)."""

TINY_STEPS = {"warmup": 2, "pretrain": 4, "loss_run": 40}


# --------------------------------------------------------------------------------------------
# profiles of the run
# --------------------------------------------------------------------------------------------
def run_profiles(tiny: bool, knockouts: int = 6, fields_per_well: int = 1, scheduler: str = "synchronous",
                 n_workers: int = 1):
    """(model profile, screen profile): the paper's numbers (or the smoke profile's, ``tiny``, with
    a learning rate that moves a tiny model in 40 steps) for the model, the heads and inference;
    a smaller screen of the same geometry for the images.

    The paper-mode screen keeps every imaging setting of the paper profile (field size, cells per
    field, nucleus and cell size, tile size, flat field) and shrinks only the number of wells
    (``knockouts`` incl. STAT1 and STAT6, one well each, plus two NT wells per plate, on the
    eight imaging plates) and the fields per well.
    """
    from i2o_utils.config import get_profile

    if tiny:
        model = get_profile("smoke").with_overrides(pretrain={"lr": 3e-3})
        screen = model.with_overrides(screen={"n_knockouts": 2})  # STAT1, STAT6 and NT: 6 groups
    else:
        model = get_profile("paper")
        screen = model.with_overrides(
            screen={"n_knockouts": int(knockouts), "wells_per_knockout": 1, "nt_wells_per_plate": 2,
                    "fields_per_well": int(fields_per_well)},
            imaging={"scheduler": scheduler, "n_workers": int(n_workers)})
    return model, screen


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_mib(dev: torch.device) -> float | None:
    if dev.type != "cuda":
        return None
    torch.cuda.synchronize(dev)
    return round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def loss_fell(losses, min_drop: float = 0.05) -> dict:
    """Did the loss fall? Mean of the last fifth of the steps against the first fifth.

    ``fell`` is true when the last fifth's mean is below ``(1 - min_drop)`` times the first's.
    """
    loss = np.asarray(losses, dtype=float)
    if len(loss) < 10 or not np.isfinite(loss).all():
        return {"fell": False, "first": None, "last": None, "relative_drop": None, "steps": len(loss),
                "reason": "fewer than 10 steps or a non-finite loss"}
    k = max(2, len(loss) // 5)
    first, last = float(loss[:k].mean()), float(loss[-k:].mean())
    drop = (first - last) / first if first > 0 else float("nan")
    return {"fell": bool(last < (1 - min_drop) * first), "first": first, "last": last,
            "relative_drop": _finite(drop), "steps": len(loss), "window": k, "min_drop": min_drop}


def judge_targets(measured: dict, judged: bool) -> list[dict]:
    """One row per target: the measured value and whether it meets the target (``None``: not
    judged, e.g. a CPU dry run, or not measured)."""
    rows = []
    for key, (op, value, unit, what) in TARGETS.items():
        m = _finite(measured.get(key))
        passed = None
        if judged and m is not None:
            passed = bool(m >= value) if op == ">=" else bool(m <= value)
        rows.append({"target": key, "what": what, "required": f"{op} {value:g} {unit}", "measured": m,
                     "unit": unit, "passed": passed})
    return rows


def environment(dev: torch.device) -> dict:
    """GPU, driver, torch, CUDA, cuDNN, Python and the repository's commit."""
    env = {"hardware": hardware_summary(), "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "numpy": np.__version__, "cpu_count": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
           "gpu": None, "driver": None, "commit": None, "packages": {}}
    import importlib.metadata as md

    for name in ("pandas", "scipy", "h5py", "pyarrow", "scikit-image", "anndata", "dask", "distributed"):
        try:
            env["packages"][name] = md.version(name)
        except md.PackageNotFoundError:
            env["packages"][name] = None
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        env["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                      "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count}
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            env["driver"] = r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        env["commit"] = r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return env


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------
def stage_gpu_tests(ctx) -> dict:
    """``pytest -m gpu`` over the test files that hold GPU tests; on a GPU none may skip."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "pytest.mark.gpu" in p.read_text())
    if not files:
        raise RuntimeError("no test file under tests/ holds a test marked gpu")
    xml = ctx.work / "gpu_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *files]
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=ctx.budget("gpu_tests"))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the GPU tests did not finish within {ctx.budget('gpu_tests'):.0f} s") from None
    tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
    if not xml.exists():
        raise RuntimeError(f"pytest wrote no report (exit {r.returncode}):\n{tail}")
    cases = []
    for tc in ET.parse(xml).getroot().iter("testcase"):
        outcome = "passed"
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                if outcome == "skipped":
                    outcome += f": {child.get('message', '')}"
        cases.append({"test": f"{tc.get('classname')}::{tc.get('name')}", "outcome": outcome})
    n = {k: sum(c["outcome"].startswith(k) for c in cases) for k in ("passed", "failed", "error", "skipped")}
    ok = r.returncode == 0 and n["failed"] == 0 and n["error"] == 0 and len(cases) > 0
    if ctx.dev.type == "cuda" and n["skipped"]:
        ok = False
    out = {"command": "pytest -m gpu " + " ".join(files), "exit_code": r.returncode, "tests": cases, **n}
    if not ok:
        raise StageFailure(f"GPU tests: {n} (exit {r.returncode})\n{tail}", out)
    return out


def stage_screen(ctx) -> dict:
    """Simulate the screen and run the image preprocessing into a tile store."""
    from i2o_utils.data.simulate import simulate_screen
    from i2o_utils.imaging.pipeline import preprocess_images
    from i2o_utils.imaging.tilestore import TileStore

    sp = ctx.screen_profile
    t = time.perf_counter()
    summary = simulate_screen(ctx.work / "data", profile=sp, seed=0, progress=False)
    t_sim = time.perf_counter() - t
    t = time.perf_counter()
    res = preprocess_images(sp, ctx.work / "data", ctx.work / "preprocess", progress=False)
    t_pre = time.perf_counter() - t
    ctx.store = TileStore(res.store_dir)
    n = ctx.store.wells["n_tiles"].to_numpy()
    sc = sp.screen
    return {"imaging_plates": sc.n_imaging_plates, "wells": int(len(n)), "fields_per_well": sc.fields_per_well,
            "field_size": sc.field_size, "cells_per_field": sc.cells_per_field, "tile_size": sp.imaging.tile_size,
            "tile_dtype": str(ctx.store.dtype), "tiles": int(n.sum()),
            "store_mib": round(int(n.sum()) * 3 * ctx.store.tile_size ** 2 * np.dtype(ctx.store.dtype).itemsize / 2**20, 1),
            "tiles_per_well": {"min": int(n.min()), "median": float(np.median(n)), "max": int(n.max())},
            "groups": int(ctx.store.wells.groupby(["target", "cell_state"]).ngroups),
            "scheduler": sp.imaging.scheduler, "n_workers": sp.imaging.n_workers,
            "simulate_s": round(t_sim, 2), "preprocess_s": round(t_pre, 2),
            "preprocess_parts_s": {k: round(v, 2) for k, v in res.seconds.items()},
            "bytes_on_disk_mib": round(summary.bytes_on_disk / 2**20, 1)}


def _timed_loop(fn, dev, seconds: float, min_reps: int, max_reps: int = 10**6) -> tuple[int, float]:
    """Call ``fn`` until ``seconds`` have passed (at least ``min_reps`` times); (calls, seconds)."""
    _sync(dev)
    t0 = time.perf_counter()
    reps = 0
    while reps < min_reps or (time.perf_counter() - t0 < seconds and reps < max_reps):
        fn()
        reps += 1
    _sync(dev)
    return reps, time.perf_counter() - t0


def pretrain_parts(store, cfg, rt, seconds: float, min_reps: int = 2) -> dict:
    """Where a pre-training step's time goes: each part of :func:`pretrain`'s step timed alone.

    * host: the sampler's batch, the store's reads (``store.sample``) and the augmentation codes
      (in ``pretrain`` this runs in a background thread, ahead of the device);
    * transfer: pinning, host-to-device copy and :func:`prepare_tiles` (scaling, flips and
      rotations, channels-last) on the device;
    * compute: bf16 forward, well means, semi-hard triplet loss, backward and AdamW on a batch
      already on the device.
    """
    import torch.nn.functional as F

    from i2o_utils.model.data import prepare_tiles, to_device
    from i2o_utils.model.losses import semi_hard_triplet_loss
    from i2o_utils.model.samplers import TripletBatchSampler, group_labels
    from i2o_utils.model.train import build_backbone

    dev = rt.device
    k, n = cfg.wells_per_batch, cfg.tiles_per_well
    sampler = TripletBatchSampler(group_labels(store.wells), k, cfg.groups_per_batch, seed=cfg.seed)

    def host():
        idx, lab = sampler.next_batch()
        tiles = store.sample(idx, n, sampler.rng)
        codes = sampler.rng.integers(0, 8, size=k * n) if cfg.augment else None
        return tiles, lab, codes

    reps, dt = _timed_loop(host, torch.device("cpu"), seconds, min_reps)
    out = {"host_tiles_per_s": reps * k * n / dt}
    tiles, lab, codes = host()

    def transfer():
        raw = to_device(tiles, rt)
        cd = torch.from_numpy(codes).to(dev) if codes is not None else None
        return prepare_tiles(raw, store.to_float, rt, codes=cd, input_size=cfg.input_size)

    reps, dt = _timed_loop(transfer, dev, seconds, min_reps)
    out["transfer_prepare_tiles_per_s"] = reps * k * n / dt
    x = transfer()
    labels = torch.from_numpy(lab).to(dev)
    torch.manual_seed(cfg.seed)
    model = build_backbone(cfg).to(dev)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step():
        with rt.autocast():
            emb = model.embed_tiles(x)
        emb = emb.float().view(k, n, -1).mean(dim=1)
        if cfg.normalize_embeddings:
            emb = F.normalize(emb, dim=1)
        loss = semi_hard_triplet_loss(emb, labels, margin=cfg.margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # first step: kernel selection, optimizer state
    reps, dt = _timed_loop(step, dev, seconds, min_reps)
    out["compute_tiles_per_s"] = reps * k * n / dt
    # host runs ahead in a thread; transfer and compute share the main thread
    serial = 1.0 / (1.0 / out["transfer_prepare_tiles_per_s"] + 1.0 / out["compute_tiles_per_s"])
    out["expected_step_tiles_per_s"] = min(out["host_tiles_per_s"], serial)
    parts = {"host sampling and store reads": out["host_tiles_per_s"],
             "transfer and device preparation": out["transfer_prepare_tiles_per_s"],
             "forward + backward + AdamW": out["compute_tiles_per_s"]}
    out["slowest_part"] = min(parts, key=parts.get)
    return {k_: (round(v, 1) if isinstance(v, float) else v) for k_, v in out.items()}


def stage_pretrain(ctx) -> dict:
    """Pre-training throughput at the profile's K x N from the tile store, then its parts."""
    from i2o_utils.model.train import pretrain

    cfg = ctx.profile.pretrain
    k, n = cfg.wells_per_batch, cfg.tiles_per_well
    budget = ctx.budget("pretrain")
    t0 = time.perf_counter()
    warm_steps = TINY_STEPS["warmup"] if ctx.tiny else 3
    warm = dataclasses.replace(cfg, steps=warm_steps, steps_per_epoch=warm_steps)
    w = pretrain(ctx.store, warm, ctx.work / "pretrain_warmup", **ctx.train_kw)
    t_warm = time.perf_counter() - t0
    if ctx.tiny:
        steps = TINY_STEPS["pretrain"]
    else:  # about half of what is left of the budget; the parts take the rest
        rate = w.tiles_per_second / (k * n)
        steps = int(np.clip(0.5 * max(budget - t_warm, 0) * rate, 3, 5000))
    _reset_peak(ctx.dev)
    t = time.perf_counter()
    res = pretrain(ctx.store, dataclasses.replace(cfg, steps=steps, steps_per_epoch=steps),
                   ctx.work / "pretrain_timed", **ctx.train_kw)
    t_run = time.perf_counter() - t
    peak = _peak_mib(ctx.dev)
    ctx.pretrain_rate = res.tiles_per_second
    left = budget - (time.perf_counter() - t0)
    part_s = 0.2 if ctx.tiny else max(1.0, min(5.0, left / 4))
    _reset_peak(ctx.dev)
    parts = pretrain_parts(ctx.store, cfg, res.runtime, part_s)
    return {"K": k, "groups": cfg.groups_per_batch, "N": n, "tiles_per_step": k * n, "width": cfg.backbone_width,
            "tile": ctx.store.tile_size, "input_size": cfg.input_size or ctx.store.tile_size,
            "bf16": res.runtime.bf16, "channels_last": res.runtime.channels_last, "compile": res.runtime.compile,
            "warmup_steps": warm_steps, "warmup_s": round(t_warm, 2), "steps": steps, "run_s": round(t_run, 2),
            "tiles_per_s": round(res.tiles_per_second, 1),
            "note": ("whole steps of pretrain() from the tile store, after a warm-up run; includes one checkpoint "
                     "write; the store is small enough to stay in the page cache, which a paper-size store "
                     "(millions of tiles, over 100 GB in uint8) would not"),
            "peak_gpu_mib": peak, "parts": parts, "parts_peak_gpu_mib": _peak_mib(ctx.dev)}


def stage_loss_run(ctx) -> dict:
    """A short pre-training run at the profile's settings; the loss must fall."""
    from i2o_utils.model.train import pretrain

    cfg = ctx.profile.pretrain
    if ctx.tiny:
        steps = TINY_STEPS["loss_run"]
    else:
        rate = (ctx.pretrain_rate or 1000.0) / (cfg.wells_per_batch * cfg.tiles_per_well)
        steps = int(np.clip(0.8 * ctx.budget("loss_run") * rate, 20, 5000))
    _reset_peak(ctx.dev)
    t = time.perf_counter()
    res = pretrain(ctx.store, dataclasses.replace(cfg, steps=steps, steps_per_epoch=steps),
                   ctx.work / "loss_run", **ctx.train_kw)
    dt = time.perf_counter() - t
    ctx.model = res.model
    loss = res.history["loss"].to_numpy()
    verdict = loss_fell(loss)
    every = max(1, len(loss) // 50)
    out = {"steps": steps, "lr": cfg.lr, "seconds": round(dt, 2), "tiles_per_s": round(res.tiles_per_second, 1),
           "peak_gpu_mib": _peak_mib(ctx.dev), **verdict,
           "loss_every": every, "loss": [round(float(v), 5) for v in loss[::every]]}
    if not verdict["fell"]:
        raise StageFailure(f"the loss did not fall: first {verdict['first']}, last {verdict['last']} "
                           f"(needed a drop of {verdict.get('min_drop', 0.05):.0%})", out)
    return out


class RepeatedStore:
    """A tile store's wells read ``times`` times over, as one store ``times`` larger.

    Every read is a real read of the underlying store; only the wells table repeats. With it, one
    pass of :func:`cache_tile_embeddings` is long enough to measure its steady state: on a small
    store, the first chunk's read (before the device has anything to do) would weigh on the rate.
    """

    def __init__(self, store, times: int):
        import pandas as pd

        self._store = store
        self._n = len(store.wells)
        self.times = int(times)
        self.wells = pd.concat([store.wells] * self.times, ignore_index=True)
        self.tile_size, self.dtype = store.tile_size, store.dtype

    def read_well(self, i: int):
        return self._store.read_well(int(i) % self._n)

    def sample(self, well_idx, n: int, rng):
        return self._store.sample(np.asarray(well_idx) % self._n, n, rng)

    def to_float(self, x):
        return self._store.to_float(x)


def stage_inference(ctx) -> dict:
    """Embed every tile of the store (warm-up), then the store read over and over (timed, until
    half the budget), the N x seeds well embeddings, and the forward pass alone in memory."""
    from benchmarks.bench_model import bench_inference
    from i2o_utils.model.data import resolve_runtime
    from i2o_utils.model.finetune import cache_tile_embeddings
    from i2o_utils.model.predict import inference_embeddings

    prof = ctx.profile
    rt = resolve_runtime(ctx.dev, compile=False)
    model = ctx.model
    if model is None:
        from i2o_utils.model.train import build_backbone
        model = build_backbone(prof.pretrain)
    model = model.to(rt.device).eval()
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    kw = {"runtime": rt, "batch_tiles": prof.finetune.embed_batch_tiles, "input_size": prof.pretrain.input_size,
          "progress": False}
    budget = ctx.budget("inference")
    _reset_peak(ctx.dev)
    t = time.perf_counter()
    cache = cache_tile_embeddings(model, ctx.store, **kw)  # first pass: warm-up
    _sync(ctx.dev)
    t_first = time.perf_counter() - t
    n_tiles = int(cache.offsets[-1])
    # at least 250,000 tiles (about 3 s at the target) per timed pass; twice the store in a dry run
    times = 2 if ctx.tiny else max(1, math.ceil(250_000 / max(n_tiles, 1)))
    big = RepeatedStore(ctx.store, times)
    reps, dt = _timed_loop(lambda: cache_tile_embeddings(model, big, **kw), ctx.dev,
                           0.0 if ctx.tiny else 0.5 * budget, 1, 1 if ctx.tiny else 10**6)
    peak_cache = _peak_mib(ctx.dev)
    inf = prof.inference
    _reset_peak(ctx.dev)
    t = time.perf_counter()
    emb = inference_embeddings(cache, inf.tiles_per_well, inf.seeds)
    _sync(ctx.dev)
    t_inf = time.perf_counter() - t
    if not np.isfinite(emb).all():
        raise RuntimeError("inference gave non-finite well embeddings")
    peak_inf = _peak_mib(ctx.dev)
    _reset_peak(ctx.dev)
    fwd = bench_inference(prof, ctx.dev.type == "cuda", device=str(ctx.dev), batch=prof.finetune.embed_batch_tiles,
                          reps=2 if ctx.tiny else 20)
    peak_fwd = _peak_mib(ctx.dev)
    compute = forward_only(model, ctx.store, rt, prof.finetune.embed_batch_tiles, prof.pretrain.input_size,
                           0.0 if ctx.tiny else min(5.0, 0.1 * budget))
    return {"store_tiles": n_tiles, "batch_tiles": prof.finetune.embed_batch_tiles, "first_pass_s": round(t_first, 3),
            "store_read_times_per_pass": times, "tiles_per_pass": times * n_tiles, "passes": reps,
            "seconds": round(dt, 3), "tiles_per_s": round(reps * times * n_tiles / dt, 1),
            "note": ("cache_tile_embeddings (reads from the tile store, transfer, scaling, bf16 forward) over the "
                     "store's wells read store_read_times_per_pass times in one pass, after a warm-up pass"),
            "peak_gpu_mib": peak_cache,
            "well_embeddings": {"wells": int(emb.shape[0]), "N": inf.tiles_per_well, "seeds": list(inf.seeds),
                                "seconds": round(t_inf, 3), "peak_gpu_mib": peak_inf},
            "transfer_and_forward": {"batch": fwd["batch"], "tiles_per_s": round(fwd["tiles_per_s"], 1),
                                     "note": "in-memory uint16 batch: pinning, transfer, scaling and forward, no store reads",
                                     "peak_gpu_mib": peak_fwd},
            "forward_only": compute}


@torch.inference_mode()
def forward_only(model, store, rt, batch: int, input_size: int | None, seconds: float) -> dict:
    """The bf16 forward pass alone on a batch of the store's tiles already prepared on the device."""
    from i2o_utils.model.data import prepare_tiles, to_device

    n = store.wells["n_tiles"].to_numpy()
    tiles = np.concatenate([store.read_well(i) for i in range(len(n))])
    tiles = tiles[np.resize(np.arange(len(tiles)), batch)]  # the store's tiles, repeated to one batch
    x = prepare_tiles(to_device(tiles, rt), store.to_float, rt, input_size=input_size)

    def once():
        with rt.autocast():
            model.embed_tiles(x)

    once()
    reps, dt = _timed_loop(once, rt.device, seconds, 2)
    return {"batch": batch, "tiles_per_s": round(reps * batch / dt, 1),
            "note": "bf16 forward on a batch already on the device (no reads, no transfer)"}


def stage_heads(ctx) -> dict:
    """All 4 x n_splits heads at the profile's wells and gene counts, stopped at the budget."""
    from benchmarks.bench_model import bench_heads

    _reset_peak(ctx.dev)
    deadline = time.perf_counter() + ctx.budget("heads")
    r = bench_heads(ctx.profile, device=str(ctx.dev), deadline=deadline)
    r["peak_gpu_mib"] = _peak_mib(ctx.dev)
    r["seconds"] = round(r["seconds"], 2)
    r["genes"] = list(r["genes"])
    r["note"] = ("synthetic per-tile embeddings and labels at the profile's wells and gene counts; "
                 "max_epochs and early stopping as the profile says")
    if not r["complete"]:
        r["note"] += f"; stopped at the stage budget after {r['heads']} of {r['heads_planned']} heads"
    return r


STAGES = {"gpu_tests": stage_gpu_tests, "screen": stage_screen, "pretrain": stage_pretrain,
          "loss_run": stage_loss_run, "inference": stage_inference, "heads": stage_heads}
NEEDS = {"pretrain": ("screen",), "loss_run": ("screen",), "inference": ("screen",)}


class StageFailure(RuntimeError):
    """A stage that ran but whose check failed; ``record`` is kept in the results."""

    def __init__(self, message: str, record: dict):
        super().__init__(message)
        self.record = record


class TimeLimit(BaseException):
    """Raised in the main thread when the process is told to stop (SIGTERM from ``gpu.sh``'s limit)."""


def _on_sigterm(signum, frame):
    raise TimeLimit()


class Context:
    def __init__(self, args, dev: torch.device, work: Path):
        self.tiny = bool(args.tiny)
        self.dev = dev
        self.work = work
        self.budgets = dict(BUDGETS["tiny" if self.tiny else "paper"])
        self.t_start = time.perf_counter()
        self.total = float(args.total_budget)
        self.store = None
        self.model = None
        self.pretrain_rate = None
        self.train_kw = {"device": str(dev), "compile": bool(args.compile), "progress": False,
                         "threads": args.threads}

    def budget(self, stage: str) -> float:
        """The stage's budget, cut to what is left of the whole run's (less 10 s to write up)."""
        left = self.total - (time.perf_counter() - self.t_start) - 10
        return max(1.0, min(float(self.budgets[stage]), left))


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower() or "unknown"


def write_results(path: Path, results: dict) -> None:
    """Write the results file atomically (a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.paper_gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--tiny", action="store_true", help="the smoke profile's sizes, fixed step counts")
    p.add_argument("--dry-run", action="store_true", help="--device cpu --tiny: the test suite's run")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder of the results file")
    p.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--stages", nargs="*", default=list(STAGES), choices=list(STAGES))
    p.add_argument("--knockouts", type=int, default=6, help="knock-outs of the paper-geometry screen (incl. STAT1, STAT6)")
    p.add_argument("--fields-per-well", type=int, default=1)
    p.add_argument("--workers", type=int, default=None, help="image-preprocessing processes (default: the cores, max 16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone in pre-training (adds compile time)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 for --tiny, torch's otherwise)")
    p.add_argument("--total-budget", type=float, default=TOTAL_BUDGET_S)
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.tiny = "cpu", True
    if args.threads is None and args.tiny:
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("torch sees no CUDA device; for a CPU dry run use --dry-run", file=sys.stderr)
        return 2
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", 0)

    try:
        import distributed  # noqa: F401
        have_dask = True
    except ImportError:
        have_dask = False
    workers = args.workers or min(16, os.cpu_count() or 1)
    scheduler = "local" if (have_dask and not args.tiny and workers > 1) else "synchronous"
    profile, screen_profile = run_profiles(args.tiny, args.knockouts, args.fields_per_well, scheduler,
                                           workers if scheduler == "local" else 1)
    work = args.work or Path(tempfile.mkdtemp(prefix="i2o-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, dev, work)
    ctx.profile, ctx.screen_profile = profile, screen_profile

    now = _dt.datetime.now(_dt.timezone.utc)
    env = environment(dev)
    name = (env["gpu"] or {}).get("name") or "cpu"
    mode = "dry-run" if args.tiny else "paper"
    out = args.out / f"paper_gpu_{mode}_{now:%Y%m%d-%H%M}_{_slug(name)}.json"
    pc, ft, inf, ev = profile.pretrain, profile.finetune, profile.inference, profile.evaluation
    results = {
        "what": "the paper profile on one GPU (benchmarks/gpu.sh)", "mode": mode, "device": str(dev),
        "date_utc": now.isoformat(timespec="seconds"), "environment": env,
        "settings": {"model_profile": profile.name,
                     "pretrain": {"K": pc.wells_per_batch, "groups": pc.groups_per_batch, "N": pc.tiles_per_well,
                                  "width": pc.backbone_width, "dense": list(pc.dense_dims), "lr": pc.lr,
                                  "tile": profile.imaging.tile_size, "input_size": pc.input_size,
                                  "compile": bool(args.compile)},
                     "finetune": {"K": ft.wells_per_batch, "N": ft.tiles_per_well, "max_epochs": ft.max_epochs,
                                  "patience": ft.patience},
                     "inference": {"N": inf.tiles_per_well, "seeds": list(inf.seeds)}, "splits": ev.n_splits,
                     "screen": {"knockouts": screen_profile.screen.n_knockouts,
                                "wells_per_plate": screen_profile.screen.wells_per_plate,
                                "imaging_plates": screen_profile.screen.n_imaging_plates,
                                "fields_per_well": screen_profile.screen.fields_per_well,
                                "field_size": screen_profile.screen.field_size,
                                "scheduler": scheduler}},
        "budgets_s": {**ctx.budgets, "total": ctx.total}, "stages": {}, "targets": [], "complete": False,
    }
    print(f"{env['hardware']}\ntorch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}; mode {mode}; "
          f"results -> {out}", flush=True)
    write_results(out, results)
    signal.signal(signal.SIGTERM, _on_sigterm)
    failed = []
    stopped = False
    for stage in args.stages:
        if stopped:
            results["stages"][stage] = {"ok": False, "error": "not run: the run was stopped at its time limit"}
            failed.append(stage)
            continue
        missing = [s for s in NEEDS.get(stage, ()) if results["stages"].get(s, {}).get("ok") is not True]
        if missing:
            results["stages"][stage] = {"ok": False, "error": f"not run: needs stage(s) {missing}"}
            failed.append(stage)
            print(f"[{stage}] not run: needs {missing}", flush=True)
            write_results(out, results)
            continue
        print(f"[{stage}] budget {ctx.budget(stage):.0f} s ...", flush=True)
        t = time.perf_counter()
        try:
            rec = {"ok": True, **STAGES[stage](ctx)}
        except StageFailure as e:
            rec = {"ok": False, "error": str(e), **e.record}
        except Exception as e:  # noqa: BLE001 - recorded, the other stages still run
            rec = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        except TimeLimit:
            rec = {"ok": False, "error": "stopped at the run's time limit (SIGTERM)"}
            stopped = True
        rec["wall_s"] = round(time.perf_counter() - t, 2)
        rec["over_budget"] = rec["wall_s"] > ctx.budgets[stage]
        results["stages"][stage] = rec
        if not rec["ok"]:
            failed.append(stage)
        print(f"[{stage}] {'ok' if rec['ok'] else 'FAILED: ' + rec['error'].splitlines()[0]} "
              f"({rec['wall_s']:.1f} s)", flush=True)
        write_results(out, results)

    st = results["stages"]
    measured = {"pretrain_tiles_per_s": st.get("pretrain", {}).get("tiles_per_s"),
                "inference_tiles_per_s": st.get("inference", {}).get("tiles_per_s"),
                "heads_seconds": None}
    heads = st.get("heads", {})
    heads_stopped = heads.get("ok") and not heads.get("complete")
    if heads.get("ok") and (heads.get("complete") or heads["seconds"] > TARGETS["heads_seconds"][1]):
        measured["heads_seconds"] = heads["seconds"]  # stopped past the target: a lower bound, and a miss
    results["targets"] = judge_targets(measured, judged=(not args.tiny and dev.type == "cuda"))
    if heads_stopped:
        results["targets"][-1]["note"] = (f"stopped at the stage budget after {heads['heads']} of "
                                          f"{heads['heads_planned']} heads: the time is a lower bound")
    results["loss_fell"] = st.get("loss_run", {}).get("fell")
    results["wall_s"] = round(time.perf_counter() - ctx.t_start, 1)
    results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    results["complete"] = set(args.stages) == set(st) and not failed
    write_results(out, results)
    if os.environ.get("OUT") and Path(os.environ["OUT"]).resolve() != out.parent.resolve():
        shutil.copy2(out, Path(os.environ["OUT"]) / out.name)

    print("\nresults:", out)
    for row in results["targets"]:
        verdict = {True: "met", False: "MISSED",
                   None: "not judged" + (f" (a {mode} on {dev.type}, not the target's sizes)" if args.tiny or dev.type != "cuda" else "")}[row["passed"]]
        m = "not measured" if row["measured"] is None else f"{row['measured']:,.1f} {row['unit']}"
        print(f"  {row['what']}: {m} (target {row['required']}): {verdict}")
    if "pretrain" in st and "parts" in st["pretrain"]:
        print(f"  slowest part of a pre-training step: {st['pretrain']['parts']['slowest_part']}")
    print(f"  loss fell: {results['loss_fell']}; wall time {results['wall_s']:.0f} s")
    if not args.keep_work and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        print(f"FAILED stage(s): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
