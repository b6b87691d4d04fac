"""Backbone pre-training with the multiple-instance triplet loss (paper: "Backbone Pre-training").

:func:`pretrain` trains :class:`~i2o_utils.model.backbone.MResNet18` on batches of K wells from
G (perturbation, stimulus) groups, N random tiles per well, with semi-hard online triplet mining
and AdamW. Every epoch (``steps_per_epoch`` steps) it writes one checkpoint, ``backbone.pt``,
atomically: model, optimizer, scheduler, sampler and random-generator states, the step, the
loss history and the configuration. ``resume=True`` continues from it and, on CPU, reproduces
bit for bit the run that was never interrupted (every random draw of the data path comes from
the sampler's numpy generator; the CPU kernels are deterministic in fp32).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from i2o_utils.config import PretrainConfig
from i2o_utils.data.layout import atomic_path
from i2o_utils.model.backbone import MResNet18
from i2o_utils.model.data import Prefetcher, Runtime, prepare_tiles, resolve_runtime, to_device
from i2o_utils.model.losses import semi_hard_triplet_loss
from i2o_utils.model.samplers import TripletBatchSampler, group_labels

log = logging.getLogger(__name__)

__all__ = ["pretrain", "PretrainResult", "load_backbone", "build_backbone", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "backbone.pt"
_ARCH_FIELDS = ("backbone_width", "dense_dims")


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns."""

    model: MResNet18
    history: pd.DataFrame
    """One row per step: step, epoch, loss, lr, seconds (wall time since the run's start)."""
    checkpoint: Path
    runtime: Runtime
    tiles_per_second: float
    """Throughput of this call's steps (forward + backward + optimiser, data path included)."""


def build_backbone(cfg: PretrainConfig) -> MResNet18:
    return MResNet18(width=cfg.backbone_width, dense_dims=tuple(cfg.dense_dims))


def _lr_lambda(warmup: int):
    def f(step: int) -> float:
        return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    return f


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resumable(saved: dict, cfg: PretrainConfig, path: Path) -> None:
    now = dataclasses.asdict(cfg)
    differ = {k: (saved.get(k), now[k]) for k in now
              if k not in ("steps", "steps_per_epoch", "eval_tiles_per_well")
              and _norm(saved.get(k)) != _norm(now[k])}
    if differ:
        raise ValueError(f"{path}: cannot resume, the configuration differs: "
                         + ", ".join(f"{k} saved {a!r} now {b!r}" for k, (a, b) in differ.items()))


def _store_key(store) -> str | None:
    """Fingerprint of the store a checkpoint was trained on (a resume on another store is refused)."""
    if hasattr(store, "content_key"):
        return store.content_key()
    from i2o_utils import cache

    cols = [c for c in ("plate", "well_id", "target", "cell_state", "n_tiles") if c in store.wells]
    return cache.table_fingerprint(store.wells, cols) if cols else None


