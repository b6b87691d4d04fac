"""vsn: likelihood, optimiser, robust fit, and the variance stabilisation itself.

Reference values (``PORT_*``) were computed with the PyPI package ``vsn`` 0.1.1 (a Python port of
R/Bioconductor ``vsn::vsnMatrix``, which reports agreement with R's ``justvsn``) on the
deterministic matrix of :func:`fixture` below, as ``vsn_matrix(y.T, lts_quantile=0.9)`` (R's
default stopping rules: ``PORT_DEFAULT_*``) and with ``optimpar=dict(factr=1.0, pgtol=1e-12)``
(run to the optimum: ``PORT_OPT_*``). That package is not a dependency of this project.
"""

import numpy as np
import pandas as pd
import pytest

from i2o_utils.omics import OmicsInputError, vsn_fit
from i2o_utils.omics.vsn import mean_sd_slope, mean_sd_trend, negative_profile_loglik, vsn

PORT_DEFAULT_OFFSET = [-0.7503736399, -0.6794056458, -0.6962588611, -0.7435151297, -0.8502439925,
                       -0.8806102844, -0.7877151643, -0.6890640969, -0.721644342, -0.6995932992]
PORT_DEFAULT_LOG_SCALE = [-5.4092110157, -5.5496584513, -5.8313111965, -6.0190471891, -5.9060829138,
                          -5.632937845, -5.4127051417, -5.4988810282, -5.8418337547, -6.0068736175]
PORT_DEFAULT_HOFFSET = -7.239021055736444
PORT_DEFAULT_HX = [[5.960573759822806, 6.063431949974751], [6.004488585218008, 5.956382887632131]]
"""hx of samples 0-1 (rows) for proteins 0-1 (columns), glog2 scale."""

PORT_OPT_OFFSET = [-0.753584853, -0.6823432106, -0.6992631155, -0.7466833984, -0.8537591755,
                   -0.8842282577, -0.7910496905, -0.6920222397, -0.7247217168, -0.7026026859]
PORT_OPT_LOG_SCALE = [-5.4058244522, -5.5462655884, -5.8279254798, -6.015687212, -5.9027297083,
                      -5.6295462548, -5.4093373164, -5.4955084403, -5.8384346444, -6.0034978726]
PORT_OPT_HOFFSET = -7.234146883962832
PORT_OPT_HX = [[5.951554711052783, 6.054560404229556], [5.995562545143787, 5.94738940198562]]


def fixture() -> np.ndarray:
    """10 samples x 60 proteins from the vsn model with per-sample calibration; 3 noisy proteins."""
    n, g = 10, 60
    i = np.arange(n)[:, None]
    k = np.arange(g)[None, :]
    mu = -0.5 + 6.5 * k / (g - 1)
    a = 0.2 * np.sin(i)
    b = -5 + 0.3 * np.cos(i)
    eps = 0.1 * np.sin(1.7 * i + 2.3 * k + 0.5 * i * k)
    eps = np.where(np.isin(k, [5, 23, 41]), 8 * eps, eps)
    return (np.sinh(mu + eps) - a) / np.exp(b)


def test_matches_reference_port_with_r_settings():
    fit = vsn_fit(fixture(), lts_quantile=0.9)
    np.testing.assert_allclose(fit.offset, PORT_DEFAULT_OFFSET, atol=1e-7)
    np.testing.assert_allclose(fit.log_scale, PORT_DEFAULT_LOG_SCALE, atol=1e-7)
    assert abs(fit.hoffset - PORT_DEFAULT_HOFFSET) < 1e-7
    np.testing.assert_allclose(fit.transform(fixture())[:2, :2], PORT_DEFAULT_HX, atol=1e-7)


def test_matches_reference_port_at_the_optimum():
    fit = vsn_fit(fixture(), lts_quantile=0.9, factr=10.0, pgtol=1e-12)
    np.testing.assert_allclose(fit.offset, PORT_OPT_OFFSET, atol=1e-6)
    np.testing.assert_allclose(fit.log_scale, PORT_OPT_LOG_SCALE, atol=1e-6)
    assert abs(fit.hoffset - PORT_OPT_HOFFSET) < 1e-6
    np.testing.assert_allclose(fit.transform(fixture())[:2, :2], PORT_OPT_HX, atol=1e-6)


def test_gradient_matches_finite_differences():
    y = fixture()
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.1, 10), rng.normal(-5.5, 0.1, 10)
    _, grad, _, _ = negative_profile_loglik(y, a, b, engine="numpy")
    num = np.empty(20)
    for j in range(20):
        e = np.zeros(20)
        e[j] = 1e-6
        fp = negative_profile_loglik(y, a + e[:10], b + e[10:], engine="numpy")[0]
        fm = negative_profile_loglik(y, a - e[:10], b - e[10:], engine="numpy")[0]
        num[j] = (fp - fm) / 2e-6
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-3)


