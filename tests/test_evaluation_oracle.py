"""The label oracle: which genes' processed labels the visible state predicts (simulated screens)."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from i2o_utils.config import get_profile
from i2o_utils.data import simulate as sim
from i2o_utils.data.layout import LayoutError
from i2o_utils.evaluation.truth import OracleTooSmall, label_oracle, label_oracle_summary, truth_recovery
from i2o_utils.omics.batch import remove_batch_effect
from i2o_utils.omics.vsn import vsn_fit

D_VISIBLE = 4


def _screen(n_targets: int = 150, n_plates: int = 2, rng=None, stimulus_mean: float = 0.0):
    """Wells (one per target per plate) with a latent state: target effect + well noise."""
    rng = rng or np.random.default_rng(0)
    targets = [f"KO{i:03d}" for i in range(n_targets)]
    effects = rng.normal(0, 1, (n_targets, D_VISIBLE + 2))
    rows, z = [], []
    for p in range(n_plates):
        for t, e in zip(targets, effects):
            rows.append({"plate": f"P{p}", "well_id": f"W{len(rows)}", "target": t})
            z.append(stimulus_mean + e + rng.normal(0, 0.3, e.shape))
    wells = pd.DataFrame(rows)
    z = np.asarray(z)
    latent = wells.assign(kind="imaging", **{f"z{i}": z[:, i] for i in range(z.shape[1])})
    return wells, z, latent


def _labels(wells: pd.DataFrame, values: np.ndarray, genes) -> pd.DataFrame:
    index = pd.MultiIndex.from_arrays([wells["plate"], wells["well_id"]], names=["plate_barcode", "well_id"])
    return pd.DataFrame(values, index=index, columns=list(genes))


def test_f_test_matches_statsmodels():
    # provenance: the Wald F-test of every term but the intercept with the HC3 covariance, as
    # statsmodels' OLS(...).fit(cov_type="HC3").f_test
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(1)
    wells, z, latent = _screen(60, rng=rng)
    y = np.column_stack([0.3 * z[:, 0] + rng.normal(0, 1, len(z)), rng.normal(0, 1, len(z)),
                         z[:, 1] - z[:, 2] + rng.normal(0, 1, len(z)) * (1 + np.abs(z[:, 3]))])
    y[5, 2] = np.nan  # one missing value: the perturbation mean uses the other well
    out = label_oracle(_labels(wells, y, ["a", "b", "c"]), latent, D_VISIBLE)
    zbar = latent.groupby("target")[[f"z{i}" for i in range(D_VISIBLE)]].mean().to_numpy()
    x = sm.add_constant(zbar)
    ybar = pd.DataFrame(y).groupby(wells["target"].to_numpy()).mean().to_numpy()
    for j, gene in enumerate("abc"):
        fit = sm.OLS(ybar[:, j], x).fit(cov_type="HC3")
        ftest = fit.f_test(np.eye(x.shape[1])[1:])
        row = out.set_index("gene").loc[gene]
        assert row["oracle_p"] == pytest.approx(float(ftest.pvalue), rel=1e-6, abs=1e-300)
        assert row["oracle_r2"] == pytest.approx(fit.rsquared, rel=1e-9)


def test_oracle_finds_dependent_genes_and_is_calibrated_on_noise():
    rng = np.random.default_rng(2)
    wells, z, latent = _screen(150, rng=rng)
    n_noise = 2000
    noise = rng.normal(0, 1, (len(z), n_noise))
    driven = np.column_stack([0.5 * z[:, 0] + rng.normal(0, 1, len(z)), 0.4 * (z[:, 3] - z[:, 1]) + rng.normal(0, 1, len(z))])
    hidden = 0.8 * z[:, D_VISIBLE][:, None] + rng.normal(0, 1, (len(z), 1))  # a state the images do not show
    genes = [f"n{i}" for i in range(n_noise)] + ["lin", "quad", "hid"]
    out = label_oracle(_labels(wells, np.column_stack([noise, driven, hidden]), genes), latent, D_VISIBLE)
    out = out.set_index("gene")
    assert out.loc[["lin", "quad"], "oracle_predictable"].all()
    assert not out.loc["hid", "oracle_predictable"]
    frac = (out.loc[[g for g in genes if g.startswith("n")], "oracle_p"] < 0.05).mean()
    assert abs(frac - 0.05) < 3 * np.sqrt(0.05 * 0.95 / n_noise)  # within binomial error of 5%
    assert out.loc[[g for g in genes if g.startswith("n")], "oracle_predictable"].sum() <= 5


def test_hidden_genes_of_a_scale_mixture_are_not_flagged():
    """Strong and weak perturbations (the simulator's scale mixture): a gene driven by the hidden
    state spreads more for strong perturbations, which also lie far out in the visible state; the
    HC3 test does not take that spread for a dependence of the mean."""
    rng = np.random.default_rng(5)
    wells, z, latent = _screen(150, rng=rng)
    scale = np.where(rng.random(150) < 0.6, 1.0, 0.15)
    z = z * np.tile(scale, 2)[:, None]
    latent = latent.assign(**{f"z{i}": z[:, i] for i in range(z.shape[1])})
    n_hidden = 1000
    w = rng.normal(0, 1, (2, n_hidden))
    y = z[:, D_VISIBLE:] @ w + rng.normal(0, 0.3, (len(z), n_hidden))
    out = label_oracle(_labels(wells, y, [f"h{i}" for i in range(n_hidden)]), latent, D_VISIBLE)
    assert (out["oracle_p"] < 0.05).mean() < 0.05 + 3 * np.sqrt(0.05 * 0.95 / n_hidden)
    assert out["oracle_predictable"].mean() < 0.02


def test_small_screens_are_refused():
    rng = np.random.default_rng(4)
    wells, z, latent = _screen(7, rng=rng)
    with pytest.raises(OracleTooSmall, match="7 perturbations"):
        label_oracle(_labels(wells, z[:, :1], ["g"]), latent, D_VISIBLE)


def test_unmatched_well_is_named():
    wells, z, latent = _screen(30)
    labels = _labels(wells, np.zeros((len(wells), 1)), ["g"])
    with pytest.raises(LayoutError, match="W0"):
        label_oracle(labels, latent[latent["well_id"] != "W0"], D_VISIBLE)


def _noise_flagged(prog: pd.DataFrame, rng, unmoved_reference: bool = False) -> tuple[float, float]:
    """Proteins of ``prog`` simulated on 150 perturbations around M1's stimulus mean, vsn (fitted to
    all proteins, or with ``unmoved_reference`` to the unmoved ones only) and the plate/TMT
    correction; returns the share of ``visible`` and of ``noise`` proteins the oracle flags."""
    wells, z, latent = _screen(150, rng=rng, stimulus_mean=np.r_[sim._STIMULUS_MEAN["m1"], 0.0, 0.0])
    x, tmt, _ = sim.simulate_protein(wells.rename(columns={"plate": "plate_barcode"}), z, prog, 16, rng)
    keep = (x > 0).mean(axis=0) > 0.5
    y = np.where(x[:, keep] > 0, x[:, keep], np.nan).astype(np.float64)
    kind = prog["kind"].to_numpy()[keep]
    noise = kind == "noise"
    fit = vsn_fit(y[:, noise] if unmoved_reference else y)
    corrected = remove_batch_effect(fit.transform(y), batch=wells["plate"].to_numpy(), batch2=tmt, allow_nan=True)
    out = label_oracle(_labels(wells, corrected, [f"p{i}" for i in range(y.shape[1])]), latent, D_VISIBLE)
    flagged = out["oracle_predictable"].to_numpy()
    return flagged[kind == "visible"].mean(), flagged[noise].mean()


def _unbalanced(prog: pd.DataFrame, rng) -> pd.DataFrame:
    """``prog`` with every driven gene's loadings drawn on their own (no opposite partner)."""
    cols = prog.filter(regex=r"^w_(visible|hidden)_\d+$").columns
    w = prog[cols].to_numpy()
    driven = (w != 0).any(axis=1)
    scale = np.sqrt((w[driven] ** 2).mean(axis=0))
    w[driven] = rng.normal(0, 1, (driven.sum(), len(cols))) * scale * (w[driven] != 0)
    return prog.assign(**dict(zip(cols, w.T)))