def _check_same_store(saved: str | None, now: str | None, path: Path) -> None:
    if saved is not None and now is not None and saved != now:
        raise ValueError(f"{path}: cannot resume, the tile store changed since this checkpoint was written "
                         "(wells, labels, tiles or preprocessing); pre-train again without resume")


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def pretrain(store, cfg: PretrainConfig, out_dir: str | Path, *, resume: bool = False,
             device: str | torch.device = "auto", compile: bool = False,
             prefetch: int | None = None, stop_after: int | None = None,
             threads: int | None = None, progress: bool = True) -> PretrainResult:
    """Pre-train the backbone on a tile store with the multiple-instance triplet loss.

    Parameters
    ----------
    store
        A tile store (``TileStore`` interface, see :mod:`i2o_utils.model.data`).
    cfg
        The profile's :class:`~i2o_utils.config.PretrainConfig` (K, G, N, lr, weight decay,
        margin, steps, width, ...).
    out_dir
        Where ``backbone.pt`` is written (every epoch and at the end).
    resume
        Continue from ``out_dir/backbone.pt`` if it exists (its configuration must match).
    device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    compile
        Wrap the model in ``torch.compile`` (GPU).
    prefetch
        Batches prepared ahead in a background thread; default 2 on CUDA, 0 on CPU.
    stop_after
        Stop (after writing the checkpoint) once this many steps are done, as an interruption
        would; the schedule still follows ``cfg.steps``.
    threads
        torch CPU threads (``None``: torch's default); see :func:`~i2o_utils.model.data.resolve_runtime`.
    progress
        Show a tqdm bar.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    rt = resolve_runtime(device, compile=compile, threads=threads)
    wells = store.wells
    labels = group_labels(wells)
    sampler = TripletBatchSampler(labels, cfg.wells_per_batch, cfg.groups_per_batch, seed=cfg.seed)

    torch.manual_seed(cfg.seed)
    model = build_backbone(cfg)
    model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps))
    step, history = 0, []
    skey = _store_key(store)
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=rt.device, weights_only=False)
        _check_resumable(ck["config"], cfg, ckpt_path)
        _check_same_store(ck.get("store_key"), skey, ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        sampler.load_state_dict(ck["sampler"])
        _set_rng_state(ck["rng"])
        step, history = int(ck["step"]), list(ck["history"])
        log.info("resumed from %s at step %d", ckpt_path, step)
    elif resume:
        log.info("no checkpoint at %s: starting from scratch", ckpt_path)
    embed = torch.compile(model.embed_tiles) if rt.compile else model.embed_tiles

    k, n = cfg.wells_per_batch, cfg.tiles_per_well

    def produce():
        well_idx, lab = sampler.next_batch()
        tiles = store.sample(well_idx, n, sampler.rng)
        codes = sampler.rng.integers(0, 8, size=k * n) if cfg.augment else None
        return (tiles, lab, codes), sampler.state_dict()

    end = cfg.steps if stop_after is None else min(cfg.steps, int(stop_after))
    stream = Prefetcher(produce, depth=(2 if rt.device.type == "cuda" else 0) if prefetch is None else prefetch)
    sampler_state = sampler.state_dict()
    t0, done = time.perf_counter(), 0
    elapsed0 = history[-1]["seconds"] if history else 0.0
    pending: list[torch.Tensor] = []
    bar = tqdm(total=end, initial=step, desc="pre-training", disable=not progress or step >= end)
    try:
        model.train()
        while step < end:
            (tiles, lab, codes), sampler_state = next(stream)
            raw = to_device(tiles, rt)
            cd = torch.from_numpy(codes).to(rt.device) if codes is not None else None
            x = prepare_tiles(raw, store.to_float, rt, codes=cd, input_size=cfg.input_size)
            with rt.autocast():
                emb = embed(x)
            emb = emb.float().view(k, n, -1).mean(dim=1)
            if cfg.normalize_embeddings:
                emb = F.normalize(emb, dim=1)
            loss = semi_hard_triplet_loss(emb, torch.from_numpy(lab).to(rt.device), margin=cfg.margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr = sched.get_last_lr()[0]
            sched.step()
            step += 1
            done += 1
            pending.append((step, lr, loss.detach()))
            bar.update(1)
            if step % cfg.steps_per_epoch == 0 or step == end:
                now = elapsed0 + time.perf_counter() - t0
                for st, lr_, ls in pending:
                    history.append({"step": st, "epoch": (st - 1) // cfg.steps_per_epoch,
                                    "loss": float(ls), "lr": float(lr_), "seconds": now})
                pending.clear()
                bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
                _save(ckpt_path, model, opt, sched, sampler_state, step, history, cfg, skey)
    finally:
        stream.close()
        bar.close()
    dt = time.perf_counter() - t0
    model.eval()
    if not ckpt_path.exists():  # nothing to do (already at cfg.steps) and no checkpoint yet
        _save(ckpt_path, model, opt, sched, sampler_state, step, history, cfg, skey)
    return PretrainResult(model=model, history=pd.DataFrame(history, columns=["step", "epoch", "loss", "lr", "seconds"]),
                          checkpoint=ckpt_path, runtime=rt,
                          tiles_per_second=done * k * n / dt if done and dt > 0 else math.nan)


def _save(path: Path, model, opt, sched, sampler_state, step, history, cfg, store_key: str | None = None) -> None:
    state = {
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "sampler": sampler_state,
        "rng": _rng_state(),
        "step": int(step),
        "history": list(history),
        "config": dataclasses.asdict(cfg),
        "arch": {"width": model.width, "dense_dims": list(model.dense_dims)},
        "store_key": store_key,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_backbone(path: str | Path, device: str | torch.device = "cpu") -> tuple[MResNet18, dict]:
    """The backbone of a checkpoint written by :func:`pretrain`, in eval mode, and its config.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (run notebook 30 first).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no backbone checkpoint (run the pre-training first)")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if "model" not in ck or "arch" not in ck:
        raise ValueError(f"{path}: not a backbone checkpoint (keys {sorted(ck)[:6]})")
    model = MResNet18(width=int(ck["arch"]["width"]), dense_dims=tuple(ck["arch"]["dense_dims"]))
    model.load_state_dict(ck["model"])
    model.to(device).eval()
    return model, ck.get("config", {})
