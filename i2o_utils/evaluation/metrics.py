"""Prediction metrics per gene product (paper: "Metrics"; DESIGN.md section 7).

Every function works on arrays of shape (wells, genes) and reduces over the wells (``axis=0``),
so one call evaluates a whole transcriptome. Missing values (NaN or infinite, in either the
measured or the predicted abundance) remove that well for that gene only: the number of wells
actually used is returned by :func:`n_valid_wells` and reported beside every metric, so a gene
with missing wells is visible in the results, never silently dropped.

Definitions, as in the authors' released code:

* SMAPE per well is ``|F - A| / (|A| + |F|) * 100`` (range 0-100) with ``A`` the measured and
  ``F`` the predicted abundance; a well where both are 0 contributes 0 (the ratio is 0/0 there
  and a prediction equal to the measurement is no error). SMAPE of a gene is the mean over its
  test wells.
* r² is the squared Pearson correlation of measured and predicted over the test wells (what
  ``scipy.stats.linregress(...).rvalue ** 2`` gives). It is undefined when either side is
  constant over the wells: then it is NaN here (``linregress`` would report 0), so constant
  genes stay in the tables, marked, instead of counting as unpredictable.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "valid_wells",
    "n_valid_wells",
    "smape_per_well",
    "smape",
    "mean_predictor_smape",
    "r2",
    "is_constant",
]


def _as_float(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def valid_wells(y_true, y_pred) -> np.ndarray:
    """Boolean mask of the wells usable for a gene: both values finite.

    ``y_pred`` may be a per-gene vector (the mean predictor); it broadcasts over wells.
    """
    return np.isfinite(_as_float(y_true)) & np.isfinite(_as_float(y_pred))


def n_valid_wells(y_true, y_pred, axis: int = 0) -> np.ndarray:
    """Number of wells with finite measured and predicted values, per gene."""
    return valid_wells(y_true, y_pred).sum(axis=axis)


def smape_per_well(y_true, y_pred) -> np.ndarray:
    """Per-well SMAPE ``|F - A| / (|A| + |F|) * 100``; 0 where ``A = F = 0``; NaN if either is missing.

    Parameters
    ----------
    y_true
        Measured abundances ``A`` (any shape).
    y_pred
        Predicted abundances ``F``, broadcastable to ``y_true`` (a per-gene vector for the
        mean predictor).

    Returns
    -------
    numpy.ndarray
        float64 of the broadcast shape, values in [0, 100] or NaN.
    """
    a = _as_float(y_true)
    f = _as_float(y_pred)
    out = np.subtract(f, a)
    np.abs(out, out=out)
    den = np.abs(a) + np.abs(f)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(out, den, out=out)
    out *= 100.0
    # 0/0 (both zero) is no error; opposite signs give exactly 100 in exact arithmetic and
    # rounding can overshoot by an ulp. NaN and inf inputs give NaN through the arithmetic.
    np.copyto(out, 0.0, where=den == 0)
    np.minimum(out, 100.0, out=out)
    return out


def smape(y_true, y_pred, axis: int = 0) -> np.ndarray:
    """SMAPE per gene: the mean of :func:`smape_per_well` over the valid wells along ``axis``.

    A gene with no valid well gets NaN.
    """
    per_well = smape_per_well(y_true, y_pred)
    n = np.isfinite(per_well).sum(axis=axis)
    total = np.where(np.isfinite(per_well), per_well, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def mean_predictor_smape(y_true, train_mean, axis: int = 0) -> np.ndarray:
    """SMAPE of the mean predictor (each gene predicted by its train-fold mean) per gene.

    Parameters
    ----------
    y_true
        Measured abundances, shape (wells, genes) for ``axis=0``.
    train_mean
        Per-gene mean of the train-fold measurements, shape (genes,).
    """
    y_true = _as_float(y_true)
    train_mean = np.expand_dims(_as_float(train_mean), axis)
    return smape(y_true, train_mean, axis=axis)


def is_constant(x, mask=None, axis: int = 0) -> np.ndarray:
    """True where the valid values along ``axis`` are all equal (or fewer than two are valid)."""
    x = _as_float(x)
    mask = np.isfinite(x) if mask is None else mask
    hi = np.where(mask, x, -np.inf).max(axis=axis)
    lo = np.where(mask, x, np.inf).min(axis=axis)
    return ~(hi > lo)


def r2(y_true, y_pred, axis: int = 0) -> np.ndarray:
    """Squared Pearson correlation of measured and predicted over the valid wells, per gene.

    NaN where fewer than two wells are valid or either side is constant over the valid wells
    (r² is undefined there).
    """
    a = _as_float(y_true)
    f = _as_float(y_pred)
    a, f = np.broadcast_arrays(a, f)
    axis = axis % a.ndim
    mask = np.isfinite(a) & np.isfinite(f)
    complete = bool(mask.all())
    if not complete:
        a = np.where(mask, a, 0.0)
        f = np.where(mask, f, 0.0)
    n = mask.sum(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        da = a - a.sum(axis=axis, keepdims=True) / n
        df = f - f.sum(axis=axis, keepdims=True) / n
        if not complete:
            da[~mask] = 0.0
            df[~mask] = 0.0
        sxy = np.einsum("ij,ij->j" if axis == 0 else "ij,ij->i", da, df) if a.ndim == 2 else (da * df).sum(axis=axis)
        sxx = np.einsum("ij,ij->j" if axis == 0 else "ij,ij->i", da, da) if a.ndim == 2 else (da * da).sum(axis=axis)
        syy = np.einsum("ij,ij->j" if axis == 0 else "ij,ij->i", df, df) if a.ndim == 2 else (df * df).sum(axis=axis)
        r = sxy / np.sqrt(sxx * syy)
    # Clip: rounding can push |r| a hair above 1 for perfectly collinear data.
    r = np.clip(r, -1.0, 1.0)
    undefined = is_constant(a, mask, axis) | is_constant(f, mask, axis)
    return np.where(undefined, np.nan, r * r)
