"""SMAPE and r² against hand-computed values and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from i2o_utils.evaluation.metrics import (
    is_constant,
    mean_predictor_smape,
    n_valid_wells,
    r2,
    smape,
    smape_per_well,
)


def test_smape_per_well_hand_computed():
    a = np.array([1.0, 2.0, 0.0, -1.0, 3.0])
    f = np.array([1.0, 4.0, 0.0, 1.0, 0.0])
    # 0; |4-2|/(2+4) = 1/3; both zero -> 0; |1+1|/(1+1) = 1; |0-3|/(3+0) = 1
    expected = 100 * np.array([0.0, 1 / 3, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(smape_per_well(a, f), expected)
    assert smape(a, f) == pytest.approx(expected.mean())


def test_smape_range_and_symmetry():
    rng = np.random.default_rng(0)
    a, f = rng.normal(size=(50, 7)), rng.normal(size=(50, 7))
    s = smape_per_well(a, f)
    assert (s >= 0).all() and (s <= 100).all()
    np.testing.assert_allclose(s, smape_per_well(f, a))


def test_smape_skips_missing_wells_per_gene():
    a = np.array([[1.0, 1.0], [2.0, np.nan], [4.0, 4.0]])
    f = np.array([[1.0, 3.0], [1.0, 2.0], [np.inf, 4.0]])
    np.testing.assert_array_equal(n_valid_wells(a, f), [2, 2])
    # gene 0: wells 0, 1 -> (0 + 100/3) / 2; gene 1: wells 0, 2 -> (50 + 0) / 2
    np.testing.assert_allclose(smape(a, f), [100 / 6, 25.0])
    assert np.isnan(smape(np.full((2, 1), np.nan), np.ones((2, 1))))[0]


def test_mean_predictor_smape_broadcasts_the_train_mean():
    a = np.array([[1.0, 10.0], [3.0, 30.0]])
    m = np.array([2.0, 20.0])
    np.testing.assert_allclose(mean_predictor_smape(a, m), [100 * (1 / 3 + 1 / 5) / 2] * 2)


def test_r2_matches_linregress_per_gene():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 30))
    f = 0.5 * a + rng.normal(size=(40, 30))
    got = r2(a, f)
    want = [stats.linregress(a[:, g], f[:, g]).rvalue ** 2 for g in range(30)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_r2_hand_computed_and_pairwise_missing():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2(x[:, None], (-2 * x + 1)[:, None])[0] == pytest.approx(1.0)
    # r for (1,2,3) vs (1,3,2) is 0.5 -> r² 0.25; the NaN well is left out
    a = np.array([[1.0], [2.0], [3.0], [np.nan]])
    f = np.array([[1.0], [3.0], [2.0], [7.0]])
    assert r2(a, f)[0] == pytest.approx(0.25)


def test_r2_is_nan_for_constant_genes_not_zero():
    a = np.array([[1.0, 1.0, 0.3], [1.0, 2.0, 0.3], [1.0, 3.0, 0.3]])
    f = np.array([[0.0, 5.0, 1.0], [1.0, 5.0, 2.0], [2.0, 5.0, 3.0]])
    out = r2(a, f)
    assert np.isnan(out).all()
    np.testing.assert_array_equal(is_constant(a), [True, False, True])
    # a single valid well is also undefined
    assert np.isnan(r2(np.array([[1.0], [np.nan]]), np.array([[2.0], [3.0]])))[0]
