"""Compiled (numba) kernels of the omics pipeline, imported on first use.

They are module-level functions so that numba's on-disk cache serves them to every later process
(kernels defined inside functions are compiled again in each process, a second or more apiece).

``flog`` is fdlibm's ``__ieee754_log`` (Sun Microsystems, 1993; the same code is in musl and
FreeBSD, error below 1 ulp), written without branches or library calls so that the compiler
vectorises the loops that use it: about 4x faster than calling the C library's ``log`` element
by element on x86-64, whose numba wheels come without a vector math library. It is valid for
positive normal numbers (>= 2.2e-308); every caller here passes values >= 1 or >= a positive
pseudocount. Indices of the byte-copying kernel are unsigned: with signed ones numba checks each
index for wrap-around, which keeps the loops from being optimised.
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
@njit(parallel=True, cache=True, fastmath=_FLAGS)
def log_columns(x, cols, out):  # pragma: no cover - compiled
    """``out[:, j] = log(x[:, cols[j]])`` (values >= 1: counts in every sample)."""
    n = x.shape[0]
    m = cols.shape[0]
    for i in prange(n):
        for j in range(m):
            out[i, j] = flog(np.float64(x[i, cols[j]]))


@njit(parallel=True, cache=True)
def row_medians(x, out):  # pragma: no cover - compiled
    """Median of every row."""
    for i in prange(x.shape[0]):
        out[i] = np.median(x[i])


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
# GT CSV rows
# --------------------------------------------------------------------------------------------
@njit(inline="always")
def _copy(out, p, src, s, n, end):  # pragma: no cover - compiled
    # blocks of 8 bytes (one load and one store each) that may write up to 7 bytes past p + n,
    # where the next string goes; near ``end`` (the end of this well's rows) byte by byte
    p = np.uint64(p)
    s = np.uint64(s)
    if p + np.uint64(n) + np.uint64(8) <= np.uint64(end):
        for b in range(0, n, 8):
            bb = np.uint64(b)
            for k in range(8):
                kk = np.uint64(k)
                out[p + bb + kk] = src[s + bb + kk]
    else:
        for k in range(n):
            kk = np.uint64(k)
            out[p + kk] = src[s + kk]


@njit(nogil=True, parallel=True, cache=True)
def gt_rows(out, starts, lab, fold, pre, pre_off, gm, gm_off, val, val_off, n_genes):  # pragma: no cover
    """Rows of wells ``starts``: row ``g`` of well ``w`` is ``pre[w] + gm[fold[w], g] + val[lab[w], g]``
    and a line feed, from concatenated strings and their offsets. The sources need 8 bytes of
    padding at their end."""
    for w in prange(len(lab)):
        p = starts[w]
        end = starts[w + 1]
        p0 = pre_off[w]
        plen = pre_off[w + 1] - p0
        f = fold[w]
        base = lab[w] * n_genes
        for g in range(n_genes):
            _copy(out, p, pre, p0, plen, end)
            p += plen
            s = gm_off[f, g]
            e = gm_off[f, g + 1]
            _copy(out, p, gm, s, e - s, end)
            p += e - s
            s = val_off[base + g]
            e = val_off[base + g + 1]
            _copy(out, p, val, s, e - s, end)
            p += e - s
            out[np.uint64(p)] = 10
            p += 1
