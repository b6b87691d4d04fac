"""Compiled (numba) kernels of the omics pipeline, imported on first use.

They are module-level functions so that numba's on-disk cache serves them to every later process
(kernels defined inside functions are compiled again in each process, a second or more apiece).

``flog`` is fdlibm's ``__ieee754_log`` (Sun Microsystems, 1993; the same code is in musl and
FreeBSD, error below 1 ulp), written without branches or library calls so that the compiler
vectorises the loops that use it: about 4x faster than calling the C library's ``log`` element
by element on x86-64, whose numba wheels come without a vector math library. It is valid for
positive normal numbers (>= 2.2e-308); every caller here passes values >= 1 or >= a positive
pseudocount.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_LG1, _LG2, _LG3 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01
_LG4, _LG5, _LG6 = 2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_FLAGS = {"reassoc", "contract", "arcp"}  # not "nnan": the NaN tests must stay


@njit(inline="always", fastmath=_FLAGS)
def flog(x):  # pragma: no cover - compiled
    """Natural logarithm of a positive normal float64 (see the module notes)."""
    bits = np.float64(x).view(np.int64)
    k = (bits - 0x3FE6A09E00000000) >> 52  # the mantissa scaled into [sqrt(2)/2, sqrt(2))
    m = np.int64(bits - (k << 52)).view(np.float64)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    r = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7))) + w * (_LG2 + w * (_LG4 + w * _LG6))
    hfsq = 0.5 * f * f
    dk = np.float64(k)
    return dk * _LN2_HI - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO)) - f)


@njit(parallel=True, cache=True, fastmath=_FLAGS)
def log_array(x, out):  # pragma: no cover - compiled
    """``out = log(x)`` for a flat array of positive normal numbers."""
    for i in prange(x.size):
        out[i] = flog(x[i])


# --------------------------------------------------------------------------------------------
# vsn
# --------------------------------------------------------------------------------------------
@njit(parallel=True, cache=True, fastmath=_FLAGS)
def vsn_pass1(y, a, eb, h, jac, colsum):  # pragma: no cover - compiled
    """``h = arsinh(eb * y + a)`` (0 where ``y`` is NaN), ``jac`` = per sample sum of log(sqrt(1 + Y^2)),
    ``colsum[b]`` = column sums of ``h`` over the ``b``-th of ``len(colsum)`` blocks of rows (summed
    by the caller: the column sums come out of the same pass, with no second reading of ``h``)."""
    n, g = y.shape
    nb = colsum.shape[0]
    for b in prange(nb):
        cs = colsum[b]
        for k in range(g):
            cs[k] = 0.0
        for i in range(b * n // nb, (b + 1) * n // nb):
            s = 0.0
            ai = a[i]
            ei = eb[i]
            for k in range(g):
                v = y[i, k]
                ok = v == v
                Y = ei * (v if ok else 0.0) + ai
                q = math.sqrt(1.0 + Y * Y)
                lv = flog(abs(Y) + q)
                lv = lv if Y >= 0 else -lv
                lv = lv if ok else 0.0
                h[i, k] = lv
                cs[k] += lv
                lq = flog(q)
                s += lq if ok else 0.0
            jac[i] = s


@njit(parallel=True, cache=True, fastmath=_FLAGS)
def vsn_pass2(y, a, eb, h, mu, out):  # pragma: no cover - compiled
    """The 8 per-sample sums of the likelihood's gradient and curvature (branch-free: selects
    instead of NaN tests, so that the loop vectorises)."""
    n, g = y.shape
    for i in prange(n):
        ssq = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        s5 = 0.0
        s6 = 0.0
        s7 = 0.0
        ai = a[i]
        ei = eb[i]
        for k in range(g):
            v = y[i, k]
            ok = v == v
            vv = v if ok else 0.0
            Y = ei * vv + ai
            aa = 1.0 / (1.0 + Y * Y)
            aa = aa if ok else 0.0
            A = math.sqrt(aa)
            r = h[i, k] - mu[k]
            r = r if ok else 0.0
            aay = aa * Y
            ssq += r * r
            s1 += r * A
            s2 += aay
            s3 += r * A * vv
            s4 += aay * vv
            s5 += aa
            s6 += aa * vv
            s7 += aa * vv * vv
        out[i, 0] = ssq
        out[i, 1] = s1
        out[i, 2] = s2
        out[i, 3] = s3
        out[i, 4] = s4
        out[i, 5] = s5
        out[i, 6] = s6
        out[i, 7] = s7


@njit(parallel=True, cache=True, fastmath=_FLAGS)
def arsinh_affine(y, a, eb, h):  # pragma: no cover - compiled
    """``h = arsinh(eb * y + a)`` row by row, NaN stays NaN."""
    n, g = y.shape
    for i in prange(n):
        ai = a[i]
        ei = eb[i]
        for k in range(g):
            v = y[i, k]
            ok = v == v
            Y = ei * (v if ok else 0.0) + ai
            lv = flog(abs(Y) + math.sqrt(1.0 + Y * Y))
            lv = lv if Y >= 0 else -lv
            h[i, k] = lv if ok else np.nan


@njit(parallel=True, cache=True)
def column_mean_var(h, nobs, mean, var):  # pragma: no cover - compiled
    """Column means and variances (denominator n - 1) over the non-NaN values; blocks of columns
    in parallel. ``nobs`` holds each column's count of non-NaN values."""
    n, g = h.shape
    width = 256
    for bi in prange((g + width - 1) // width):
        j0 = bi * width
        j1 = min(g, j0 + width)
        for j in range(j0, j1):
            mean[j] = 0.0
            var[j] = 0.0
        for i in range(n):
            for j in range(j0, j1):
                v = h[i, j]
                mean[j] += v if v == v else 0.0
        for j in range(j0, j1):
            mean[j] = mean[j] / nobs[j] if nobs[j] > 0 else np.nan
        for i in range(n):
            for j in range(j0, j1):
                d = h[i, j] - mean[j]
                var[j] += d * d if d == d else 0.0
        for j in range(j0, j1):
            var[j] = var[j] / (nobs[j] - 1) if nobs[j] > 1 else np.nan


# --------------------------------------------------------------------------------------------
# transcriptomics
# --------------------------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def scan_counts(x, out):  # pragma: no cover - compiled
    """Per row of a count matrix: ``out[i] = (first non-finite column, number of non-finite
    values, first negative column, first non-integer column, 1 if any value > 0)``, -1 where
    there is none. One pass, no temporary arrays."""
    n, g = x.shape
    for i in prange(n):
        first_bad = -1
        n_bad = 0
        first_neg = -1
        first_frac = -1
        pos = 0
        for k in range(g):
            v = np.float64(x[i, k])
            if v - v != 0.0:  # NaN or inf
                n_bad += 1
                if first_bad < 0:
                    first_bad = k
            elif v < 0.0:
                if first_neg < 0:
                    first_neg = k
            elif v != math.floor(v):
                if first_frac < 0:
                    first_frac = k
            if v > 0.0:
                pos = 1
        out[i, 0] = first_bad
        out[i, 1] = n_bad
        out[i, 2] = first_neg
        out[i, 3] = first_frac
        out[i, 4] = pos


@njit(parallel=True, cache=True, fastmath=_FLAGS)
def log_column_means(x, cols, out):  # pragma: no cover - compiled
    """``out[j]`` = mean over rows of ``log(x[:, cols[j]])`` (values >= 1: genes counted in every
    sample); blocks of columns in parallel."""
    n = x.shape[0]
    m = cols.shape[0]
    width = 256
    for b in prange((m + width - 1) // width):
        j0 = b * width
        j1 = min(m, j0 + width)
        acc = np.zeros(j1 - j0)
        for i in range(n):
            for j in range(j0, j1):
                acc[j - j0] += flog(np.float64(x[i, cols[j]]))
        for j in range(j0, j1):
            out[j] = acc[j - j0] / n


@njit(parallel=True, cache=True, fastmath=_FLAGS)
def log_ratio_medians(x, cols, means, out):  # pragma: no cover - compiled
    """``out[i]`` = median over ``j`` of ``log(x[i, cols[j]]) - means[j]`` (DESeq2's log ratios to
    the geometric means), one row at a time: no samples x genes temporary."""
    n = x.shape[0]
    m = cols.shape[0]
    for i in prange(n):
        r = np.empty(m)
        for j in range(m):
            r[j] = flog(np.float64(x[i, cols[j]])) - means[j]
        out[i] = np.median(r)


@njit(parallel=True, cache=True, fastmath=_FLAGS)
def log_normalise(x, cols, sf, add, scale, out):  # pragma: no cover - compiled
    """``out[i, j] = log(x[i, cols[j]] / sf[i] + add) * scale`` (normalised counts on a log scale)."""
    n = x.shape[0]
    m = cols.shape[0]
    for i in prange(n):
        inv = 1.0 / sf[i]
        for j in range(m):
            out[i, j] = flog(np.float64(x[i, cols[j]]) * inv + add) * scale


@njit(parallel=True, cache=True)
def take_columns(x, cols, out):  # pragma: no cover - compiled
    """``out = x[:, cols]`` (cast to ``out``'s type), rows in parallel."""
    m = cols.shape[0]
    for i in prange(x.shape[0]):
        for j in range(m):
            out[i, j] = x[i, cols[j]]


# --------------------------------------------------------------------------------------------
# batch correction: genes with missing values
# --------------------------------------------------------------------------------------------
@njit(inline="always")
def _cholesky_solve(S, b, m, min_pivot, unit_scale):  # pragma: no cover - compiled
    """Solve ``S x = b`` for the leading ``m x m`` block of symmetric ``S`` by Cholesky, in place
    (``S`` becomes its factor, ``b`` the solution). Returns False, leaving the rest undone, if a
    pivot falls below ``min_pivot`` times the square root of its diagonal entry (of 1 with
    ``unit_scale``: a matrix ``I - P`` whose entries are measured against the identity)."""
    for j in range(m):
        d = S[j, j]
        for k in range(j):
            d -= S[j, k] * S[j, k]
        if not d > 0.0 or math.sqrt(d) < min_pivot * (1.0 if unit_scale else math.sqrt(S[j, j])):
            return False
        d = math.sqrt(d)
        S[j, j] = d
        for i in range(j + 1, m):
            s = S[i, j]
            for k in range(j):
                s -= S[i, k] * S[j, k]
            S[i, j] = s / d
    for i in range(m):
        s = b[i]
        for k in range(i):
            s -= S[i, k] * b[k]
        b[i] = s / S[i, i]
    for i in range(m - 1, -1, -1):
        s = b[i]
        for k in range(i + 1, m):
            s -= S[k, i] * b[k]
        b[i] = s / S[i, i]
    return True


@njit(parallel=True, cache=True)
def fit_missing_genes(X, XA, G, missing, R, Z, min_pivot, beta, ok):  # pragma: no cover - compiled
    """Least-squares coefficients of genes with missing values (see ``batch._fit_missing``).

    ``X`` (n x q) design, ``XA = X (X'X)^-1``, ``G = X'X``; per gene ``t``: ``missing[t]`` its
    missing samples (bool, n), ``R[:, t] = X_obs' y_obs``, ``Z[:, t] = (X'X)^-1 R[:, t]`` (the fit
    as if nothing were missing). A gene with ``k <= q`` missing values is downdated by the
    Woodbury identity (a k x k system ``S = I - M A M'``, ``M = X[missing]``); one with more by
    the normal equations ``(G - M'M) beta = R`` (q x q). ``ok[t]`` is False where a Cholesky
    pivot falls below ``min_pivot`` (ill conditioned: the caller fits those genes by QR).
    """
    n, q = X.shape
    for t in prange(missing.shape[0]):
        idx = np.empty(n, dtype=np.int64)
        k = 0
        for i in range(n):
            if missing[t, i]:
                idx[k] = i
                k += 1
        if k <= q:
            S = np.empty((k, k))
            w = np.empty(k)
            for a in range(k):
                ia = idx[a]
                for b in range(a + 1):
                    ib = idx[b]
                    s = 0.0
                    for c in range(q):
                        s += XA[ia, c] * X[ib, c]
                    S[a, b] = (1.0 if a == b else 0.0) - s
                    S[b, a] = S[a, b]
                s = 0.0
                for c in range(q):
                    s += X[ia, c] * Z[c, t]
                w[a] = s
            if not _cholesky_solve(S, w, k, min_pivot, True):
                ok[t] = False
                continue
            for c in range(q):
                s = Z[c, t]
                for a in range(k):
                    s += w[a] * XA[idx[a], c]
                beta[c, t] = s
        else:
            Gg = G.copy()
            for a in range(k):
                ia = idx[a]
                for c in range(q):
                    xc = X[ia, c]
                    for d in range(c + 1):
                        Gg[c, d] -= xc * X[ia, d]
            for c in range(q):
                for d in range(c):
                    Gg[d, c] = Gg[c, d]
            r = R[:, t].copy()
            if not _cholesky_solve(Gg, r, q, min_pivot, False):
                ok[t] = False
                continue
            for c in range(q):
                beta[c, t] = r[c]
        ok[t] = True