def test_vsn_calibration_carries_the_cell_state_to_unplanted_proteins():
    """The mechanism the book names: with a quarter of the proteins moved by the cell state, each
    with its own loadings, around a stimulus mean, vsn's per-sample calibration, fitted to all
    proteins (trimming the 10 % that vary most), moves with the state, and so then do proteins the
    simulator left alone; the same calibration fitted to the unmoved proteins only does not. How
    much depends on the draw of loadings (from about none to half of the unmoved proteins over
    seeds 3-12 here); this seed shows it."""
    rng = np.random.default_rng(6)
    prog = _unbalanced(sim.gene_programme(500, get_profile("quick"), rng), rng)
    state = rng.bit_generator.state
    vis_all, noise_all = _noise_flagged(prog, rng)
    rng.bit_generator.state = state  # the same wells and intensities, the other calibration
    vis_unmoved, noise_unmoved = _noise_flagged(prog, rng, unmoved_reference=True)
    assert vis_all > 0.95 and vis_unmoved > 0.95
    assert noise_all > 0.3
    assert noise_unmoved < 0.05


@pytest.mark.parametrize("seed", [6, 8])
def test_the_simulated_proteome_keeps_vsn_from_carrying_the_state(seed):
    """What the simulator does about it (``gene_programme`` for proteomics): the cell state moves
    16 % of the proteins, with half the transcripts' loadings, in pairs with opposite loadings. On
    draws where a quarter of the proteins moved each on their own passes the state to a third or
    more of the unmoved ones, vsn fitted to all proteins now leaves them flagged at a few per cent."""
    rng = np.random.default_rng(seed)
    quarter = _unbalanced(sim.gene_programme(500, get_profile("quick"), rng), rng)
    _, noise_quarter = _noise_flagged(quarter, np.random.default_rng(seed + 100))
    prog = sim.gene_programme(1000, get_profile("quick"), rng, "proteomics")
    assert (prog["kind"] == "visible").mean() == pytest.approx(0.10)
    w = prog.filter(like="w_visible_").to_numpy()
    assert np.abs(w[prog["kind"] == "visible"].sum(axis=0)).max() < 1e-9  # balanced
    vis, noise = _noise_flagged(prog, np.random.default_rng(seed + 100))
    assert vis > 0.95
    assert noise_quarter > 0.3
    assert noise < 0.08


