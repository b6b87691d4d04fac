"""SmoothGrad: zero noise equals the plain gradient of the well-level prediction; shapes; drivers."""

import numpy as np
import pandas as pd
import pytest
import torch

from i2o_utils.analysis.attribution import (TileContribution, channel_shares, choose_genes, driver_check,
                                            gene_drivers, smoothgrad, well_gradient)
from i2o_utils.config import CHANNEL_SHORT
from i2o_utils.model.backbone import MResNet18


@pytest.fixture(scope="module")
def model_and_tiles():
    torch.manual_seed(0)
    bb = MResNet18(width=4, dense_dims=(16, 8)).eval()
    x = torch.rand(5, 3, 32, 32)
    w = torch.randn(8)
    return bb, x, w


def test_zero_noise_smoothgrad_equals_gradient_of_well_prediction(model_and_tiles):
    bb, x, w = model_and_tiles
    std, n = 2.5, len(x)
    for size in (None, 16):  # with and without the pre-training's resize
        sg = smoothgrad(TileContribution(bb, w, scale=std / n, input_size=size), x, noise=0.0, n_samples=3)
        ref = well_gradient(bb, x, w, bias=0.3, std=std, mean=7.0, input_size=size)
        torch.testing.assert_close(sg, ref, rtol=1e-4, atol=1e-7)
        assert ref.abs().sum() > 0


def test_attributions_have_tile_shape_and_are_finite(model_and_tiles):
    bb, x, w = model_and_tiles
    a = smoothgrad(TileContribution(bb, w, scale=1.0, input_size=16), x, noise=0.15, n_samples=4, seed=1)
    assert a.shape == x.shape
    assert torch.isfinite(a).all()
    # noise changes the result, and the seed makes it reproducible
    b = smoothgrad(TileContribution(bb, w, scale=1.0, input_size=16), x, noise=0.15, n_samples=4, seed=1)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, smoothgrad(TileContribution(bb, w, input_size=16), x, noise=0.0, n_samples=1))


def test_channel_shares():
    a = np.zeros((2, 3, 4, 4))
    x = np.ones((2, 3, 4, 4))
    a[:, 1] = 1.0
    a[:, 2, 0, 0] = -3.0
    s = channel_shares(a, x)
    np.testing.assert_allclose(s, [0.0, 16 / 19, 3 / 19])
    # opposite signs within a channel cancel before the absolute value
    a[:, 0, 0, 0], a[:, 0, 0, 1] = 1.0, -1.0
    np.testing.assert_allclose(channel_shares(a, x)[0], 0.0)


def _truth():
    return pd.DataFrame({
        "omics": "transcriptomics", "gene": [f"G{i}" for i in range(6)],
        "kind": ["visible"] * 5 + ["noise"],
        "w_visible_0": [1.0, 0.1, 0.1, 0.5, 0.3, 0.0],
        "w_visible_1": [0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "w_visible_2": [0.1, 1.0, 0.1, 0.5, 0.2, 0.0],
        "w_visible_3": [0.1, 0.1, -1.0, 0.0, 0.1, 0.0],
    })


def test_gene_drivers_follow_the_simulator():
    d = gene_drivers(_truth()).set_index("gene")
    assert list(d.loc[["G0", "G1", "G2"], "driver_channel"]) == ["Hoechst", "Phalloidin", "MitoTracker"]
    assert d.loc["G2", "driver_structure"] == "mitochondrial mass and clustering"
    assert d.loc["G3", "driver_share"] == pytest.approx(0.5)
    assert d.loc["G4", "driver_channel"] is None  # cell size: drawn into several channels


def test_choose_genes_best_worst_between_and_only_known_drivers():
    truth = _truth()
    per_gene = pd.DataFrame({"omics": "transcriptomics", "stimulus": "m1", "gene": [f"G{i}" for i in range(6)],
                             "kept": True, "r2": [0.9, 0.5, 0.2, 0.95, 0.99, 0.8]})
    with pytest.raises(ValueError, match="candidate"):
        choose_genes(per_gene, truth, n=5)  # G0-G3 qualify; G4 (several channels) and G5 (noise) do not
    chosen = choose_genes(per_gene, truth, n=3, min_driver_share=0.6)
    assert list(chosen["gene"]) == ["G0", "G1", "G2"]
    assert list(chosen["rank"]) == ["best", "between 1", "worst"]
    real = choose_genes(per_gene, None, n=4)  # no truth: every evaluated gene is a candidate
    assert list(real["gene"]) == ["G4", "G0", "G5", "G2"]  # ranks 0, 2, 3, 5 of 6


def test_driver_check():
    shares = pd.DataFrame({"Hoechst": [0.6, 0.2], "MitoTracker": [0.2, 0.2], "Phalloidin": [0.2, 0.6],
                           "driver_channel": ["Hoechst", "MitoTracker"]})
    out = driver_check(shares, np.array([1 / 3, 1 / 3, 1 / 3]))
    assert list(out["most_enriched"]) == ["Hoechst", "Phalloidin"]
    assert list(out["driver_most_enriched"]) == [True, False]
    assert out.loc[0, "driver_enrichment"] == pytest.approx(1.8)
    assert set(f"enrichment_{c}" for c in CHANNEL_SHORT) <= set(out.columns)
