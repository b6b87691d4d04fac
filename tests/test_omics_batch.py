"""remove_batch_effect against limma's removeBatchEffect, computed independently.

limma (``removeBatchEffect``, limma 3.x) fits ``lmFit(x, cbind(design, X.batch))`` with
``contr.sum`` contrasts for the batch factors and returns ``x - beta_batch %*% t(X.batch)``.
The references here do not use the implementation's design code:

* known answers: with an intercept design and one batch factor, sum-to-zero contrasts make the
  intercept the unweighted mean of the batch means, so the correction is ``x - (batch mean -
  mean of the batch means)``; with equal batch sizes that is ``x - batch mean + grand mean``; a
  balanced two-way layout removes each factor's marginal mean minus the grand mean;
* a second formulation: per gene, ``numpy.linalg.lstsq`` on a treatment-coded design (dummies for
  levels 2..K), whose batch coefficients ``d_j`` (``d_1 = 0``) give limma's sum-to-zero effects as
  ``d_j - mean(d)``; genes with missing values are fitted on their observed samples (as lmFit).
"""

import numpy as np
import pandas as pd
import pytest

from i2o_utils.omics import OmicsInputError, remove_batch_effect, sum_to_zero_contrasts


def treatment_dummies(labels):
    levels = sorted(set(labels))
    lab = np.asarray(labels)
    return np.column_stack([(lab == lev).astype(float) for lev in levels[1:]]), levels


def reference_lstsq(x, batch, batch2=None, covariates=None, design=None):
    """limma's answer by per-gene least squares on a treatment-coded design."""
    n, g = x.shape
    D = np.ones((n, 1)) if design is None else np.asarray(design, float)
    blocks, sizes = [], []
    for f in (batch, batch2):
        if f is not None:
            d, levels = treatment_dummies(f)
            blocks.append(d)
            sizes.append(len(levels))
    cov = np.zeros((n, 0)) if covariates is None else np.asarray(covariates, float).reshape(n, -1)
    X = np.column_stack([D] + blocks + [cov])
    out = np.full_like(x, np.nan)
    for j in range(g):
        obs = ~np.isnan(x[:, j])
        coef = np.linalg.lstsq(X[obs], x[obs, j], rcond=None)[0]
        effect = np.zeros(n)
        pos = D.shape[1]
        for f, k in zip([f for f in (batch, batch2) if f is not None], sizes):
            d = np.concatenate([[0.0], coef[pos:pos + k - 1]])
            idx = np.searchsorted(sorted(set(f)), np.asarray(f))
            effect += d[idx] - d.mean()
            pos += k - 1
        effect += cov @ coef[pos:]
        out[obs, j] = x[obs, j] - effect[obs]
    return out


def test_contr_sum_coding_matches_r():
    m, levels = sum_to_zero_contrasts(["b", "a", "c", "a", "c"])
    assert levels == ["a", "b", "c"]
    # R: contr.sum(3) rows a=(1,0), b=(0,1), c=(-1,-1)
    np.testing.assert_array_equal(m, [[0, 1], [1, 0], [-1, -1], [1, 0], [-1, -1]])


def test_balanced_one_factor_subtracts_batch_mean_adds_grand_mean():
    rng = np.random.default_rng(0)
    batch = np.repeat(["P1", "P2", "P3"], 4)
    x = rng.normal(size=(12, 7)) + np.repeat([0.0, 3.0, -2.0], 4)[:, None]
    got = remove_batch_effect(x, batch)
    means = np.stack([x[batch == b].mean(axis=0) for b in ["P1", "P2", "P3"]])
    expect = x - means[np.searchsorted(["P1", "P2", "P3"], batch)] + x.mean(axis=0)
    np.testing.assert_allclose(got, expect, atol=1e-10)


def test_unbalanced_one_factor_keeps_mean_of_batch_means():
    rng = np.random.default_rng(1)
    batch = np.array(["A"] * 2 + ["B"] * 5 + ["C"] * 3)
    x = rng.normal(size=(10, 4))
    got = remove_batch_effect(x, batch)
    levels = ["A", "B", "C"]
    means = np.stack([x[batch == b].mean(axis=0) for b in levels])
    expect = x - (means[np.searchsorted(levels, batch)] - means.mean(axis=0))
    np.testing.assert_allclose(got, expect, atol=1e-10)


def test_balanced_two_way_removes_both_marginal_effects():
    rng = np.random.default_rng(2)
    plate = np.tile(np.repeat(["P1", "P2"], 3), 2)
    tmt = np.repeat(["T1", "T2"], 6)
    x = rng.normal(size=(12, 5))
    got = remove_batch_effect(x, plate, tmt)
    grand = x.mean(axis=0)
    pm = {p: x[plate == p].mean(axis=0) for p in ["P1", "P2"]}
    tm = {t: x[tmt == t].mean(axis=0) for t in ["T1", "T2"]}
    expect = x - np.stack([pm[p] - grand for p in plate]) - np.stack([tm[t] - grand for t in tmt])
    np.testing.assert_allclose(got, expect, atol=1e-10)


