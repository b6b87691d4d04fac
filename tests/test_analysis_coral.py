"""CORAL: covariance matching, identity when source = target, agreement with the reference form."""

import numpy as np
import pandas as pd
import pytest
from scipy import linalg

from i2o_utils.analysis.coral import coral_align_plates, fit_coral, regularised_covariance


def _data(rng, n, d, scale, shift):
    a = rng.normal(size=(d, d)) * scale
    return rng.normal(size=(n, d)) @ a + shift


def test_source_covariance_becomes_target_covariance():
    rng = np.random.default_rng(0)
    src = _data(rng, 4000, 5, 3.0, 2.0)
    tgt = _data(rng, 3000, 5, 1.5, -1.0)
    t = fit_coral(src, tgt, reg=1e-9)
    out = t(src)
    np.testing.assert_allclose(np.cov(out, rowvar=False), np.cov(tgt, rowvar=False), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(out.mean(axis=0), tgt.mean(axis=0), atol=1e-9)
    # with the paper's +identity the map is still exact for the regularised covariances:
    # cov(out) = C_T^(1/2) (I - reg C_S^-1) C_T^(1/2), C = cov + reg I
    t1 = fit_coral(src, tgt, reg=1.0)
    cs, ct = regularised_covariance(src, 1.0), regularised_covariance(tgt, 1.0)
    ct_half = linalg.sqrtm(ct).real
    want = ct_half @ (np.eye(5) - np.linalg.inv(cs)) @ ct_half
    np.testing.assert_allclose(np.cov(t1(src), rowvar=False), want, rtol=1e-6, atol=1e-8)


def test_identity_when_source_is_target():
    rng = np.random.default_rng(1)
    x = _data(rng, 50, 8, 2.0, 1.0)
    for center in (True, False):
        np.testing.assert_allclose(fit_coral(x, x, reg=1.0, center=center)(x), x, atol=1e-9)


def test_matches_reference_implementation_without_centring():
    # Sun et al. (2016) Algorithm 1 as written in the reference code: Ds * Cs^-1/2 * Ct^1/2
    rng = np.random.default_rng(2)
    src, tgt = _data(rng, 40, 6, 1.0, 0.5), _data(rng, 60, 6, 2.0, 0.0)
    cs = np.cov(src.T) + np.eye(6)
    ct = np.cov(tgt.T) + np.eye(6)
    ref = src @ linalg.sqrtm(np.linalg.inv(cs)).real @ linalg.sqrtm(ct).real
    np.testing.assert_allclose(fit_coral(src, tgt, reg=1.0, center=False)(src), ref, rtol=1e-8, atol=1e-10)


def test_align_plates_removes_plate_shift_and_checks_input():
    rng = np.random.default_rng(3)
    d, rows = 4, []
    emb = []
    for p, (shift, scale) in enumerate([(0.0, 1.0), (3.0, 2.0), (-2.0, 0.5)]):
        for i in range(60):
            target = "NT" if i < 30 else f"KO{i % 3}"
            rows.append((f"P{p}", target))
            emb.append(rng.normal(size=d) * scale + shift + (1.0 if target != "NT" else 0.0))
    wells = pd.DataFrame(rows, columns=["plate", "target"])
    emb = np.array(emb)
    out = coral_align_plates(emb, wells, reg=1e-6)
    nt = (wells["target"] == "NT").to_numpy()
    means = [out[(wells["plate"] == p).to_numpy() & nt].mean(axis=0) for p in ("P0", "P1", "P2")]
    np.testing.assert_allclose(means[0], means[1], atol=1e-8)
    np.testing.assert_allclose(means[0], means[2], atol=1e-8)
    covs = [np.cov(out[(wells["plate"] == p).to_numpy() & nt], rowvar=False) for p in ("P0", "P1", "P2")]
    np.testing.assert_allclose(covs[1], covs[0], rtol=1e-4, atol=1e-6)
    # a knock-out's shift relative to NT survives (scaled by the plate's transform)
    ko = ~nt & (wells["plate"] == "P1").to_numpy()
    assert (out[ko].mean(axis=0) - means[1]).mean() > 0.2
    bad = wells.copy()
    bad.loc[(bad["plate"] == "P2") & (bad["target"] == "NT"), "target"] = "KO9"
    with pytest.raises(ValueError, match="plate P2"):
        coral_align_plates(emb, bad)
    with pytest.raises(ValueError, match="column 'plate'"):
        coral_align_plates(emb, wells.rename(columns={"plate": "x"}))


def test_target_within_stimulus_keeps_stimuli_apart():
    rng = np.random.default_rng(4)
    rows, emb = [], []
    for p, stim in enumerate(["m1", "m1", "m2", "m2"]):
        for i in range(40):
            rows.append((f"P{p}", "NT" if i < 20 else "KO", stim))
            emb.append(rng.normal(size=3) + (5.0 if stim == "m2" else 0.0) + p * 0.5)
    wells = pd.DataFrame(rows, columns=["plate", "target", "cell_state"])
    emb = np.array(emb)
    m2 = (wells["cell_state"] == "m2").to_numpy()
    pooled = coral_align_plates(emb, wells, reg=1e-6)
    within = coral_align_plates(emb, wells, reg=1e-6, target_by="cell_state")
    gap = lambda z: np.linalg.norm(z[m2].mean(axis=0) - z[~m2].mean(axis=0))  # noqa: E731
    assert gap(pooled) < 1.5 < 7.0 < gap(within)  # the pooled target erases the stimulus (8.7 apart), per stimulus keeps it
    bad = wells.assign(cell_state=np.where(np.arange(len(wells)) % 2, "m1", "m2"))
    with pytest.raises(ValueError, match="several values"):
        coral_align_plates(emb, bad, target_by="cell_state")
