"""Is a gene more predictable from images than from its training mean? (paper: "Metrics").

For each gene the per-well SMAPE of the model is compared with the per-well SMAPE of the mean
predictor (the gene's train-fold mean) over the test wells, with a one-sided test of
"the model's SMAPE is lower":

* ``"mannwhitney"``: the one-sided Mann–Whitney U test the paper's text names (two independent
  samples: the model's and the mean predictor's per-well SMAPEs).
* ``"wilcoxon"``: the paired one-sided Wilcoxon signed-rank test the authors' released code runs
  (per-well differences model − mean predictor).

Both are vectorised over genes and reproduce ``scipy.stats.mannwhitneyu(x, y,
alternative="less")`` and ``scipy.stats.wilcoxon(x, y, alternative="less")`` with scipy's
defaults gene by gene, including the choice scipy makes between the exact null distribution,
the normal approximation and (Wilcoxon) the exhaustive sign-flip permutation:

Mann–Whitney (``use_continuity=True``, ``method="auto"``)
    exact null distribution of U when a sample has at most 8 wells and the pooled SMAPEs have no
    ties; otherwise the normal approximation with tie correction and continuity correction.
Wilcoxon (``zero_method="wilcox"``: zero differences are dropped; ``correction=False``;
``method="auto"``)
    with more than 50 wells the normal approximation (tie-corrected); otherwise the exact
    distribution when there are neither ties nor zero differences; with ties or zeros, the exact
    sign-flip permutation distribution when there are at most 13 wells (2^13 < scipy's 9,999
    resamples), else the normal approximation.

Ranks are average ranks from one ``argsort`` per gene: ``scipy.stats.rankdata`` along an axis
gives the same ranks (tested) but took about 12x longer on a (26,317 x 500) array, which is what
the whole-transcriptome evaluation ranks 40 times.

A well whose measured or predicted value (or the gene's train mean) is missing is left out for
that gene only; the number of wells used is returned per gene.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from math import comb

import numpy as np
import pandas as pd
from scipy import special, stats

from i2o_utils.evaluation.metrics import smape_per_well

__all__ = [
    "TESTS",
    "TEST_LABELS",
    "CALIBRATED",
    "MeanPredictorTest",
    "test_vs_mean_predictor",
    "test_smapes",
    "mannwhitney_less",
    "wilcoxon_less",
    "average_ranks",
    "scipy_pvalues_per_gene",
    "benjamini_hochberg",
    "min_attainable_pvalue",
    "check_test",
]

TESTS = ("perturbation", "mannwhitney", "wilcoxon")
"""The calibrated test at the perturbation level (the default; :mod:`~i2o_utils.evaluation.perturbation`)
and the paper's two well-level tests, kept exactly as they are for reproduction."""
TEST_LABELS = {
    "perturbation": "perturbation-level permutation test (Kendall's tau, out-of-fold perturbation means pooled over splits)",
    "mannwhitney": "one-sided Mann–Whitney U test (the paper's text)",
    "wilcoxon": "one-sided paired Wilcoxon signed-rank test (the authors' released code)",
}
CALIBRATED = {"perturbation": True, "mannwhitney": False, "wilcoxon": False}
"""Whether the test's p-values hold their level on a screen without signal (see notebook 50's null
section): the well-level tests treat wells sharing one label as independent and do not."""
"""How figures and tables name the test used."""

_MWU_EXACT_MAX = 8  # scipy: exact when min(n1, n2) <= 8 and no ties
_WILCOXON_EXACT_MAX = 50  # scipy: 'auto' is asymptotic above 50 observations
_WILCOXON_PERMUTATION_MAX = 13  # 2**13 sign flips < 9,999 default resamples: exhaustive


def check_test(test: str) -> str:
    """Validate a test name ('perturbation', 'mannwhitney' or 'wilcoxon') and return it lower-cased."""
    t = str(test).lower().replace("-", "").replace("_", "")
    aliases = {"mannwhitney": "mannwhitney", "mannwhitneyu": "mannwhitney", "mwu": "mannwhitney",
               "wilcoxon": "wilcoxon", "signedrank": "wilcoxon", "perturbation": "perturbation",
               "permutation": "perturbation", "kendall": "perturbation"}
    if t not in aliases:
        raise ValueError(f"unknown test {test!r}; choose one of {TESTS}")
    return aliases[t]


