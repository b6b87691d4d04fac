"""Batch sampler and pre-training: K wells from G groups, checkpoints, bit-identical resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from i2o_utils.config import PretrainConfig
from tests.support.tiles import synthetic_tiles
from i2o_utils.model.samplers import TripletBatchSampler, group_labels
from i2o_utils.model.train import CHECKPOINT_NAME, load_backbone, pretrain


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_group_labels_by_perturbation_and_stimulus():
    w = pd.DataFrame({"target": ["A", "A", "B", "A"], "cell_state": ["m1", "m1", "m1", "m2"]})
    lab = group_labels(w)
    assert lab[0] == lab[1] and len(set(lab)) == 3


def test_sampler_batches():
    labels = np.repeat(np.arange(10), [2, 3, 8, 8, 8, 8, 8, 8, 8, 1])
    s = TripletBatchSampler(labels, wells_per_batch=12, groups_per_batch=3, seed=0)
    assert 9 not in s.groups  # a single-well group cannot give a positive
    for _ in range(50):
        wells, lab = s.next_batch()
        assert len(wells) == 12
        assert np.array_equal(lab, labels[wells])
        groups, counts = np.unique(lab, return_counts=True)
        assert len(groups) == 3 and (counts == 4).all()
        for g in groups:
            members = wells[lab == g]
            n = (labels == g).sum()
            # every well of a small group is used before any repeat
            assert len(set(members)) == min(4, n)
    state = s.state_dict()
    a = [s.next_batch()[0].tolist() for _ in range(3)]
    s.load_state_dict(state)
    assert a == [s.next_batch()[0].tolist() for _ in range(3)]


def test_sampler_errors():
    with pytest.raises(ValueError, match="multiple"):
        TripletBatchSampler(np.repeat(np.arange(4), 4), 10, 3)
    with pytest.raises(ValueError, match="too many"):
        TripletBatchSampler(np.repeat(np.arange(4), 4), 10, 5)


def _cfg(**kw):
    base = dict(wells_per_batch=8, groups_per_batch=4, tiles_per_well=2, steps=4, steps_per_epoch=2,
                backbone_width=4, dense_dims=(16, 8), lr=1e-3, seed=3)
    base.update(kw)
    return PretrainConfig(**base)


@pytest.fixture(scope="module")
def store():
    return synthetic_tiles(n_targets=4, wells_per_group=3, tiles_per_well=[3, 5], tile_size=16, seed=1)


def test_resume_is_bit_identical(store, tmp_path):
    cfg = _cfg()
    full = pretrain(store, cfg, tmp_path / "full", progress=False)
    part = pretrain(store, cfg, tmp_path / "part", stop_after=2, progress=False)
    assert len(part.history) == 2
    resumed = pretrain(store, cfg, tmp_path / "part", resume=True, progress=False)
    assert resumed.history["step"].tolist() == [1, 2, 3, 4]
    assert resumed.history["loss"].tolist() == full.history["loss"].tolist()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the same seed gives the same run
    again = pretrain(store, cfg, tmp_path / "again", progress=False)
    assert torch.equal(again.model.dense2.weight, full.model.dense2.weight)


def test_checkpoint_contents_and_loading(store, tmp_path):
    res = pretrain(store, _cfg(steps=2), tmp_path, progress=False)
    ck = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert {"model", "optimizer", "scheduler", "sampler", "rng", "step", "history", "config"} <= set(ck)
    assert ck["step"] == 2 and ck["optimizer"]["state"]
    model, cfg = load_backbone(tmp_path / CHECKPOINT_NAME)
    assert not model.training and cfg["backbone_width"] == 4
    x = torch.rand(2, 3, 3, 16, 16)
    res.model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), res.model(x))
    with pytest.raises(ValueError, match="configuration differs"):
        pretrain(store, _cfg(steps=4, lr=5e-4), tmp_path, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no backbone checkpoint"):
        load_backbone(tmp_path / "missing.pt")


def test_training_reduces_loss(store, tmp_path):
    res = pretrain(store, _cfg(steps=30, steps_per_epoch=10, tiles_per_well=3, lr=3e-3), tmp_path, progress=False)
    loss = res.history["loss"].to_numpy()
    assert loss[-10:].mean() < loss[:5].mean()
    assert np.isfinite(res.tiles_per_second)


@pytest.mark.gpu
def test_gpu_pretrain_fast_path(store, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none present)")
    res = pretrain(store, _cfg(steps=3), tmp_path, device="cuda", progress=False)
    assert res.runtime.bf16 and res.runtime.channels_last
    assert np.isfinite(res.history["loss"]).all()
    model, _ = load_backbone(tmp_path / CHECKPOINT_NAME)
    assert next(model.parameters()).device.type == "cpu"
