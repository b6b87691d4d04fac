"""The analyses of notebooks 70 and 80: SmoothGrad for four genes, CORAL + UMAP + mAP.

* **Embedding (notebook 80) at the paper's scale**: 3,072 wells (8 plates x 384: 156 knock-outs x 2
  wells + 72 NT wells per plate), 128-d synthetic embeddings with perturbation and plate effects.
  Timed: CORAL (per plate, NT source, all-NT target), UMAP (PCA, 15 neighbours, ``min_dist=0.5``,
  ``random_state=0``) twice in one process, because umap-learn's numba functions compile at the
  first call of every process, and the copairs mAP with p-values (null size 10,000) plus plate
  mixing, before and after CORAL as the notebook does. Target: <= 60 s on 2 cores.
* **SmoothGrad (notebook 70) at the quick profile**: the quick profile's backbone (width 16, dense
  256/64, 64x64 tiles resized to 32) with random weights (the cost does not depend on training),
  four genes x 16 tiles x 32 noisy samples, plus the reference read-outs (4 x 64 tiles x 8
  samples) as :func:`i2o_utils.analysis.attribution.attribute_genes` runs them, with one torch
  thread as notebook 70 does by default. Target: <= 60 s on 2 cores.

Run: ``python -m benchmarks attribution_embedding`` (or ``make bench``).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import torch

from benchmarks.common import hardware_summary, peak_rss_mib


def _paper_embeddings(rng: np.random.Generator, d: int = 128) -> tuple[pd.DataFrame, np.ndarray]:
    targets = [f"KO{i:03d}" for i in range(156)]
    effect = {t: rng.normal(0, 1.0 if rng.random() < 0.6 else 0.15, d) for t in targets} | {"NT": np.zeros(d)}
    rows, emb = [], []
    for p in range(8):
        stim = "m1" if p < 4 else "m2"
        shift = rng.normal(0, 0.5, d) + (2.0 if stim == "m2" else 0.0)
        content = [t for t in targets for _ in range(2)] + ["NT"] * 72
        for k, t in enumerate(rng.permutation(content)):
            rows.append((f"IMG{p + 1:02d}_{stim.upper()}", f"W{k:03d}", t, stim))
            emb.append(effect[t] + shift + rng.normal(0, 0.5, d))
    return pd.DataFrame(rows, columns=["plate", "well_id", "target", "cell_state"]), np.array(emb)


def bench_embedding() -> None:
    from i2o_utils.analysis import embedding
    from i2o_utils.analysis.coral import coral_align_plates

    wells, emb = _paper_embeddings(np.random.default_rng(0))
    t_all, c_all = time.perf_counter(), time.process_time()
    t0 = time.perf_counter()
    aligned = coral_align_plates(emb, wells)
    t_coral = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        embedding.umap_coordinates(emb)
        t_umap1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        embedding.umap_coordinates(aligned)
        t_umap2 = time.perf_counter() - t0
    t0 = time.perf_counter()
    for x in (emb, aligned):
        m = embedding.perturbation_map(x, wells, null_size=10_000)
        embedding.plate_mixing(x, wells)
        embedding.stimulus_separation(x, wells)
    t_map = time.perf_counter() - t0
    total, cpu = time.perf_counter() - t_all, time.process_time() - c_all
    print(f"embedding, paper scale: {len(wells)} wells x {emb.shape[1]}-d, 8 plates, 72 NT wells per plate")
    print(f"  CORAL (8 plates)                         {t_coral:7.2f} s")
    print(f"  UMAP, first call (numba compiles)        {t_umap1:7.2f} s")
    print(f"  UMAP, second call                        {t_umap2:7.2f} s")
    print(f"  mAP + p-values + mixing, before & after  {t_map:7.2f} s  ({len(m)} perturbations each)")
    print(f"  total (as notebook 80 runs it)           {total:7.2f} s  -> {len(wells) / total:.0f} wells/s; target <= 60 s")
    print(f"  CPU time of this process                 {cpu:7.2f} s  (wall time is inflated when the cores are shared)")


def bench_smoothgrad() -> None:
    from i2o_utils.analysis.attribution import TileContribution, _reference_shares, channel_shares, smoothgrad
    from i2o_utils.config import get_profile
    from i2o_utils.model.train import build_backbone

    cfg = get_profile("quick")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # notebook 70's default (threads = 1: fastest when the cores are shared)
    torch.manual_seed(0)
    bb = build_backbone(cfg.pretrain).eval()
    s, n_tiles, n_samples = cfg.imaging.tile_size, 16, 32
    tiles = [torch.rand(n_tiles, 3, s, s) for _ in range(4)]
    t0, c0 = time.perf_counter(), time.process_time()
    for x in tiles:
        m = TileContribution(bb, torch.randn(bb.embedding_dim), scale=1.0 / n_tiles, input_size=cfg.pretrain.input_size)
        channel_shares(smoothgrad(m, x, noise=0.15, n_samples=n_samples), x)
    t_genes = time.perf_counter() - t0
    t0 = time.perf_counter()
    _reference_shares(bb, bb.embedding_dim, torch.cat(tiles), cfg.pretrain.input_size, 0.15, 8, 4, 0)
    t_ref = time.perf_counter() - t0
    passes = 4 * n_tiles * n_samples
    print(f"SmoothGrad, quick profile: backbone width {cfg.pretrain.backbone_width}, {s}x{s} tiles -> "
          f"{cfg.pretrain.input_size}, torch threads {torch.get_num_threads()}")
    print(f"  4 genes x {n_tiles} tiles x {n_samples} samples   {t_genes:7.2f} s  ({passes / t_genes:.0f} tile passes/s)")
    print(f"  reference read-outs (4 x 64 tiles x 8)  {t_ref:7.2f} s")
    print(f"  total                                   {t_genes + t_ref:7.2f} s; target <= 60 s")
    print(f"  CPU time of this process                {time.process_time() - c0:7.2f} s")
    torch.set_num_threads(threads)


def main() -> None:
    print(hardware_summary())
    bench_smoothgrad()
    bench_embedding()
    print(f"peak RSS {peak_rss_mib():.0f} MiB")
