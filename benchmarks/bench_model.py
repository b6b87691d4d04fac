"""Model throughput: pre-training tiles/s (forward + backward), inference tiles/s, 40 heads.

Run with ``python -m benchmarks model`` (or ``make bench``). For each of the quick and paper
profiles' backbones (width, dense layers, tile size):

* pre-training: whole steps of :func:`i2o_utils.model.train.pretrain` (sampling from a tile
  store, transfer of the stored uint16 tiles, scaling and augmentation on the device, forward,
  semi-hard triplet loss, backward, AdamW), in tiles per second after a warm-up;
* inference: eval-mode per-tile embedding of stored tiles (transfer and scaling included);
* fine-tuning: the 4 (omics, stimulus) x n_splits linear heads on cached embeddings at the
  profile's well and gene counts (synthetic embeddings and labels, the profile's epochs).

Pre-training reads from a real :class:`i2o_utils.imaging.tilestore.TileStore` written to a
temporary folder (uint8, memory-mapped plate files, the store's default) from synthetic tiles
of the profile's tile size. On a CPU the paper
profile's batch (K=240 x N=12 = 2,880 tiles) would take minutes per step, so there the batch is
cut to K=24 x N=2 and the fine-tuning benchmark runs at the quick scale only; on a GPU both use
the profile's numbers.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import hardware_summary
from i2o_utils.config import Profile, get_profile
from i2o_utils.model.data import resolve_runtime, prepare_tiles, to_device
from tests.support.tiles import synthetic_tiles
from i2o_utils.model.finetune import TileEmbeddings, train_head
from i2o_utils.model.train import build_backbone, pretrain


def _tile_text(size: int, input_size: int | None) -> str:
    s = f"{size}x{size} tiles"
    return s if input_size in (None, size) else s + f" resized to {input_size}x{input_size} on the device"


def disk_store(mem, root: str):
    """Write an in-memory tile store as a real on-disk TileStore (uint8) and open it."""
    import pandas as pd

    from i2o_utils.config import CHANNELS
    from i2o_utils.imaging.tilestore import TileStore, finalise_store, write_plate_tiles

    wells = mem.wells.copy()
    wells["start"] = 0
    files = {}
    order = []
    for plate, sub in wells.groupby("plate", sort=True):
        tiles = [(w, (mem.read_well(i) >> 8).astype(np.uint8) if mem.dtype == np.uint16 else mem.read_well(i))
                 for i, w in zip(sub.index, sub["well_id"])]
        placed = write_plate_tiles(f"{root}/plates/{plate}.h5", tiles, int(sub["n_tiles"].sum()), mem.tile_size)
        wells.loc[sub.index, "start"] = [st for _, st, _ in placed]
        files[plate] = f"plates/{plate}.h5"
        order += list(sub.index)
    wells = wells.loc[order].reset_index(drop=True)
    index = pd.DataFrame({c: pd.Series(dtype="int64") for c in ("fov", "row", "col", "r0", "c0", "i")})
    index.insert(0, "plate", pd.Series(dtype=str))
    index.insert(1, "well_id", pd.Series(dtype=str))
    finalise_store(root, wells, index, files, mem.tile_size, "uint8", [1.0, 1.0, 1.0], CHANNELS)
    return TileStore(root)


def bench_pretrain(profile_name: str, cuda: bool) -> dict:
    prof = get_profile(profile_name)
    cfg = prof.pretrain
    if not cuda and profile_name == "paper":
        cfg = dataclasses.replace(cfg, wells_per_batch=24, groups_per_batch=12, tiles_per_well=2)
    size = prof.imaging.tile_size
    mem = synthetic_tiles(n_targets=max(cfg.groups_per_batch, 8), wells_per_group=4, tiles_per_well=max(cfg.tiles_per_well, 16),
                          tile_size=size, dtype="uint8", seed=0)
    warm, steps = (3, 20) if cuda else (1, 3)
    with tempfile.TemporaryDirectory() as d:
        store = disk_store(mem, d + "/store")
        cfg = dataclasses.replace(cfg, steps=warm + steps, steps_per_epoch=warm + steps + 1)
        pretrain(store, dataclasses.replace(cfg, steps=warm), d, progress=False)
        # time the steps after the warm-up (the first steps build kernels / allocate)
        t0 = time.perf_counter()
        res = pretrain(store, cfg, d + "/run", progress=False)
        dt = time.perf_counter() - t0
    tiles = cfg.steps * cfg.wells_per_batch * cfg.tiles_per_well
    return {"profile": profile_name, "width": cfg.backbone_width, "tile": _tile_text(size, cfg.input_size),
            "K": cfg.wells_per_batch, "N": cfg.tiles_per_well, "steps": cfg.steps,
            "tiles_per_s": res.tiles_per_second, "tiles_per_s_incl_setup": tiles / dt}


def _profile(profile) -> Profile:
    return get_profile(profile) if isinstance(profile, str) else profile


@torch.inference_mode()
def bench_inference(profile: str | Profile, cuda: bool, device: str = "auto", batch: int | None = None,
                    reps: int | None = None) -> dict:
    """Per-tile embedding of an in-memory batch (transfer, scaling, forward): no store reads."""
    prof = _profile(profile)
    cfg = prof.pretrain
    rt = resolve_runtime(device)
    model = build_backbone(cfg).to(rt.device).eval()
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    size = prof.imaging.tile_size
    batch = batch or (4096 if cuda else 256)
    raw = np.random.default_rng(0).integers(0, 65535, size=(batch, 3, size, size), dtype=np.uint16)
    to_float = lambda x: x.to(torch.float32) / 65535.0  # noqa: E731
    reps = reps or (20 if cuda else 3)

    def once():
        x = prepare_tiles(to_device(raw, rt), to_float, rt, input_size=cfg.input_size)
        with rt.autocast():
            model.embed_tiles(x)

    once()
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        once()
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"profile": prof.name, "width": cfg.backbone_width, "tile": _tile_text(size, cfg.input_size), "batch": batch,
            "tiles_per_s": reps * batch / dt}


def bench_heads(profile: str | Profile, device: str = "auto", deadline: float | None = None) -> dict:
    """All 4 x n_splits heads at the profile's scale on synthetic cached embeddings.

    ``deadline`` (a ``time.perf_counter()`` value): start no head after it; the result then says
    how many of the heads were trained (``heads`` < ``heads_planned``, ``complete`` false).
    """
    prof = _profile(profile)
    sc, ft, ev = prof.screen, prof.finetune, prof.evaluation
    rt = resolve_runtime(device)
    rng = np.random.default_rng(0)
    wells_per_stimulus = sc.wells_per_plate * sc.omics_plates_per_stimulus * sc.imaging_plates_per_omics_plate
    tiles_per_well = max(ft.tiles_per_well, 32)
    d = prof.pretrain.dense_dims[1]
    n_wells = 2 * wells_per_stimulus
    emb = torch.from_numpy(rng.normal(size=(n_wells * tiles_per_well, d)).astype(np.float32)).to(rt.device)
    cache = TileEmbeddings(emb, np.arange(n_wells + 1) * tiles_per_well)
    well_emb = cache.well_means(np.arange(n_wells))
    t0 = time.perf_counter()
    epochs = []
    planned = 2 * 2 * ev.n_splits
    for n_genes in (sc.n_transcripts, sc.n_proteins):
        w = rng.normal(size=(d, n_genes)) / np.sqrt(d)
        for stim in range(2):
            if deadline is not None and time.perf_counter() > deadline:
                break
            wells = np.arange(stim * wells_per_stimulus, (stim + 1) * wells_per_stimulus)
            y = well_emb[wells].cpu().numpy() @ w + rng.normal(size=(len(wells), n_genes))
            for k in range(ev.n_splits):
                if deadline is not None and time.perf_counter() > deadline:
                    break
                perm = np.random.default_rng(k).permutation(len(wells))
                tr, va = perm[: int(0.7 * len(wells))], perm[int(0.7 * len(wells)): int(0.8 * len(wells))]
                mean, std = y[tr].mean(0), y[tr].std(0, ddof=1)
                z = (y - mean) / std
                res = train_head(cache, wells[tr], z[tr], well_emb[wells[va]], z[va], ft, seed=k)
                epochs.append(len(res.history))
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"profile": prof.name, "heads": len(epochs), "heads_planned": planned, "complete": len(epochs) == planned,
            "wells": n_wells, "genes": (sc.n_transcripts, sc.n_proteins), "K": ft.wells_per_batch,
            "N": ft.tiles_per_well, "epochs": epochs, "mean_epochs": float(np.mean(epochs)) if epochs else float("nan"),
            "seconds": dt}


def main() -> None:
    cuda = torch.cuda.is_available()
    print(hardware_summary())
    print("load average at start (1/5/15 min): %.1f / %.1f / %.1f (other processes share the cores)" % os.getloadavg())
    print(f"device: {'cuda ' + torch.cuda.get_device_name(0) if cuda else 'cpu'}; torch {torch.__version__}; "
          "fp32 on CPU, bf16 autocast + channels-last on CUDA")
    default_threads = torch.get_num_threads()
    # On a CPU both one thread and torch's default: on shared cores one thread can be far faster.
    thread_counts = [default_threads] if cuda else sorted({1, default_threads})
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for name in ("quick", "paper"):
                r = bench_pretrain(name, cuda)
                print(f"pre-training [{name}: width {r['width']}, {r['tile']}, K={r['K']} x N={r['N']}, "
                      f"{threads} thread(s)]: {r['tiles_per_s']:.0f} tiles/s (forward + backward + AdamW, data path included)")
                r = bench_inference(name, cuda)
                print(f"inference    [{name}: width {r['width']}, {r['tile']}, batch {r['batch']}, "
                      f"{threads} thread(s)]: {r['tiles_per_s']:.0f} tiles/s")
    finally:
        torch.set_num_threads(default_threads)
    for name in (("quick", "paper") if cuda else ("quick",)):
        r = bench_heads(name)
        print(f"fine-tuning  [{name}: {r['heads']} heads, {r['wells']} wells, {r['genes'][0]}+{r['genes'][1]} genes, "
              f"K={r['K']} x N={r['N']}, {r['mean_epochs']:.0f} epochs on average]: {r['seconds']:.1f} s for all heads")


if __name__ == "__main__":
    main()