def test_precision_against_the_labels_counts_oracle_genes():
    per_gene = pd.DataFrame({"omics": "proteomics", "stimulus": "m1", "gene": list("abcd"),
                             "category": "significant", "significant": True, "significant_bh": [True, True, True, False],
                             "kept": True, "r2": [0.5, 0.1, 0.1, 0.0], "test": "perturbation"})
    truth = pd.DataFrame({"omics": "proteomics", "gene": list("abcd"), "kind": ["visible", "noise", "noise", "noise"],
                          "r2_expected": [0.5, 0, 0, 0]})
    oracle = pd.DataFrame({"omics": "proteomics", "stimulus": "m1", "gene": list("abcd"),
                           "oracle_predictable": [True, True, False, True]})
    rec = truth_recovery(per_gene, truth, oracle=oracle).set_index("call").loc["BH"]
    assert rec["precision"] == pytest.approx(1 / 3)
    assert rec["n_called_label_only"] == 1
    assert rec["precision_labels"] == pytest.approx(2 / 3)
    assert rec["n_label_predictable"] == 3
    summary = label_oracle_summary(oracle, truth).set_index(["omics", "stimulus"])
    assert summary.loc[("proteomics", "m1"), "noise %"] == pytest.approx(200 / 3)
    assert "precision_labels" not in truth_recovery(per_gene, truth).columns
