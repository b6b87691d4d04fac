"""DESeq2 median-of-ratios size factors and the log of the normalised counts.

Reference values come from two computations independent of the implementation:

* a fixture derived by hand from DESeq2's definition (``estimateSizeFactorsForMatrix``, DESeq2
  1.4x: ``loggeomeans <- rowMeans(log(counts)); sf <- apply(counts, 2, function(cnts)
  exp(median((log(cnts) - loggeomeans)[is.finite(loggeomeans) & cnts > 0])))``): with two samples
  the geometric mean of a gene is ``sqrt(a b)``, so sample 1's ratio is ``sqrt(a / b)``;
* the same definition transcribed gene by gene in plain Python (``math.log``,
  ``statistics.median``), checked against the vectorised code on random negative-binomial counts.
"""

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from i2o_utils.omics import OmicsInputError, log_normalised, size_factors


def deseq2_size_factors_loops(counts: np.ndarray, poscounts: bool = False) -> list[float]:
    """DESeq2's formula, one sample and one gene at a time (counts: samples x genes)."""
    n, g = counts.shape
    log_geo = []
    for j in range(g):
        col = [float(counts[i, j]) for i in range(n)]
        if poscounts:
            logs = [math.log(c) if c > 0 else 0.0 for c in col]
            log_geo.append(-math.inf if all(c == 0 for c in col) else sum(logs) / n)
        else:
            log_geo.append(-math.inf if any(c == 0 for c in col) else sum(math.log(c) for c in col) / n)
    sf = []
    for i in range(n):
        ratios = [math.log(counts[i, j]) - log_geo[j] for j in range(g)
                  if math.isfinite(log_geo[j]) and counts[i, j] > 0]
        sf.append(math.exp(statistics.median(ratios)))
    if poscounts:
        m = sum(math.log(s) for s in sf) / n
        sf = [s / math.exp(m) for s in sf]
    return sf


def test_size_factors_hand_fixture():
    # gene ratios a/b = 4, 16, 1, 9, 1/4 -> sqrt: 2, 4, 1, 3, 0.5 -> median 2 for sample 1;
    # sample 2 gets the inverses 0.5, 0.25, 1, 1/3, 2 -> median 0.5. The last gene has a zero.
    counts = np.array([[4, 16, 5, 9, 1, 3],
                       [1, 1, 5, 1, 4, 0]])
    np.testing.assert_allclose(size_factors(counts), [2.0, 0.5], rtol=0, atol=1e-12)


def test_size_factors_even_number_of_genes_takes_median_on_log_scale():
    # four usable genes with ratios sqrt(a/b) = 1, 2, 4, 8: DESeq2 takes the median of the logs,
    # i.e. the geometric mean of the middle two ratios (sqrt(2 * 4)), not their arithmetic mean.
    counts = np.array([[1, 4, 16, 64], [1, 1, 1, 1]])
    np.testing.assert_allclose(size_factors(counts), [math.sqrt(8), 1 / math.sqrt(8)], atol=1e-12)


@pytest.mark.parametrize("poscounts", [False, True])
def test_size_factors_match_loop_formulation(poscounts):
    rng = np.random.default_rng(3)
    mu = rng.lognormal(3, 1.5, 300)[None] * rng.lognormal(0, 0.4, 25)[:, None]
    counts = rng.negative_binomial(5, 5 / (5 + mu))
    assert (counts == 0).any(axis=0).sum() > 20  # some genes are left out of the geometric means
    got = size_factors(counts, type="poscounts" if poscounts else "ratio")
    np.testing.assert_allclose(got, deseq2_size_factors_loops(counts, poscounts), rtol=1e-10, atol=1e-8)


def test_size_factors_recover_library_size():
    rng = np.random.default_rng(0)
    lib = np.array([0.5, 1.0, 2.0, 4.0])
    counts = rng.poisson(lib[:, None] * rng.lognormal(6, 1, 500)[None])
    sf = size_factors(counts)
    np.testing.assert_allclose(sf / sf[1], lib / lib[1], rtol=0.03)


def test_dataframe_in_series_out_and_log_normalised_counts():
    counts = pd.DataFrame([[4, 16, 5, 9, 1, 3], [1, 1, 5, 1, 4, 0]], index=["P1:A1", "P1:A2"],
                          columns=list("abcdef"))
    sf = size_factors(counts)
    assert list(sf.index) == ["P1:A1", "P1:A2"]
    np.testing.assert_allclose(sf, [2.0, 0.5])
    got = log_normalised(counts.to_numpy(), [0, 2, 5], sf.to_numpy(), pseudocount=1.0)
    np.testing.assert_allclose(got, np.log2(np.array([[4 / 2, 5 / 2, 3 / 2], [1 / 0.5, 5 / 0.5, 0 / 0.5]]) + 1.0))


@pytest.mark.parametrize("bad, message", [
    (-1, "negative count"),
    (2.5, "non-integer count"),
    (np.nan, "NaN value"),
    (np.inf, "infinite value"),
])
def test_bad_counts_raise_naming_sample_and_gene(bad, message):
    counts = pd.DataFrame(np.ones((3, 4)), index=["w1", "w2", "w3"], columns=list("abcd"))
    counts.iloc[1, 2] = bad
    with pytest.raises(OmicsInputError, match=message) as e:
        size_factors(counts)
    assert "'w2'" in str(e.value) and "'c'" in str(e.value)


def test_all_zero_sample_raises():
    counts = pd.DataFrame([[1, 2, 3], [0, 0, 0], [2, 2, 2]], index=["w1", "w2", "w3"])
    with pytest.raises(OmicsInputError, match="all-zero.*'w2'"):
        size_factors(counts)


def test_every_gene_with_a_zero_raises_deseq2_message():
    counts = np.array([[0, 5, 3], [4, 0, 3], [4, 5, 0]])
    with pytest.raises(OmicsInputError, match="every gene contains at least one zero"):
        size_factors(counts)
    assert np.all(np.isfinite(size_factors(counts, type="poscounts")))


def test_duplicated_sample_names_raise():
    counts = pd.DataFrame(np.ones((2, 3)), index=["P1:A1", "P1:A1"])
    with pytest.raises(OmicsInputError, match="duplicated sample label 'P1:A1'"):
        size_factors(counts)
