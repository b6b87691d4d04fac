"""CCA of learned and interpretable features (Fig 13): planted correlation, null, ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from i2o_utils.analysis import cca


def _views(n=480, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, 2))  # shared latent state
    X = s @ rng.normal(size=(2, 12)) + 0.5 * rng.normal(size=(n, 12))
    Y = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"noise_{i}" for i in range(8)])
    Y["tied_a"] = s[:, 0] + 0.3 * rng.normal(size=n)
    Y["tied_b"] = s[:, 1] - 0.5 * s[:, 0] + 0.3 * rng.normal(size=n)
    Y["tied_c"] = s[:, 1] + 0.6 * rng.normal(size=n)
    plates = pd.Series([f"P{i % 8}" for i in range(n)])
    wells = pd.DataFrame({"plate": plates, "well_id": [f"W{i}" for i in range(n)]})
    latent = wells.assign(z0=s[:, 0], z1=s[:, 1])
    return X, Y, plates, wells, latent


def _canonical_r1(a, b):
    """Independent computation: largest singular value of Sxx^-1/2 Sxy Syy^-1/2."""
    a = a - a.mean(0)
    b = b - b.mean(0)

    def inv_sqrt(m):
        w, v = np.linalg.eigh(m)
        return v @ np.diag(w ** -0.5) @ v.T
    sxx, syy, sxy = a.T @ a, b.T @ b, a.T @ b
    return np.linalg.svd(inv_sqrt(sxx) @ sxy @ inv_sqrt(syy), compute_uv=False)[0]


def test_cca_recovers_a_planted_correlation_on_held_out_plates():
    X, Y, plates, wells, latent = _views()
    res = cca.fit_cca(X, Y, plates, n_components=3, max_x_dims=12)
    assert res.n_test > 100 and len(res.test_plates) == 3
    assert res.canonical["r_held_out"].iloc[0] > 0.8
    assert set(res.scores["feature"].head(3)) == {"tied_a", "tied_b", "tied_c"}
    assert res.scores.set_index("feature").loc[[f"noise_{i}" for i in range(8)], "similarity"].max() < 0.1
    # first canonical correlation on the training wells equals the textbook SVD computation
    train = ~plates.isin(res.test_plates).to_numpy()
    assert res.canonical["r_train"].iloc[0] == pytest.approx(_canonical_r1(X[train], Y.to_numpy()[train]), abs=2e-3)
    # null: X shuffled against Y on the training wells shares nothing
    null = cca.fit_cca(X, Y, plates, n_components=3, max_x_dims=12, shuffle_x=True)
    assert abs(null.canonical["r_held_out"].iloc[0]) < 0.25


def test_latent_ties_and_ranking_check():
    X, Y, plates, wells, latent = _views()
    ties = cca.latent_ties(Y, wells, latent, visible=2)
    t = ties.set_index("feature")["tie_to_latent"]
    assert t["tied_a"] > 0.8 and t["noise_0"] < 0.05
    res = cca.fit_cca(X, Y, plates, n_components=3)
    chk = cca.ranking_check(res.scores, ties, top=3)
    assert chk["AUC tied vs untied"].iloc[0] == 1.0
    assert chk["spearman(similarity, tie)"].iloc[0] > 0.5


def test_align_and_clean():
    emb = pd.DataFrame({"Metadata_plate": ["P1", "P1", "P2"], "Metadata_well_id": ["A01", "A02", "A01"],
                        "Metadata_target": ["NT", "STAT1", "NT"], "emb_000": [1.0, 2.0, 3.0]})
    feats = pd.DataFrame({"Metadata_Plate": ["P1", "P2", "P3"], "Metadata_Well": ["A01", "A01", "A01"],
                          "f": [1.0, np.nan, 2.0], "const": 1.0, "mostly_nan": [np.nan, np.nan, 1.0]})
    X, Y, wells = cca.align_wells(emb, feats)
    assert wells["plate"].tolist() == ["P1", "P2"] and X["emb_000"].tolist() == [1.0, 3.0]
    Yc, dropped = cca.clean_features(Y)
    assert list(Yc.columns) == [] and set(dropped) == {"f", "const", "mostly_nan"}
    Yc, dropped = cca.clean_features(pd.DataFrame({"f": [1.0, np.nan, 3.0, 5.0, 7.0], "const": 1.0}), max_missing=0.3)
    assert Yc["f"].tolist() == [1.0, 4.0, 3.0, 5.0, 7.0] and dropped == ["const"]
    with pytest.raises(ValueError, match="no well is in both"):
        cca.align_wells(emb, feats.assign(Metadata_Plate="Q"))
