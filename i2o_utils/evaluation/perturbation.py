"""A calibrated test at the unit the labels vary at: the perturbation (beyond the paper).

Every well of one perturbation shares one label (the omics wells of the screen are not the
imaging wells: the label of an imaging well is the mean of its perturbation's omics wells), so
the test wells of a split are not independent samples; the paper's two tests treat them as if
they were and reject far too often on a screen without signal. Here the unit of inference is
the perturbation:

1. per split and gene, the measured and the predicted values are averaged over the test wells
   of each test perturbation (:func:`group_means`);
2. the statistic is the number of concordant minus discordant pairs of perturbations (Kendall's
   tau) between measured and predicted means, and the null distribution is that of **permuting
   the predictions between the test perturbations** (whole blocks of wells at once): with no
   information in the images about a gene, the assignment of predicted to measured perturbation
   means is exchangeable. Kendall's statistic is a rank statistic, so this permutation
   distribution is the same for every gene: the distribution of the number of inversions of a
   random permutation (Mahonian numbers), computed exactly once per number of perturbations
   (:func:`inversions_cdf`). The p-value ``P(D <= d_observed)`` is therefore exact, with a
   resolution of 1/n! (no Monte Carlo error, no floor at 1/B), and vectorised over genes.
   A gene with tied perturbation means (rare: a constant gene) falls back to scipy's
   ``kendalltau`` for that gene (normal approximation with tie-corrected variance).
3. over the splits (:func:`pooled_perturbation_test`, the gene's p-value): every perturbation's
   out-of-fold prediction is the mean of its predicted perturbation means over the splits that
   test it, and one exact permutation test of Kendall's tau runs over all perturbations tested
   at least once (about 137 of 157 with 10 splits, against 31 in one split). Its level is
   shown on null screens and on a cross-fitted null fixture in the tests (at or below alpha),
   not guaranteed by construction: the out-of-fold predictions of different perturbations share
   training labels. Twice the median of
   the split p-values (:func:`combine_splits`; Meinshausen, Meier & Bühlmann 2009, quantile
   aggregation with gamma = 1/2) is valid under any dependence between splits (the median of
   p-values is not) but has far less power; it is reported beside it;
4. Benjamini–Hochberg over genes (:func:`~i2o_utils.evaluation.significance.benjamini_hochberg`).

The null hypothesis is "the predictions carry no information about which test perturbation has
the higher abundance", i.e. the images do not predict the gene beyond chance. Ranking more than
magnitude, the test does not claim that the model's error is below the mean predictor's: the
out-of-sample R² against the mean predictor at the perturbation level,
``1 - SSE(model) / SSE(train-fold mean)`` (:func:`oos_r2`), is reported beside it for that.

Provenance: Kendall (1938) for the statistic and its exact null distribution; the exact
distribution is checked against ``scipy.stats.kendalltau(method="exact")`` and against an
explicit enumeration of block permutations of the predictions in ``tests/``.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "PERTURBATION_TEST",
    "group_indicator",
    "group_means",
    "inversions_cdf",
    "kendall_greater",
    "oos_r2",
    "combine_splits",
    "block_permutation",
    "pooled_perturbation_test",
]

PERTURBATION_TEST = "perturbation"
"""Short name of the calibrated test (``test="perturbation"``)."""


def group_indicator(groups) -> tuple[np.ndarray, np.ndarray]:
    """Unique groups (sorted) and the (wells, groups) 0/1 indicator matrix (float64)."""
    groups = np.asarray(groups).astype(str)
    uniq, inv = np.unique(groups, return_inverse=True)
    a = np.zeros((len(groups), len(uniq)))
    a[np.arange(len(groups)), inv] = 1.0
    return uniq, a


def group_means(values: np.ndarray, indicator: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean of ``values`` (rows = genes, columns = wells) over the wells of each group.

    ``indicator`` is (wells, groups) from :func:`group_indicator`. Wells where ``valid`` is
    False (default: where ``values`` is not finite) are left out; a group without a valid well
    is NaN for that gene. Returns (genes, groups).
    """
    values = np.asarray(values, dtype=np.float64)
    if valid is None:
        valid = np.isfinite(values)
    s = np.where(valid, values, 0.0) @ indicator
    n = valid.astype(np.float64) @ indicator
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


@lru_cache(maxsize=None)
def inversions_cdf(n: int) -> np.ndarray:
    """``P(D <= k)``, k = 0 .. n(n-1)/2, for D the inversions of a uniform random permutation of n.

    Mahonian numbers normalised step by step (inserting the k-th element adds 0 .. k-1
    inversions with equal probability), so the distribution stays a probability vector in
    float64 for any n.
    """
    n = int(n)
    pmf = np.ones(1)
    for k in range(2, n + 1):
        c = np.concatenate([[0.0], np.cumsum(pmf)])
        m = len(pmf) + k - 1
        idx = np.arange(m)
        hi = np.minimum(idx + 1, len(pmf))
        lo = np.maximum(idx - k + 1, 0)
        pmf = (c[hi] - c[lo]) / k
    return np.minimum(np.cumsum(pmf), 1.0)