def test_matches_lstsq_reference_with_design_covariates_and_missing_values():
    rng = np.random.default_rng(4)
    n, g = 40, 30
    batch = rng.choice(["P1", "P2", "P3"], n)
    batch2 = rng.choice(["T1", "T2", "T3", "T4"], n)
    group = rng.choice(["g1", "g2"], n)
    design = np.column_stack([np.ones(n), (group == "g2").astype(float)])
    cov = rng.normal(size=(n, 1))
    x = rng.normal(size=(n, g)) + 2 * (batch == "P2")[:, None] + 0.5 * cov
    x[rng.random((n, g)) < 0.08] = np.nan
    x[:, :5] = np.nan_to_num(x[:, :5], nan=0.3)  # some complete genes too
    got = remove_batch_effect(x, batch, batch2, covariates=cov, design=design, allow_nan=True)
    expect = reference_lstsq(x, batch, batch2, cov, design)
    np.testing.assert_allclose(got, expect, atol=1e-8)
    assert np.array_equal(np.isnan(got), np.isnan(x))


def test_genes_missing_few_many_or_a_whole_batch_match_the_reference():
    # few missing values (k <= q: the Woodbury update), many (k > q: downdated normal equations),
    # a whole multiplex missing (ill conditioned: QR with the aliased column dropped)
    rng = np.random.default_rng(12)
    n, q = 150, 1 + 2 + 9
    batch = rng.choice(["P1", "P2", "P3"], n)
    batch2 = rng.choice([f"T{i}" for i in range(10)], n)
    x = rng.normal(size=(n, 60)) + rng.normal(0, 2, 3)[np.searchsorted(["P1", "P2", "P3"], batch)][:, None]
    x[:, :20][rng.random((n, 20)) < 0.03] = np.nan
    x[:, 20:40][rng.random((n, 20)) < 0.4] = np.nan
    k = np.isnan(x).sum(axis=0)
    assert (k[:20] <= q).all() and (k[20:40] > q).all()
    x[batch2 == "T3", 40:] = np.nan
    got = remove_batch_effect(x, batch, batch2, allow_nan=True)
    np.testing.assert_allclose(got[:, :40], reference_lstsq(x[:, :40], batch, batch2), atol=1e-8)
    assert np.array_equal(np.isnan(got), np.isnan(x))
    # a multiplex missing everywhere in a gene: on the other rows one multiplex contrast is a
    # combination of the columns before it. R's pivoting (left to right) drops the last one,
    # T8's (T3's own column is -1 on T9 rows there, still independent): coefficient 0
    obs = batch2 != "T3"
    X = np.column_stack([np.ones(n), sum_to_zero_contrasts(batch)[0], sum_to_zero_contrasts(batch2)[0]])
    keep = np.ones(X.shape[1], bool)
    keep[-1] = False
    beta = np.zeros(X.shape[1])
    beta[keep] = np.linalg.lstsq(X[obs][:, keep], x[obs, 45], rcond=None)[0]
    np.testing.assert_allclose(got[obs, 45], x[obs, 45] - X[obs, 1:] @ beta[1:], atol=1e-8)