# --------------------------------------------------------------------------------------------
# ranks
# --------------------------------------------------------------------------------------------
def _rank_rows(a: np.ndarray, n_valid: np.ndarray):
    """Tie groups along the rows of ``a`` after sorting.

    Invalid entries must be ``+inf`` (they sort last, in one trailing group); ``n_valid`` counts
    the finite ones per row. Returns ``order`` (the argsort) and, for each sorted position,
    ``fl = first + last`` (0-based first and last position of its tie group: the average rank
    is ``fl / 2 + 1``), and the tie term ``sum(t**3 - t)`` over the tie groups of the valid
    entries.
    """
    g, m = a.shape
    order = np.argsort(a, axis=1)
    s = np.take_along_axis(a, order, axis=1)
    j = np.arange(m, dtype=np.int32)
    new = np.empty((g, m), dtype=bool)
    new[:, 0] = True
    np.not_equal(s[:, 1:], s[:, :-1], out=new[:, 1:])
    del s
    first = np.where(new, j, np.int32(0))
    np.maximum.accumulate(first, axis=1, out=first)
    # last position of the group = (first position of the next group) - 1
    nxt = np.where(new, j, np.int32(m))[:, ::-1]
    last = np.minimum.accumulate(np.concatenate([np.full((g, 1), m, np.int32), nxt[:, :-1]], axis=1),
                                 axis=1)[:, ::-1]
    last -= 1
    size = (last - first + 1).astype(np.float64)
    # sum over groups of t^3 - t = sum over entries of t_i^2 - 1; remove the trailing inf group
    k = (m - np.asarray(n_valid)).astype(np.float64)
    tie_term = np.einsum("ij,ij->i", size, size) - m - (k * k * k - k)
    first += last
    return order, first, tie_term


def _ranks_from_fl(fl: np.ndarray) -> np.ndarray:
    return fl * 0.5 + 1.0


def average_ranks(a, axis: int = -1) -> np.ndarray:
    """Average ranks (ties share the mean of their ordinal ranks) along ``axis``.

    Equal to ``scipy.stats.rankdata(a, method="average", axis=axis)`` for finite input; this is
    the ranking the tests use, exposed so that it can be checked against scipy.
    """
    a = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
    shape = a.shape
    flat = a.reshape(-1, shape[-1])
    if not np.isfinite(flat).all():
        raise ValueError("average_ranks needs finite values")
    order, fl, _ = _rank_rows(flat, np.full(flat.shape[0], shape[-1]))
    out = np.empty(fl.shape, dtype=np.float64)
    np.put_along_axis(out, order, _ranks_from_fl(fl), axis=1)
    return np.moveaxis(out.reshape(shape), -1, axis)


# --------------------------------------------------------------------------------------------
# exact null distributions (integer counts; cached per sample size)
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _mwu_counts(n1: int, n2: int) -> np.ndarray:
    """Number of arrangements giving each U = 0 .. n1*n2 (rank-sum of n1 of n1+n2 items)."""
    n = n1 + n2
    max_sum = sum(range(n - n1 + 1, n + 1))
    dp = np.zeros((n1 + 1, max_sum + 1), dtype=object)  # exact integers
    dp[0, 0] = 1
    for item in range(1, n + 1):
        for k in range(min(item, n1), 0, -1):
            dp[k, item:] = dp[k, item:] + dp[k - 1, : max_sum + 1 - item]
    offset = n1 * (n1 + 1) // 2
    counts = dp[n1, offset: offset + n1 * n2 + 1]
    return counts


def _mwu_exact_sf(u: np.ndarray, n1: int, n2: int) -> np.ndarray:
    """P(U >= u) under the null, for integer u."""
    counts = _mwu_counts(n1, n2)
    total = comb(n1 + n2, n1)
    tail = np.cumsum(counts[::-1])[::-1]  # tail[k] = #(U >= k)
    u = np.clip(np.asarray(u, dtype=np.int64), 0, n1 * n2)
    return np.array([float(tail[k]) / total for k in u.ravel()]).reshape(u.shape)


@lru_cache(maxsize=None)
def _signed_rank_cdf(n: int) -> np.ndarray:
    """P(T+ <= k), k = 0 .. n(n+1)/2, for the signed-rank statistic without ties or zeros."""
    max_sum = n * (n + 1) // 2
    counts = np.zeros(max_sum + 1, dtype=np.int64)  # at most C(50, 25) < 2**63
    counts[0] = 1
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r]  # right side built from the old counts
    return np.cumsum(counts).astype(np.float64) / float(2 ** n)


