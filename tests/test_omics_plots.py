"""Fig 9 and the mean-sd plot, and the plate-effect numbers behind them."""

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from i2o_utils.omics.qc import control_pca, mean_sd_summary, plate_effect_summary, plate_r2  # noqa: E402
from i2o_utils.plotting.omics import plot_fig9, plot_mean_sd  # noqa: E402


def toy_set(shift: float, seed: int = 0, n_genes: int = 50) -> ad.AnnData:
    """Two plates of 10 wells (6 NT); plate 2 shifted by ``shift`` in the 'normalised' layer only."""
    rng = np.random.default_rng(seed)
    plates = np.repeat(["P1", "P2"], 10)
    targets = np.tile(["NT"] * 6 + ["KO1", "KO1", "KO2", "KO2"], 2)
    corrected = rng.normal(8, 1, (20, n_genes))
    normalised = corrected + shift * (plates == "P2")[:, None] * rng.normal(1, 0.2, n_genes)
    raw = 2.0 ** normalised * 100
    obs = pd.DataFrame({"plate_barcode": plates, "target": targets}, index=[f"w{i}" for i in range(20)])
    return ad.AnnData(X=corrected.astype(np.float32), obs=obs,
                      layers={"raw": raw.astype(np.float32), "normalised": normalised.astype(np.float32),
                              "corrected": corrected.astype(np.float32)})


def test_plate_r2_known_values():
    assert plate_r2(np.array([0.0, 0.0, 1.0, 1.0]), ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert plate_r2(np.array([0.0, 1.0, 0.0, 1.0]), ["a", "a", "b", "b"]) == pytest.approx(0.0)
    # group means 0.5 and 2.5 around 1.5: between SS 2 * 1 + 2 * 1 = 4, total SS 5
    x = np.array([0.0, 1.0, 2.0, 3.0])
    assert plate_r2(x, ["a", "a", "b", "b"]) == pytest.approx(4.0 / 5.0)


def test_control_pca_uses_control_wells_only():
    scores, explained = control_pca(toy_set(5.0), "normalised")
    assert len(scores) == 12 and set(scores["plate_barcode"]) == {"P1", "P2"}
    assert explained[0] > 0.5  # the plate shift is the main axis
    assert plate_r2(scores[["PC1", "PC2"]].to_numpy(), scores["plate_barcode"]) > 0.8


def test_plate_effect_summary_before_and_after():
    sets = {("transcriptomics", "m1"): toy_set(5.0), ("proteomics", "m2"): toy_set(5.0, seed=1)}
    eff = plate_effect_summary(sets).set_index(["omics", "stimulus", "layer"])
    assert eff.loc[("transcriptomics", "m1", "normalised"), "plate_r2_genes"] > 0.8
    assert eff.loc[("transcriptomics", "m1", "corrected"), "plate_r2_genes"] < 0.3
    assert eff["chance"].iloc[0] == pytest.approx(1 / 11)


def test_fig9_has_a_panel_per_omics_stimulus_and_correction_state():
    sets = {("transcriptomics", "m1"): toy_set(5.0), ("proteomics", "m2"): toy_set(5.0, seed=1)}
    fig = plot_fig9(sets)
    assert len(fig.axes) == 8
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("transcriptomics M1: before correction")
    assert "no data" in [t.get_text() for t in fig.axes[2].texts]  # transcriptomics M2 absent
    plt.close(fig)


def test_mean_sd_plot_and_summary():
    sets = {("proteomics", "m1"): toy_set(0.0)}
    fig = plot_mean_sd(sets)
    assert len(fig.axes) == 6
    plt.close(fig)
    summary = mean_sd_summary(sets)
    assert list(summary.columns) == ["omics", "stimulus", "raw", "log2", "vsn"] and len(summary) == 1
    assert summary["raw"].iloc[0] > summary["vsn"].iloc[0]