def test_ill_conditioned_and_regular_genes_with_as_many_missing_values_are_each_fitted_right():
    # genes with the same number k <= q of missing values are solved together: here 10 miss a whole
    # multiplex (aliased: QR, R's rule drops the last contrast) and 20 miss 10 values at random
    rng = np.random.default_rng(13)
    n = 200
    batch = rng.choice(["P1", "P2"], n)
    batch2 = np.repeat([f"T{i:02d}" for i in range(20)], 10)
    x = rng.normal(size=(n, 30)) + 2 * (batch == "P2")[:, None] + rng.normal(0, 1, 20)[np.arange(n) // 10, None]
    x[batch2 == "T03", :10] = np.nan
    for j in range(10, 30):
        x[rng.choice(n, 10, replace=False), j] = np.nan
    got = remove_batch_effect(x, batch, batch2, allow_nan=True)
    np.testing.assert_allclose(got[:, 10:], reference_lstsq(x[:, 10:], batch, batch2), atol=1e-8)
    obs = batch2 != "T03"
    X = np.column_stack([np.ones(n), sum_to_zero_contrasts(batch)[0], sum_to_zero_contrasts(batch2)[0]])
    keep = np.ones(X.shape[1], bool)
    keep[-1] = False
    for j in range(10):
        beta = np.zeros(X.shape[1])
        beta[keep] = np.linalg.lstsq(X[obs][:, keep], x[obs, j], rcond=None)[0]
        np.testing.assert_allclose(got[obs, j], x[obs, j] - X[obs, 1:] @ beta[1:], atol=1e-8)


def test_nested_multiplexes_drop_the_aliased_column_like_r():
    # TMT multiplexes nested in plates: the plate contrast is a sum of multiplex contrasts.
    # R's pivoted QR keeps the columns in order and drops the last multiplex contrast; the
    # corrected data then have equal multiplex means (the multiplex model is saturated).
    rng = np.random.default_rng(5)
    plate = np.repeat(["P1", "P2"], 12)
    tmt = np.repeat(["T1", "T2", "T3", "T4"], 6)
    x = rng.normal(size=(24, 6)) + np.repeat([0.0, 1.0, 4.0, 2.0], 6)[:, None]
    got = remove_batch_effect(x, plate, tmt)
    means = np.stack([got[tmt == t].mean(axis=0) for t in ["T1", "T2", "T3", "T4"]])
    np.testing.assert_allclose(means, np.broadcast_to(means[0], means.shape), atol=1e-10)
    # the kept intercept: lstsq on R's kept columns [1, plate, T1-T4, T2-T4]
    cp, _ = sum_to_zero_contrasts(plate)
    ct, _ = sum_to_zero_contrasts(tmt)
    X = np.column_stack([np.ones(24), cp, ct[:, :2]])
    beta = np.linalg.lstsq(X, x, rcond=None)[0]
    np.testing.assert_allclose(got, x - X[:, 1:] @ beta[1:], atol=1e-8)


def test_gene_missing_a_whole_batch_is_fitted_on_what_remains():
    rng = np.random.default_rng(6)
    batch = np.repeat(["A", "B", "C"], 5)
    x = rng.normal(size=(15, 3)) + np.repeat([0.0, 2.0, -1.0], 5)[:, None]
    x[batch == "B", 1] = np.nan
    got = remove_batch_effect(x, batch, allow_nan=True)
    # gene 1: the B contrast is aliased on A and C rows -> only [1, A-C] is fitted
    obs = batch != "B"
    cA = np.where(batch == "A", 1.0, np.where(batch == "C", -1.0, 0.0))
    X = np.column_stack([np.ones(15), cA])[obs]
    beta = np.linalg.lstsq(X, x[obs, 1], rcond=None)[0]
    np.testing.assert_allclose(got[obs, 1], x[obs, 1] - cA[obs] * beta[1], atol=1e-10)
    np.testing.assert_allclose(got[:, 0], reference_lstsq(x[:, :1], batch)[:, 0], atol=1e-10)


def test_no_batch_returns_input_unchanged():
    x = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(remove_batch_effect(x), x)


def test_dataframe_with_series_batch_aligned_by_sample():
    rng = np.random.default_rng(7)
    x = pd.DataFrame(rng.normal(size=(6, 3)), index=[f"w{i}" for i in range(6)], columns=list("abc"))
    batch = pd.Series(["P1", "P1", "P1", "P2", "P2", "P2"], index=x.index)
    shuffled = batch.iloc[::-1]
    got = remove_batch_effect(x, shuffled)
    assert isinstance(got, pd.DataFrame) and list(got.index) == list(x.index)
    np.testing.assert_allclose(got.to_numpy(), remove_batch_effect(x.to_numpy(), batch.to_numpy()), atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch": ["P1", "P2"]}, "2 labels for 4 samples"),
    ({"batch": ["P1", None, "P2", "P2"]}, "missing label for sample 1"),
    ({"batch": ["P1", "P1", "P2", "P2"], "design": np.ones((3, 1))}, "does not match 4 samples"),
])
def test_batch_labels_that_do_not_match_samples_raise(kwargs, message):
    with pytest.raises(OmicsInputError, match=message):
        remove_batch_effect(np.zeros((4, 2)), **kwargs)


def test_series_batch_missing_a_sample_raises():
    x = pd.DataFrame(np.zeros((3, 2)), index=["w1", "w2", "w3"])
    with pytest.raises(OmicsInputError, match="no label for sample"):
        remove_batch_effect(x, pd.Series(["P1", "P2"], index=["w1", "w2"]))


def test_non_finite_values_raise():
    x = np.zeros((4, 2))
    x[2, 1] = np.nan
    with pytest.raises(OmicsInputError, match="NaN value in sample 2, gene 1"):
        remove_batch_effect(x, ["a", "a", "b", "b"])
    x[2, 1] = np.inf
    with pytest.raises(OmicsInputError, match="infinite"):
        remove_batch_effect(x, ["a", "a", "b", "b"], allow_nan=True)


def test_one_level_batch_returns_the_data_without_fitting(monkeypatch):
    """A batch of one level has no contrast: the data come back as they are, with no per-gene fit
    of the genes with missing values (a screen of one plate would otherwise pay for one)."""
    import i2o_utils.omics.batch as batch

    monkeypatch.setattr(batch, "_fit_missing", lambda *a, **k: pytest.fail("fitted a one-level batch"))
    v = np.random.default_rng(0).normal(size=(12, 40))
    v[0, :25] = np.nan
    np.testing.assert_array_equal(remove_batch_effect(v, batch=["p1"] * 12, allow_nan=True), v)
