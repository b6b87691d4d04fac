"""Batch correction as R limma's ``removeBatchEffect``.

limma (genes x samples) does::

    batch  <- as.factor(batch);  contrasts(batch)  <- contr.sum(levels(batch))
    batch2 <- as.factor(batch2); contrasts(batch2) <- contr.sum(levels(batch2))
    X.batch <- cbind(model.matrix(~batch)[, -1], model.matrix(~batch2)[, -1], covariates)
    fit  <- lmFit(x, cbind(design, X.batch))          # design defaults to an intercept
    beta <- fit$coefficients[, -(1:ncol(design))]; beta[is.na(beta)] <- 0
    x - beta %*% t(X.batch)

:func:`remove_batch_effect` does the same on samples x genes arrays:

* factor levels are sorted (R's ``factor`` default); the sum-to-zero contrast of a factor with
  levels ``1..K`` has ``K-1`` columns, column ``j`` is 1 on level ``j``, -1 on level ``K``;
* covariates are used as given (limma does not centre them, so neither does this);
* the least-squares fit is per gene; a gene with missing values (NaN) is fitted on its observed
  samples, as ``lmFit`` does, and its NaNs stay NaN;
* a column that is (numerically) a linear combination of the columns before it is not estimable
  and its coefficient is dropped (R's ``lm.fit``: pivoted QR with tolerance 1e-7, aliased
  coefficients NA, set to 0 by ``removeBatchEffect``). This happens, for example, when TMT
  multiplexes are nested in plates: the plate contrast is then a sum of multiplex contrasts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from i2o_utils.omics._checks import OmicsInputError, align_to_samples, as_labels, as_matrix, check_no_inf

ALIAS_TOL = 1e-7
"""R's ``lm.fit`` aliasing tolerance (see :func:`estimable_columns`)."""
_FAST_PIVOT = 1e-3
"""Conditioning threshold of :func:`_fit_missing`'s downdated normal equations (see there)."""


def sum_to_zero_contrasts(labels: Any, what: str = "batch", samples=None) -> tuple[np.ndarray, list[str]]:
    """R's ``model.matrix(~f)[, -1]`` with ``contrasts(f) <- contr.sum(levels(f))``.

    Returns
    -------
    (matrix, levels)
        ``n x (K-1)`` contrast columns and the sorted levels (the last one is coded -1).
    """
    levels, idx = np.unique(as_labels(labels, len(labels), what, samples), return_inverse=True)
    k = len(levels)
    contr_sum = np.vstack([np.eye(k - 1), -np.ones((1, k - 1))])  # R's contr.sum(K): K x (K-1)
    return contr_sum[idx], levels.tolist()


def estimable_columns(X: np.ndarray) -> np.ndarray:
    """Columns of ``X`` kept by R's limited-pivoting QR: left to right, a column is dropped when its
    norm after projection on the kept columns before it is below :data:`ALIAS_TOL` times its own norm.

    Returns a boolean mask over the columns.
    """
    n, q = X.shape
    keep = np.zeros(q, dtype=bool)
    basis = np.zeros((n, 0))
    for j in range(q):
        r = X[:, j].astype(np.float64)
        norm = np.linalg.norm(r)
        for _ in range(2):  # Gram-Schmidt twice: orthogonal to working precision
            r -= basis @ (basis.T @ r)
        rn = np.linalg.norm(r)
        if norm > 0 and rn >= ALIAS_TOL * norm:
            keep[j] = True
            basis = np.column_stack([basis, r / rn])
    return keep


def _as_numeric(x: Any, n: int, samples, what: str) -> np.ndarray:
    """``x`` as a finite n x c float array (a DataFrame or Series indexed by sample is aligned)."""
    c = np.asarray(align_to_samples(x, samples, what, "row"), dtype=np.float64)
    c = c[:, None] if c.ndim == 1 else c
    if c.ndim != 2 or c.shape[0] != n:
        raise OmicsInputError(f"{what}: shape {c.shape} does not match {n} samples (one row per sample)")
    if not np.isfinite(c).all():
        raise OmicsInputError(f"{what}: contains NaN or inf")
    return c


