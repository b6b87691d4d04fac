"""The model's data path: in-memory tile store, augmentation table, device preparation, sampling."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from i2o_utils.model.data import (InMemoryTiles, Prefetcher, dihedral_augment, prepare_tiles, resolve_runtime,
                                  sample_tile_indices, to_device)
from tests.support.tiles import synthetic_tiles


def test_dihedral_augment_matches_flip_and_rot90():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5).repeat(8, 1, 1, 1)
    codes = torch.arange(8).repeat_interleave(2)
    out = dihedral_augment(x, codes)
    for m in range(16):
        t = int(codes[m])
        want = torch.rot90(x[m], k=t % 4, dims=(1, 2))
        if t >= 4:
            want = torch.flip(want, dims=(2,))
        assert torch.equal(out[m], want), t
    assert len({tuple(out[m].flatten().tolist()) for m in range(0, 16, 2)}) == 8


def test_prepare_tiles_uint16_scaling_resize_channels_last():
    store = synthetic_tiles(n_targets=3, wells_per_group=2, tiles_per_well=3, tile_size=8, dtype="uint16")
    rt = resolve_runtime("cpu", channels_last=True)
    raw = to_device(store.sample(np.array([0, 1]), 3, np.random.default_rng(0)), rt)
    assert raw.dtype == torch.uint16
    x = prepare_tiles(raw, store.to_float, rt, input_size=4)
    assert x.shape == (6, 3, 4, 4) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    full = prepare_tiles(raw, store.to_float, resolve_runtime("cpu"))
    np.testing.assert_allclose(full.numpy(), store.to_float(raw.numpy()).reshape(6, 3, 8, 8), rtol=1e-6)
    torch.testing.assert_close(x, torch.nn.functional.avg_pool2d(full, 2))


def test_store_sample_with_replacement_is_logged(caplog):
    store = synthetic_tiles(n_targets=3, wells_per_group=2, tiles_per_well=[2, 6], tile_size=8)
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING):
        out = store.sample(np.array([0, 1]), 4, rng)
    assert out.shape == (2, 4, 3, 8, 8)
    assert "has 2 tiles < N=4: sampled with replacement" in caplog.text
    # without replacement where possible: 4 distinct tiles of well 1
    assert len({t.tobytes() for t in out[1]}) == 4


def test_store_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8 or all uint16"):
        InMemoryTiles([np.zeros((2, 3, 4, 4), np.float32)], pd.DataFrame({"plate": ["P"], "well_id": ["A1"],
                                                                          "target": ["NT"], "cell_state": ["m1"]}))
    store = InMemoryTiles([np.zeros((0, 3, 4, 4), np.uint8)],
                          pd.DataFrame({"plate": ["P"], "well_id": ["A1"], "target": ["NT"], "cell_state": ["m1"]}))
    with pytest.raises(ValueError, match="well A1 of plate P has no tiles"):
        store.sample(np.array([0]), 2, np.random.default_rng(0))


def test_sample_tile_indices():
    n_tiles = np.array([10, 3, 5])
    local, short = sample_tile_indices(n_tiles, 4, np.random.default_rng(0))
    assert local.shape == (3, 4)
    assert short.tolist() == [False, True, False]
    for i, n in enumerate(n_tiles):
        assert (local[i] < n).all() and (local[i] >= 0).all()
    assert len(set(local[0])) == 4 and len(set(local[2])) == 4  # without replacement
    again, _ = sample_tile_indices(n_tiles, 4, np.random.default_rng(0))
    assert np.array_equal(local, again)
    with pytest.raises(ValueError, match="no tiles"):
        sample_tile_indices(np.array([3, 0]), 2, np.random.default_rng(0))


def test_prefetcher_same_stream_as_inline():
    def make(depth):
        rng = np.random.default_rng(1)

        def produce():
            return rng.integers(0, 100, 3), rng.bit_generator.state
        p = Prefetcher(produce, depth=depth)
        out = [next(p)[0].tolist() for _ in range(5)]
        p.close()
        return out
    assert make(0) == make(3)


@pytest.mark.gpu
def test_gpu_prepare_tiles_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none present)")
    store = synthetic_tiles(n_targets=3, wells_per_group=2, tiles_per_well=4, tile_size=16, dtype="uint16")
    batch = store.sample(np.array([0, 1, 2]), 4, np.random.default_rng(0))
    codes = torch.arange(12) % 8
    gpu = prepare_tiles(to_device(batch, resolve_runtime("cuda")), store.to_float, resolve_runtime("cuda"), codes=codes.cuda())
    cpu = prepare_tiles(to_device(batch, resolve_runtime("cpu")), store.to_float, resolve_runtime("cpu"), codes=codes)
    torch.testing.assert_close(gpu.cpu(), cpu)