def kendall_greater(x: np.ndarray, y: np.ndarray, chunk_size: int = 4096):
    """Row-wise one-sided test of a positive association between ``x`` and ``y`` (Kendall's tau).

    Parameters
    ----------
    x, y
        (rows, units) arrays; a unit is used in a row when both values are finite there.

    Returns
    -------
    pvalue
        Exact ``P(D <= d)`` under the permutation null when the row has no ties; scipy's
        ``kendalltau(alternative="greater")`` (tau-b, normal approximation) when it has ties;
        NaN with fewer than 3 units.
    tau
        Kendall's tau (tau-b; equal to tau-a without ties).
    method
        'exact', 'asymptotic (ties)' or 'none'.
    n
        Units used per row.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must be 2-D of one shape, got {x.shape} and {y.shape}")
    rows, m = x.shape
    i, j = np.triu_indices(m, k=1)
    p = np.full(rows, np.nan)
    tau = np.full(rows, np.nan)
    method = np.full(rows, "none", dtype=object)
    n_all = (np.isfinite(x) & np.isfinite(y)).sum(axis=1)
    # fast path: rows without missing values or ties (almost all), discordant pairs counted
    # column by column on contiguous slices (no pair index arrays, booleans only)
    complete = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    if m >= 3 and complete.any():
        sx, sy = np.sort(x[complete], axis=1), np.sort(y[complete], axis=1)
        untied = np.flatnonzero(complete)[(np.diff(sx, axis=1) != 0).all(axis=1) & (np.diff(sy, axis=1) != 0).all(axis=1)]
        del sx, sy
        cdf = inversions_cdf(m)
        tot = m * (m - 1) // 2
        for start in range(0, len(untied), 4096):
            r = untied[start:start + 4096]
            xs, ys = x[r], y[r]
            disc = np.zeros(len(r), dtype=np.int64)
            for a in range(m - 1):
                disc += np.count_nonzero((xs[:, a:a + 1] > xs[:, a + 1:]) ^ (ys[:, a:a + 1] > ys[:, a + 1:]), axis=1)
            p[r] = cdf[disc]
            tau[r] = (tot - 2 * disc) / tot
            method[r] = "exact"
    slow = np.flatnonzero(method == "none")
    for start in range(0, len(slow), max(1, int(chunk_size))):
        sl = slow[start:start + chunk_size]
        xs, ys = x[sl], y[sl]
        with np.errstate(invalid="ignore"):
            sx = np.sign(xs[:, i] - xs[:, j])
            sy = np.sign(ys[:, i] - ys[:, j])
        ok = np.isfinite(sx) & np.isfinite(sy)
        prod = np.where(ok, sx * sy, 0.0)
        disc = (prod < 0).sum(axis=1)
        conc = (prod > 0).sum(axis=1)
        tied = (ok & (prod == 0)).any(axis=1)
        n = n_all[sl]
        tot = n * (n - 1) // 2
        with np.errstate(invalid="ignore", divide="ignore"):
            tau[sl] = np.where(tot > 0, (conc - disc) / np.maximum(tot, 1), np.nan)
        pp = np.full(len(n), np.nan)
        mm = np.full(len(n), "none", dtype=object)
        exact = ~tied & (n >= 3)
        for k in np.unique(n[exact]):
            r = exact & (n == k)
            pp[r] = inversions_cdf(int(k))[disc[r]]
            mm[r] = "exact"
        for r in np.flatnonzero(tied & (n >= 3)):
            g = sl[r]
            use = np.isfinite(x[g]) & np.isfinite(y[g])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = stats.kendalltau(x[g, use], y[g, use], alternative="greater")
            pp[r], mm[r] = res.pvalue, "asymptotic (ties)"
            tau[g] = res.statistic
        p[sl], method[sl] = pp, mm
    return np.clip(p, 0.0, 1.0), tau, method, n_all


def oos_r2(measured: np.ndarray, predicted: np.ndarray, train_mean: np.ndarray) -> np.ndarray:
    """Out-of-sample R² against the mean predictor: ``1 - SSE(model) / SSE(train mean)`` per row.

    Rows = genes, columns = units (perturbation means); units where measured or predicted is
    missing are left out. Negative when the model errs more than the train-fold mean; NaN when
    the mean predictor's SSE is 0 or no unit is usable.
    """
    a = np.asarray(measured, dtype=np.float64)
    f = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(train_mean, dtype=np.float64)[:, None]
    ok = np.isfinite(a) & np.isfinite(f) & np.isfinite(m)
    sse = np.where(ok, (a - f) ** 2, 0.0).sum(axis=1)
    sse0 = np.where(ok, (a - m) ** 2, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((sse0 > 0) & ok.any(axis=1), 1.0 - sse / sse0, np.nan)


def combine_splits(p_splits: np.ndarray, gamma: float = 0.5) -> np.ndarray:
    """Combine per-split p-values (rows = genes, columns = splits) into one valid p-value per row.

    ``min(1, quantile_gamma(p) / gamma)``: with ``gamma = 0.5``, twice the median
    (Meinshausen, Meier & Bühlmann 2009, JASA 104:1671, eq. 2.2), valid under any dependence
    between the splits. The empirical quantile is numpy's linear one, which is never below the
    lower order statistic their proof uses, so the result is at least as conservative. Missing
    split p-values count as 1; a row without any finite p-value gives NaN.
    """
    p = np.asarray(p_splits, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"p_splits must be (genes, splits), got shape {p.shape}")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    any_ok = np.isfinite(p).any(axis=1)
    p1 = np.where(np.isfinite(p), p, 1.0)
    out = np.minimum(1.0, np.quantile(p1, gamma, axis=1) / gamma)
    return np.where(any_ok, out, np.nan)


def block_permutation(groups, rng: np.random.Generator) -> np.ndarray:
    """Row order that moves whole perturbation blocks: well k of group g takes the prediction of
    well (k mod size) of group pi(g), pi a random permutation of the groups.

    Applied to a split's predictions it gives predictions that keep their clustering by
    perturbation but cannot know which perturbation they belong to: the perturbation-level null.
    """
    groups = np.asarray(groups).astype(str)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    pi = rng.permutation(len(uniq))
    order = np.empty(len(groups), dtype=np.int64)
    for g, rows in enumerate(members):
        src = members[pi[g]]
        order[rows] = src[np.arange(len(rows)) % len(src)]
    return order


def pooled_perturbation_test(splits) -> tuple[pd.Index, np.ndarray, np.ndarray, np.ndarray]:
    """One test per gene over all splits: the out-of-fold perturbation means, permuted once.

    Every perturbation is in the test fold of some splits; its out-of-fold prediction is the
    mean, over those splits, of its predicted perturbation mean (each from a model that never saw
    it), and its measured value is its measured perturbation mean. Kendall's tau between the two
    over all perturbations tested at least once is then tested against its exact permutation
    distribution (:func:`kendall_greater`): one permutation distribution of the split-averaged
    predictions, with about five times the perturbations of one split.

    Calibration: the out-of-fold predictions of different perturbations are not independent
    (each model saw the others' labels), so the level is not guaranteed by construction; the
    null screen of notebook 50 and ``tests/test_evaluation_perturbation.py`` show it at or
    below alpha.

    Parameters
    ----------
    splits
        :class:`~i2o_utils.evaluation.predictions.SplitPredictions` of one (omics, stimulus),
        with a ``target`` column in their wells and the same genes.

    Returns
    -------
    genes, pvalue, tau, n_perturbations
    """
    splits = list(splits)
    if not splits:
        raise ValueError("no split to pool")
    genes = pd.Index(splits[0].genes.astype(str), name="gene")
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    measured: dict[str, np.ndarray] = {}
    for s in splits:
        if "target" not in s.wells:
            raise ValueError(f"{s.path or 'split'}: the pooled test needs the wells' 'target' column")
        idx = pd.Index(s.genes.astype(str)).get_indexer(genes)
        if (idx < 0).any():
            raise ValueError(f"split {s.split}: its genes differ from split {splits[0].split}'s")
        yt, yp = s.measured[:, idx].T, s.predicted[:, idx].T
        usable = np.isfinite(yt) & np.isfinite(yp)
        uniq, ind = group_indicator(s.wells["target"])
        ym, fm = group_means(yt, ind, usable), group_means(yp, ind, usable)
        for k, t in enumerate(uniq):
            f = fm[:, k]
            ok = np.isfinite(f)
            sums[t] = sums.get(t, 0.0) + np.where(ok, f, 0.0)
            counts[t] = counts.get(t, 0) + ok
            m = measured.get(t)
            measured[t] = ym[:, k] if m is None else np.where(np.isfinite(m), m, ym[:, k])
    targets = sorted(sums)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.stack([np.where(counts[t] > 0, sums[t] / np.maximum(counts[t], 1), np.nan) for t in targets], axis=1)
    y = np.stack([measured[t] for t in targets], axis=1)
    n_pairs = max(1, len(targets) * (len(targets) - 1) // 2)
    p, tau, _, n = kendall_greater(f, y, chunk_size=max(1, int(2e7 // n_pairs)))
    return genes, p, tau, n