def test_profile_estimates_are_the_ml_ones():
    y = fixture()
    a, b = np.zeros(10), np.full(10, -5.0)
    _, _, mu, sigsq = negative_profile_loglik(y, a, b, engine="numpy")
    h = np.arcsinh(np.exp(b)[:, None] * y + a[:, None])
    np.testing.assert_allclose(mu, h.mean(axis=0))
    assert sigsq == pytest.approx(((h - h.mean(axis=0)) ** 2).mean())


def test_compiled_and_numpy_likelihoods_agree():
    y = fixture()
    y[3, 7] = np.nan
    a, b = np.linspace(-0.2, 0.2, 10), np.linspace(-5.5, -5.0, 10)
    f1, g1, mu1, s1 = negative_profile_loglik(y, a, b, engine="numpy")
    f2, g2, mu2, s2 = negative_profile_loglik(y, a, b, engine="numba")
    assert f2 == pytest.approx(f1, rel=1e-12)
    np.testing.assert_allclose(g2, g1, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mu2, mu1, rtol=1e-12)


def test_recovers_the_calibration_of_data_from_the_model():
    rng = np.random.default_rng(11)
    n, g = 8, 300
    mu = rng.uniform(-1, 7, g)
    a, b = rng.normal(0, 0.3, n), rng.normal(-4, 0.3, n)
    y = (np.sinh(mu[None] + rng.normal(0, 0.05, (n, g))) - a[:, None]) / np.exp(b[:, None])
    fit = vsn_fit(y, lts_quantile=1.0)
    # the common level of all (a, b) is weakly determined; the per-sample calibration is not
    assert np.std(fit.log_scale - b) < 0.01
    assert np.std(fit.offset - a) < 0.05
    assert np.corrcoef(fit.offset, a)[0, 1] > 0.999
    assert np.sqrt(fit.sigsq) == pytest.approx(0.05, rel=0.1)


def test_variance_is_stabilised_for_additive_multiplicative_noise():
    rng = np.random.default_rng(2)
    base = rng.normal(np.log(2e4), 1.2, 800)
    load = np.exp(rng.normal(0, 0.1, 24))[:, None]
    y = np.exp(base[None] + rng.normal(0, 0.1, (24, 800))) * load + rng.normal(0, 400, (24, 800))
    hx = vsn(y)
    assert mean_sd_slope(y) > 2  # raw: sd grows with the mean
    assert abs(mean_sd_slope(hx)) < 0.15  # vsn: flat
    with np.errstate(invalid="ignore"):
        assert mean_sd_slope(np.log2(np.where(y > 0, y, np.nan))) < -0.15  # log: inflated at the low end


def test_missing_values_stay_missing_and_all_missing_proteins_are_skipped():
    y = fixture()
    y[2, 10] = np.nan
    y[:, 20] = np.nan
    fit = vsn_fit(y)
    hx = fit.transform(y)
    assert np.array_equal(np.isnan(hx), np.isnan(y))
    assert np.isnan(fit.mu[20])


def test_dataframe_round_trip():
    y = pd.DataFrame(fixture(), index=[f"w{i}" for i in range(10)], columns=[f"p{k}" for k in range(60)])
    hx = vsn(y)
    assert isinstance(hx, pd.DataFrame) and hx.index.equals(y.index) and hx.columns.equals(y.columns)


def test_subsample_is_reproducible():
    y = np.tile(fixture(), (1, 2)) * np.repeat([1.0, 1.01], 60)[None]
    f1 = vsn_fit(y, subsample=70, seed=3)
    f2 = vsn_fit(y, subsample=70, seed=3)
    np.testing.assert_array_equal(f1.offset, f2.offset)
    assert f1.n_fitted <= 70


def test_mean_sd_trend_is_sorted_by_mean():
    df = mean_sd_trend(fixture())
    assert df["mean"].is_monotonic_increasing and list(df["rank"]) == list(range(1, 61))


@pytest.mark.parametrize("mutate, message", [
    (lambda y: y.__setitem__((1, 1), np.inf), "infinite value in sample 1, gene 1"),
    (lambda y: y.__setitem__(4, np.nan), "all-zero \\(or all-missing\\) sample"),
])
def test_bad_input_raises(mutate, message):
    y = fixture()
    mutate(y)
    with pytest.raises(OmicsInputError, match=message):
        vsn_fit(y)


def test_too_few_proteins_or_samples_raise():
    with pytest.raises(OmicsInputError, match="more than 42"):
        vsn_fit(fixture()[:, :42])
    with pytest.raises(OmicsInputError, match="at least 2 samples"):
        vsn_fit(fixture()[:1])
