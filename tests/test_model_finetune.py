"""Fine-tuning: cached per-tile embeddings == running the backbone; labels; one head."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from i2o_utils.config import FinetuneConfig
from i2o_utils.model.backbone import MResNet18
from i2o_utils.model.data import resolve_runtime, sample_tile_indices
from tests.support.tiles import synthetic_tiles
from i2o_utils.model.finetune import (LabelError, align_labels, cache_tile_embeddings, standardise, train_head,
                                      well_embeddings_cached, well_embeddings_uncached)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def store():
    return synthetic_tiles(n_targets=4, wells_per_group=3, tiles_per_well=[4, 7, 9], tile_size=16, seed=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = MResNet18(width=4, dense_dims=(16, 8))
    # give BatchNorm non-trivial running statistics, as after pre-training
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m.embed_tiles(torch.rand(32, 3, 16, 16))
    return m.eval()


def test_cached_equals_uncached(store, model):
    rt = resolve_runtime("cpu")
    cache = cache_tile_embeddings(model, store, rt, batch_tiles=10, progress=False)
    assert cache.embeddings.shape == (store.wells["n_tiles"].sum(), 8)
    rng = np.random.default_rng(0)
    wells = np.array([0, 5, 7, 11, 3])
    local, short = sample_tile_indices(cache.n_tiles[wells], 6, rng)  # some wells have 4 < 6 tiles
    assert short.any()
    cached = well_embeddings_cached(cache, wells, local)
    uncached = well_embeddings_uncached(model, store, wells, local, rt)
    torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-6)
    # the cache is each tile's embedding on its own, whatever its batch
    with torch.no_grad():
        alone = model.embed_tiles(store.to_float(torch.from_numpy(store.read_well(5))))
    torch.testing.assert_close(cache.embeddings[cache.offsets[5]:cache.offsets[6]], alone, rtol=1e-5, atol=1e-6)
    assert not model.training


def test_train_mode_batchnorm_would_break_the_cache(store, model):
    """Why eval mode: in train mode a tile's embedding depends on the other tiles of its batch."""
    x0 = store.to_float(torch.from_numpy(store.read_well(0)))
    x1 = store.to_float(torch.from_numpy(store.read_well(9)))
    m = MResNet18(width=4, dense_dims=(16, 8))
    m.load_state_dict(model.state_dict())
    m.train()
    with torch.no_grad():
        alone = m.embed_tiles(x0)
        together = m.embed_tiles(torch.cat([x0, x1]))[: len(x0)]
    assert not torch.allclose(alone, together, atol=1e-3)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.embed_tiles(x0), m.embed_tiles(torch.cat([x0, x1]))[: len(x0)],
                                   rtol=1e-5, atol=1e-6)


def _wide(store, stimulus="m1", genes=("g1", "g2", "g3"), seed=0):
    w = store.wells[store.wells["cell_state"] == stimulus]
    rng = np.random.default_rng(seed)
    idx = pd.MultiIndex.from_arrays([w["plate"], w["well_id"]], names=["plate_barcode", "well_id"])
    return pd.DataFrame(rng.normal(size=(len(w), len(genes))), index=idx, columns=pd.Index(genes, name="gene"))


def test_align_labels(store):
    wide = _wide(store)
    data = align_labels(store.wells, wide, "transcriptomics", "m1", source="gt.csv")
    assert len(data.wells) == len(wide) and list(data.genes) == ["g1", "g2", "g3"]
    assert (store.wells.iloc[data.wells["well_index"]]["cell_state"] == "m1").all()
    np.testing.assert_array_equal(data.y, wide.to_numpy())
    assert not data.dropped


def test_align_labels_missing_wells_are_dropped_and_logged(store, caplog):
    wide = _wide(store).iloc[2:]
    extra = pd.DataFrame([[0.0, 0.0, 0.0]], columns=wide.columns,
                         index=pd.MultiIndex.from_tuples([("PX", "P24")], names=wide.index.names))
    with caplog.at_level(logging.WARNING):
        data = align_labels(store.wells, pd.concat([wide, extra]), "proteomics", "m1", source="gt.csv")
    assert len(data.wells) == len(wide)
    assert data.dropped["labelled but not in the tile store"] == ["PX:P24"]
    assert len(data.dropped["in the tile store but not labelled"]) == 2
    assert "not labelled, left out" in caplog.text and "PX:P24" in caplog.text


def test_align_labels_errors(store):
    wide = _wide(store)
    wide.iloc[3, 1] = np.nan
    plate, well = wide.index[3]
    with pytest.raises(LabelError, match=f"gt.csv: no finite measured value for gene 'g2' in well {well} of plate {plate}"):
        align_labels(store.wells, wide, "proteomics", "m1", source="gt.csv")
    with pytest.raises(LabelError, match="no well of the label table is in the tile store"):
        align_labels(store.wells, _wide(store, "m2"), "proteomics", "m1", source="gt.csv")


def test_standardise_ddof1_and_constant_genes():
    y = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    mean, std = standardise(y)
    np.testing.assert_allclose(mean, [3.0, 5.0])
    np.testing.assert_allclose(std, [2.0, 1.0])  # ddof=1; constant gene -> 1


def test_train_head_learns_and_stops_early(store, model):
    cache = cache_tile_embeddings(model, store, resolve_runtime("cpu"), progress=False)
    n = len(store.wells)
    full = torch.stack([cache.embeddings[cache.offsets[i]:cache.offsets[i + 1]].mean(0) for i in range(n)]).numpy()
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 5))
    y = (full - full.mean(0)) / full.std(0) @ w + 0.1 * rng.normal(size=(n, 5))
    train, val = np.arange(0, n, 2), np.arange(1, n, 2)
    mean, std = standardise(y[train])
    z = (y - mean) / std
    cfg = FinetuneConfig(wells_per_batch=8, tiles_per_well=16, lr=3e-2, max_epochs=300, patience=5)
    res = train_head(cache, train, z[train], torch.from_numpy(full[val]), z[val], cfg, seed=0)
    h = res.history
    assert h["val_loss"].iloc[0] < h["val_loss_mean_predictor"].iloc[0] + 1e-9
    assert h["val_loss"].min() < 0.5 * h["val_loss_mean_predictor"].iloc[0]
    assert len(h) < cfg.max_epochs and res.best_epoch == int(h["val_loss"].idxmin())
    assert len(h) - 1 - res.best_epoch == cfg.patience
    # the returned head acts on raw embeddings (standardisation folded back)
    assert np.mean((res.predict_z(full[val]) - z[val]) ** 2) == pytest.approx(h["val_loss"].min(), rel=1e-4)
    assert res.val_mse_per_gene.mean() == pytest.approx(h["val_loss"].min(), rel=1e-5)