def _fit_missing(X: np.ndarray, Y: np.ndarray, genes_idx: np.ndarray, progress: bool = False) -> np.ndarray:
    """Coefficients for genes with missing values, each fitted on its observed samples.

    With ``A = (X'X)^-1`` and ``M = X[missing]``, a gene's normal equations are ``X'X - M'M``;
    the Woodbury identity ``(X'X - M'M)^-1 = A + A M' (I - M A M')^-1 M A`` turns each into a
    system as small as the gene's number ``k`` of missing values, solved for all genes with the
    same ``k`` at once. Genes missing more values than there are columns solve their downdated
    normal equations. Where the system is ill conditioned (its smallest eigenvalue, on the scale
    of its diagonal, below ``_FAST_PIVOT ** 2``: a gene missing most of a batch), the gene is
    fitted by QR on its observed samples, aliased columns dropped.
    """
    q = X.shape[1]
    G = X.T @ X
    A = np.linalg.inv(G)
    XA = X @ A
    Yg = Y[:, genes_idx]
    miss = np.isnan(Yg)
    R = X.T @ np.where(miss, 0.0, Yg)
    beta = A @ R  # the fit as if nothing were missing, downdated below
    ok = np.ones(len(genes_idx), dtype=bool)
    n_missing = miss.sum(axis=0)
    for k in tqdm(np.unique(n_missing), desc="batch fit (genes with missing values)", disable=not progress):
        sel = np.flatnonzero(n_missing == k)
        if k <= q:
            idx = np.nonzero(miss[:, sel].T)[1].reshape(len(sel), k)
            M, MA = X[idx], XA[idx]  # genes x k x q
            S = np.eye(k) - MA @ M.transpose(0, 2, 1)
            good = np.linalg.eigvalsh(S)[:, 0] >= _FAST_PIVOT**2
            w = np.einsum("tkc,ct->tk", M[good], beta[:, sel[good]])
            beta[:, sel[good]] += np.einsum("tk,tkc->ct", np.linalg.solve(S[good], w[..., None])[..., 0], MA[good])
            ok[sel[~good]] = False
            continue
        for t in sel:
            M = X[miss[:, t]]
            Gt = G - M.T @ M
            d = np.sqrt(np.maximum(np.diag(Gt), 0.0))
            ok[t] = d.all() and np.linalg.eigvalsh(Gt / d / d[:, None])[0] >= _FAST_PIVOT**2
            if ok[t]:
                beta[:, t] = np.linalg.solve(Gt, R[:, t])
    for t in np.flatnonzero(~ok):  # by QR on the observed samples, aliased columns dropped (coefficient 0)
        beta[:, t] = 0.0
        Xo = X[~miss[:, t]]
        keep = estimable_columns(Xo)
        if keep.any():
            beta[keep, t] = np.linalg.lstsq(Xo[:, keep], Yg[~miss[:, t], t], rcond=None)[0]
    return beta


def remove_batch_effect(x: Any, batch: Any = None, batch2: Any = None, covariates: Any = None,
                        design: Any = None, allow_nan: bool = False, progress: bool = False,
                        out: np.ndarray | None = None) -> np.ndarray | pd.DataFrame:
    """Remove batch effects as R limma's ``removeBatchEffect`` (samples x genes).

    Parameters
    ----------
    x
        Log-scale expression, samples x genes (array or DataFrame; a DataFrame comes back as one).
    batch, batch2
        One label per sample (e.g. omics plate; TMT multiplex). A Series indexed by sample is
        aligned to ``x``'s index.
    covariates
        Numeric covariates to regress out, samples x c (not centred, as in limma).
    design
        Samples x p design matrix of effects to keep (default: an intercept, as limma).
    allow_nan
        Accept NaN (missing values, fitted per gene on the observed samples); inf always raises.
    progress
        Progress bar over genes with missing values.
    out
        A float64 array of ``x``'s shape to write the result into; it may be ``x`` itself (then
        ``x`` is corrected in place and no second matrix is allocated). Arrays only.

    Returns
    -------
    numpy.ndarray or pandas.DataFrame
        ``x`` minus the fitted batch effects.

    Raises
    ------
    OmicsInputError
        Non-finite values (NaN only unless ``allow_nan``), duplicated sample or gene labels,
        batch labels or design rows that do not match the samples, missing batch labels.
    """
    v, samples, genes = as_matrix(x, "x")
    if out is not None and (samples is not None or not isinstance(out, np.ndarray) or out.shape != v.shape
                            or out.dtype != np.float64):
        raise OmicsInputError(f"remove_batch_effect: out must be a float64 array of shape {v.shape} "
                              "(and x an array, not a DataFrame)")
    check_no_inf(v, "x", samples, genes, allow_nan=allow_nan)
    n = v.shape[0]
    D = np.ones((n, 1)) if design is None else _as_numeric(design, n, samples, "design")
    # limma's X.batch: sum-to-zero contrasts of batch and batch2, then the covariates
    parts = [sum_to_zero_contrasts(as_labels(b, n, what, samples), what)[0]
             for b, what in ((batch, "batch"), (batch2, "batch2")) if b is not None]
    if covariates is not None:
        parts.append(_as_numeric(covariates, n, samples, "covariates"))
    Xb = np.column_stack(parts) if parts else np.zeros((n, 0))  # (a batch of one level has no contrast)
    if out is None:
        out = np.empty_like(v)
    if Xb.shape[1] == 0:
        out[...] = v
    else:
        X = np.column_stack([D, Xb])
        keep = estimable_columns(X)
        Xk = X[:, keep]
        missing = np.isnan(v).any(axis=0)
        bk = np.zeros((Xk.shape[1], v.shape[1]))
        if not missing.all():  # the complete genes at once by QR (no copy of v where it has no NaN)
            q, r = np.linalg.qr(Xk)
            bk[:, ~missing] = np.linalg.solve(r, q.T @ (v[:, ~missing] if missing.any() else v))
        fit_idx = np.flatnonzero(missing & ~np.isnan(v).all(axis=0))  # all-NaN genes stay all NaN
        if len(fit_idx):
            bk[:, fit_idx] = _fit_missing(Xk, v, fit_idx, progress=progress)
        beta = np.zeros((X.shape[1], v.shape[1]))
        beta[keep] = bk
        b_batch = beta[D.shape[1]:]
        for j in range(0, v.shape[1], 4096):  # in blocks of genes: no second full-size matrix
            np.subtract(v[:, j:j + 4096], Xb @ b_batch[:, j:j + 4096], out=out[:, j:j + 4096])
    return pd.DataFrame(out, index=samples, columns=genes) if samples is not None else out