def _sign_flip_cdf(ranks: np.ndarray, include: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """P(T+ <= observed) over all sign flips, rows = genes; ranks may be half-integers."""
    w = np.where(include, np.rint(2 * ranks), 0).astype(np.int64)
    max_sum = int(w.sum(axis=1).max(initial=0))
    g = w.shape[0]
    counts = np.zeros((g, max_sum + 1), dtype=np.int64)
    counts[:, 0] = 1
    grid = np.arange(max_sum + 1)[None, :]
    for j in range(w.shape[1]):
        if not include[:, j].any():
            continue
        idx = grid - w[:, j:j + 1]
        shifted = np.where(idx >= 0, np.take_along_axis(counts, np.clip(idx, 0, None), axis=1), 0)
        counts = np.where(include[:, j:j + 1], counts + shifted, counts)
    cum = np.cumsum(counts, axis=1)
    obs2 = np.clip(np.rint(2 * observed).astype(np.int64), 0, max_sum)
    n_flip = include.sum(axis=1)
    return np.take_along_axis(cum, obs2[:, None], axis=1)[:, 0] / np.exp2(n_flip)


# --------------------------------------------------------------------------------------------
# the two tests, rows = genes, columns = wells; NaN marks a well left out for that gene
# --------------------------------------------------------------------------------------------
def mannwhitney_less(x: np.ndarray, y: np.ndarray):
    """Row-wise one-sided Mann–Whitney U test of x < y, as ``scipy.stats.mannwhitneyu``.

    Parameters
    ----------
    x, y
        (genes, wells) arrays; a well is used for a gene when both ``x`` and ``y`` are finite
        there (the paper's samples are the same wells under two predictors).

    Returns
    -------
    pvalue, statistic (U of ``x``, scipy's statistic), method ('exact', 'asymptotic' or
    'none'), n (wells used)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must be 2-D of one shape, got {x.shape} and {y.shape}")
    valid = np.isfinite(x) & np.isfinite(y)
    n = valid.sum(axis=1)
    m = x.shape[1]
    a = np.concatenate([np.where(valid, x, np.inf), np.where(valid, y, np.inf)], axis=1)
    order, fl, tie = _rank_rows(a, 2 * n)
    nf = n.astype(np.float64)
    # rank sum of x over all its entries, minus its invalid entries (all in the trailing inf
    # group, whose average rank is (2n + 2m + 1) / 2 in 1-based ranks)
    fl_x = np.where(order < m, fl, 0).sum(axis=1, dtype=np.float64)
    r1 = 0.5 * fl_x + m - (m - nf) * ((2 * nf + 2 * m - 1) / 2 + 1)
    u1 = r1 - nf * (nf + 1) / 2
    u2 = nf * nf - u1  # 'less' uses the survival function of U2
    big_n = 2 * nf
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(nf * nf / 12 * ((big_n + 1) - tie / (big_n * (big_n - 1))))
        z = (u2 - nf * nf / 2 - 0.5) / s
    p = special.ndtr(-z)
    method = np.full(len(n), "asymptotic", dtype=object)
    exact = (n >= 1) & (n <= _MWU_EXACT_MAX) & (tie == 0)
    for k in np.unique(n[exact]):
        rows = exact & (n == k)
        p[rows] = _mwu_exact_sf(np.rint(u2[rows]), int(k), int(k))
    method[exact] = "exact"
    none = n == 0
    p[none] = np.nan
    u1[none] = np.nan
    method[none] = "none"
    return np.clip(p, 0.0, 1.0), u1, method, n


def wilcoxon_less(x: np.ndarray, y: np.ndarray):
    """Row-wise one-sided paired Wilcoxon signed-rank test of x < y, as ``scipy.stats.wilcoxon``.

    Differences ``d = x - y`` per well; zeros are dropped (``zero_method="wilcox"``), no
    continuity correction (scipy's default). A well is used when ``d`` is finite.

    Returns
    -------
    pvalue, statistic (T+, the rank sum of positive differences), method ('exact',
    'permutation', 'asymptotic' or 'none'), n (wells used, zeros included)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must be 2-D of one shape, got {x.shape} and {y.shape}")
    with np.errstate(invalid="ignore"):
        d = x - y
    valid = np.isfinite(d)
    n_total = valid.sum(axis=1)
    nonzero = valid & (d != 0)
    count = nonzero.sum(axis=1)
    n_zero = n_total - count
    order, fl, tie = _rank_rows(np.where(nonzero, np.abs(d), np.inf), count)
    positive = np.take_along_axis(np.where(valid, d, 0.0) > 0, order, axis=1)
    n_pos = positive.sum(axis=1)
    r_plus = 0.5 * np.where(positive, fl, 0).sum(axis=1, dtype=np.float64) + n_pos
    c = count.astype(np.float64)
    mn = c * (c + 1.0) * 0.25
    se = c * (c + 1.0) * (2.0 * c + 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt((se - tie / 2) / 24)
        z = (r_plus - mn) / se
    p = special.ndtr(z)
    method = np.full(len(n_total), "asymptotic", dtype=object)
    small = n_total <= _WILCOXON_EXACT_MAX
    untied = (tie == 0) & (n_zero == 0)
    exact = small & untied & (n_total >= 1)
    for k in np.unique(count[exact]):
        rows = exact & (count == k)
        cdf = _signed_rank_cdf(int(k))
        p[rows] = cdf[np.ceil(r_plus[rows]).astype(np.int64)]
    method[exact] = "exact"
    # scipy's permutation test refuses a single observation: no p-value (NaN) there.
    perm = (n_total >= 2) & (n_total <= _WILCOXON_PERMUTATION_MAX) & ~untied
    if perm.any():
        in_rank = np.arange(d.shape[1])[None, :] < count[perm][:, None]
        p[perm] = _sign_flip_cdf(_ranks_from_fl(fl[perm]), in_rank, r_plus[perm])
        method[perm] = "permutation"
    none = (n_total == 0) | ((n_total == 1) & ~untied)
    p[none] = np.nan
    r_plus[none] = np.nan
    method[none] = "none"
    return np.clip(p, 0.0, 1.0), r_plus, method, n_total


_KERNELS = {"mannwhitney": mannwhitney_less, "wilcoxon": wilcoxon_less}


def _well_level(test: str) -> str:
    test = check_test(test)
    if test not in _KERNELS:
        raise ValueError(f"test {test!r} works at the perturbation level and needs each well's "
                         "perturbation: use i2o_utils.evaluation.summaries.evaluate_split")
    return test


# --------------------------------------------------------------------------------------------
# the model against the mean predictor
# --------------------------------------------------------------------------------------------
@dataclass
class MeanPredictorTest:
    """Per-gene result of :func:`test_vs_mean_predictor` (arrays of length n_genes)."""

    test: str
    pvalue: np.ndarray
    statistic: np.ndarray
    method: np.ndarray
    n_wells: np.ndarray

    def to_frame(self, genes=None) -> pd.DataFrame:
        """One row per gene: pvalue, statistic, method, n_wells (index ``genes`` if given)."""
        return pd.DataFrame({"pvalue": self.pvalue, "statistic": self.statistic,
                             "method": self.method, "n_wells": self.n_wells},
                            index=pd.Index(genes, name="gene") if genes is not None else None)


def _per_well_smapes(y_true, y_pred, train_mean):
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    train_mean = np.asarray(train_mean, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must be (wells, genes) of one shape, got "
                         f"{y_true.shape} and {y_pred.shape}")
    if train_mean.shape != (y_true.shape[1],):
        raise ValueError(f"train_mean must have one value per gene ({y_true.shape[1]}), "
                         f"got shape {train_mean.shape}")
    model = smape_per_well(y_true, y_pred)
    mean = smape_per_well(y_true, train_mean[None, :])
    both = np.isfinite(model) & np.isfinite(mean)
    return np.where(both, model, np.nan), np.where(both, mean, np.nan)


def test_smapes(model_smape: np.ndarray, mean_smape: np.ndarray, test: str = "mannwhitney"):
    """The chosen test on per-well SMAPEs in gene-major layout (genes, wells).

    Returns ``(pvalue, statistic, method, n_wells)`` per gene; see :func:`mannwhitney_less`
    and :func:`wilcoxon_less`.
    """
    return _KERNELS[_well_level(test)](model_smape, mean_smape)


test_smapes.__test__ = False


def test_vs_mean_predictor(y_true, y_pred, train_mean, test: str = "mannwhitney", *,
                           chunk_size: int = 4096, n_jobs: int = 1,
                           progress: bool = False) -> MeanPredictorTest:
    """One-sided test, per gene, that the model's per-well SMAPE is lower than the mean predictor's.

    Parameters
    ----------
    y_true, y_pred
        Measured and predicted abundances of the test wells, shape (wells, genes).
    train_mean
        The mean predictor: each gene's mean over the train fold, shape (genes,).
    test
        ``"mannwhitney"`` (the paper's text; default) or ``"wilcoxon"`` (the authors' code).
    chunk_size
        Genes per chunk (bounds memory: a chunk holds a few (chunk, 2 x wells) arrays).
    n_jobs
        Threads over chunks (numpy's sort releases the GIL).
    progress
        Show a tqdm bar over chunks.

    Returns
    -------
    MeanPredictorTest
        p-values equal to scipy's per-gene ``mannwhitneyu`` / ``wilcoxon`` with
        ``alternative="less"`` on the wells where measured, predicted and train mean are finite.
    """
    test = _well_level(test)
    kernel = _KERNELS[test]
    model, mean = _per_well_smapes(y_true, y_pred, train_mean)
    n_genes = model.shape[1]
    starts = list(range(0, n_genes, max(1, int(chunk_size))))

    def run(start: int):
        sl = slice(start, start + chunk_size)
        return kernel(np.ascontiguousarray(model[:, sl].T), np.ascontiguousarray(mean[:, sl].T))

    if n_jobs > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            parts = list(_maybe_tqdm(pool.map(run, starts), len(starts), progress, test))
    else:
        parts = [run(s) for s in _maybe_tqdm(starts, len(starts), progress, test)]
    if not parts:
        empty = np.zeros(0)
        return MeanPredictorTest(test, empty, empty, np.zeros(0, dtype=object), np.zeros(0, int))
    p, stat, method, n = (np.concatenate(v) for v in zip(*parts))
    return MeanPredictorTest(test=test, pvalue=p, statistic=stat, method=method, n_wells=n)


# The paper's name starts with "test_": keep pytest from collecting it where it is imported.
test_vs_mean_predictor.__test__ = False


def _maybe_tqdm(it, total, progress, test):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=f"{test} over gene chunks", leave=False)


def scipy_pvalues_per_gene(y_true, y_pred, train_mean, test: str = "mannwhitney") -> np.ndarray:
    """The reference: one ``scipy.stats`` call per gene with scipy's defaults (slow).

    Each gene uses the wells where measured, predicted and train mean are finite; a gene
    with none gets NaN.
    """
    test = _well_level(test)
    model, mean = _per_well_smapes(y_true, y_pred, train_mean)
    out = np.full(model.shape[1], np.nan)
    fn = stats.mannwhitneyu if test == "mannwhitney" else stats.wilcoxon
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for g in range(model.shape[1]):
            ok = np.isfinite(model[:, g])
            if ok.any():
                try:
                    out[g] = fn(model[ok, g], mean[ok, g], alternative="less").pvalue
                except ValueError:  # e.g. wilcoxon's permutation test on one observation
                    pass
    return out


# --------------------------------------------------------------------------------------------
# multiplicity and power
# --------------------------------------------------------------------------------------------
def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q) over the finite entries; NaN stays NaN.

    Uses ``scipy.stats.false_discovery_control(method="bh")``; the number of tests is the
    number of finite p-values.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return q


def min_attainable_pvalue(n_wells: int, test: str = "mannwhitney") -> float:
    """The smallest p-value the test can give with ``n_wells`` test wells (the model better in every well).

    For the perturbation-level test, ``n_wells`` is the number of test perturbations and the
    value is that of one split, ``1 / n!`` (the combination over splits doubles it).
    Below ``alpha`` nothing can be significant whatever the images hold: the data are too
    small to conclude.
    """
    test = check_test(test)
    n = int(n_wells)
    if n < 1:
        return float("nan")
    if test == "perturbation":
        from i2o_utils.evaluation.perturbation import inversions_cdf

        return float(inversions_cdf(n)[0]) if n >= 3 else 1.0
    # Untied SMAPEs where the model wins every well by a margin growing with the well.
    x = (np.arange(n, dtype=np.float64) + 1.0)[None, :]
    y = x + 10.0 * n + np.arange(n)[None, :]
    return float(_KERNELS[test](x, y)[0][0])
