"""Figs 6 and 7 build from saved results alone (no model)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from i2o_utils.analysis.embedding import EmbeddingAnalysis, read_embedding_results  # noqa: E402
from i2o_utils.plotting import analysis_embedding as figs  # noqa: E402


def _coords(rng, n=40):
    t = rng.choice(["NT", "STAT1", "STAT6", "KO1", "KO2"], n)
    return pd.DataFrame({"plate": rng.choice(["P1", "P2"], n), "well_id": [f"A{i}" for i in range(n)], "target": t,
                         "cell_state": rng.choice(["m1", "m2"], n), "umap_1": rng.normal(size=n),
                         "umap_2": rng.normal(size=n)})


def _map(rng):
    return pd.DataFrame({"perturbation": ["KO1 M1", "KO2 M1"], "target": ["KO1", "KO2"], "cell_state": ["m1", "m1"],
                         "mean_average_precision": [0.9, 0.3], "p_value": [0.001, 0.4],
                         "corrected_p_value": [0.002, 0.4], "below_corrected_p": [True, False], "n_wells": [4, 4]})


def test_fig7_from_saved_results(tmp_path):
    rng = np.random.default_rng(0)
    res = EmbeddingAnalysis(coords={"before CORAL": _coords(rng), "after CORAL": _coords(rng)},
                            maps={"before CORAL": _map(rng), "after CORAL": _map(rng)}, mixing={},
                            summary=pd.DataFrame({"embedding": ["before CORAL", "after CORAL"], "mean_mAP": [0.6, 0.5]}))
    res.save(tmp_path)
    coords, maps, summary = read_embedding_results(tmp_path)
    assert list(coords) == ["before CORAL", "after CORAL"] and len(summary) == 2
    pd.testing.assert_frame_equal(maps["after CORAL"], _map(rng), check_dtype=False)
    insets = {"NT (M1)": rng.random((9, 3, 16, 16)), "STAT1 (M1)": rng.random((9, 3, 16, 16))}
    for fig in (figs.fig7_umap(coords["after CORAL"], insets, callouts=["KO1"]),
                figs.coral_plates_figure(coords["before CORAL"], coords["after CORAL"]),
                figs.retrieval_figure(maps)):
        assert len(fig.axes) >= 1
        plt.close(fig)
    assert figs.tile_mosaic(insets["NT (M1)"]).shape == (3 * 17 - 1, 3 * 17 - 1, 3)


def test_fig6_from_saved_results():
    rng = np.random.default_rng(1)
    genes = ["G1", "G2"]
    scatter = pd.DataFrame({"gene": np.repeat(genes, 10), "measured": rng.normal(size=20),
                            "predicted": rng.normal(size=20)})
    tiles = rng.random((2, 3, 3, 16, 16))
    attr = rng.normal(size=(2, 3, 3, 16, 16))
    fig = figs.fig6_attribution(scatter, tiles, attr, genes)
    assert len(fig.axes) == 2 * (1 + 2 * 3)
    plt.close(fig)
    shares = pd.DataFrame({"label": genes, "Hoechst": [0.5, 0.2], "MitoTracker": [0.3, 0.3], "Phalloidin": [0.2, 0.5],
                           "driver_channel": ["Hoechst", "Phalloidin"]})
    plt.close(figs.channel_share_figure(shares))
