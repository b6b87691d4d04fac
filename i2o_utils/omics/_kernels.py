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
def gt_rows(out, starts, lab, fold, pre, pre_off, gm, gm_off, val, val_row, val_len, n_genes):  # pragma: no cover
    """Rows of wells ``starts``: row ``g`` of well ``w`` is ``pre[w] + gm[fold[w], g] + val[lab[w], g]``
    and a line feed. ``pre`` and ``gm`` are concatenated strings with offsets; the texts of label
    ``l`` follow one another from ``val[val_row[l]]``, ``val_len[l, g]`` bytes each. The sources
    need 8 bytes of padding at their end."""
    for w in prange(len(lab)):
        p = starts[w]
        end = starts[w + 1]
        p0 = pre_off[w]
        plen = pre_off[w + 1] - p0
        f = fold[w]
        lw = lab[w]
        v = val_row[lw]
        for g in range(n_genes):
            _copy(out, p, pre, p0, plen, end)
            p += plen
            s = gm_off[f, g]
            e = gm_off[f, g + 1]
            _copy(out, p, gm, s, e - s, end)
            p += e - s
            n = np.int64(val_len[lw, g])
            _copy(out, p, val, v, n, end)
            p += n
            v += n
            out[np.uint64(p)] = 10
            p += 1


# --------------------------------------------------------------------------------------------
# float32 -> shortest text (the GT values)
# --------------------------------------------------------------------------------------------
# A port of Ryu's f2s.c (Ulf Adams, "Ryu: fast float-to-string conversion", PLDI 2018; reference
# code Copyright 2018 Ulf Adams, under the Apache License 2.0 or the Boost Software License 1.0):
# the shortest decimal that reads back to the same float32, the closest to it where several are
# equally short. All products fit in signed 64-bit integers (the mantissa
# times 4 has at most 26 bits; the table entries at most 61), so no unsigned arithmetic is needed.
_F32_POW5_INV_BITCOUNT = 59
_F32_POW5_BITCOUNT = 61


def _pow5bits(e: int) -> int:
    return ((e * 1217359) >> 19) + 1


_F32_POW5_INV_SPLIT = np.array([(1 << (_pow5bits(i) - 1 + _F32_POW5_INV_BITCOUNT)) // 5**i + 1 for i in range(32)],
                               dtype=np.int64)
_F32_POW5_SPLIT = np.array([5**i >> (_pow5bits(i) - _F32_POW5_BITCOUNT) if _pow5bits(i) >= _F32_POW5_BITCOUNT
                            else 5**i << (_F32_POW5_BITCOUNT - _pow5bits(i)) for i in range(49)], dtype=np.int64)


@njit(inline="always")
def _pow5bits_c(e):  # pragma: no cover - compiled
    return ((e * 1217359) >> 19) + 1


@njit(inline="always")
def _mul_shift(m, factor, shift):  # pragma: no cover - compiled
    lo = factor & 0xFFFFFFFF
    hi = factor >> 32
    return (((m * lo) >> 32) + m * hi) >> (shift - 32)


@njit(inline="always")
def _pow5_factor(v):  # pragma: no cover - compiled
    count = 0
    while v % 5 == 0:
        v //= 5
        count += 1
    return count


@njit(inline="always")
def _shortest_f32(bits, inv_split, split):  # pragma: no cover - compiled
    """(decimal digits as an integer, power of ten) of the positive finite float32 with these
    bits (sign bit clear, not zero)."""
    mant = bits & 0x7FFFFF
    expo = (bits >> 23) & 0xFF
    if expo == 0:
        e2 = 1 - 127 - 23 - 2
        m2 = mant
    else:
        e2 = expo - 127 - 23 - 2
        m2 = (1 << 23) | mant
    accept = (m2 & 1) == 0
    mv = 4 * m2
    mp = 4 * m2 + 2
    mm_shift = 1 if (mant != 0 or expo <= 1) else 0
    mm = 4 * m2 - 1 - mm_shift
    vm_tz = False
    vr_tz = False
    last = 0
    if e2 >= 0:
        q = (e2 * 78913) >> 18
        e10 = q
        k = _F32_POW5_INV_BITCOUNT + _pow5bits_c(q) - 1
        i = -e2 + q + k
        vr = _mul_shift(mv, inv_split[q], i)
        vp = _mul_shift(mp, inv_split[q], i)
        vm = _mul_shift(mm, inv_split[q], i)
        if q != 0 and (vp - 1) // 10 <= vm // 10:
            l = _F32_POW5_INV_BITCOUNT + _pow5bits_c(q - 1) - 1
            last = _mul_shift(mv, inv_split[q - 1], -e2 + q - 1 + l) % 10
        if q <= 9:
            if mv % 5 == 0:
                vr_tz = _pow5_factor(mv) >= q
            elif accept:
                vm_tz = _pow5_factor(mm) >= q
            else:
                vp -= 1 if _pow5_factor(mp) >= q else 0
    else:
        q = ((-e2) * 732923) >> 20
        e10 = q + e2
        i = -e2 - q
        k = _pow5bits_c(i) - _F32_POW5_BITCOUNT
        j = q - k
        vr = _mul_shift(mv, split[i], j)
        vp = _mul_shift(mp, split[i], j)
        vm = _mul_shift(mm, split[i], j)
        if q != 0 and (vp - 1) // 10 <= vm // 10:
            j = q - 1 - (_pow5bits_c(i + 1) - _F32_POW5_BITCOUNT)
            last = _mul_shift(mv, split[i + 1], j) % 10
        if q <= 1:
            vr_tz = True
            if accept:
                vm_tz = mm_shift == 1
            else:
                vp -= 1
        elif q < 31:
            vr_tz = (mv & ((1 << (q - 1)) - 1)) == 0
    removed = 0
    if vm_tz or vr_tz:
        while vp // 10 > vm // 10:
            vm_tz = vm_tz and vm % 10 == 0
            vr_tz = vr_tz and last == 0
            last = vr % 10
            vr //= 10
            vp //= 10
            vm //= 10
            removed += 1
        if vm_tz:
            while vm % 10 == 0:
                vr_tz = vr_tz and last == 0
                last = vr % 10
                vr //= 10
                vp //= 10
                vm //= 10
                removed += 1
        if vr_tz and last == 5 and vr % 2 == 0:
            last = 4  # exactly halfway: round to even
        up = (vr == vm and (not accept or not vm_tz)) or last >= 5
    else:
        while vp // 10 > vm // 10:
            last = vr % 10
            vr //= 10
            vp //= 10
            vm //= 10
            removed += 1
        up = vr == vm or last >= 5
    return vr + (1 if up else 0), e10 + removed


@njit(inline="always")
def _put_f32(out, p, x, inv_split, split):  # pragma: no cover - compiled
    """Write the text of float32 ``x`` at ``out[p:]`` as Arrow formats it (double-conversion's
    shortest form: positional for decimal exponents -6..9, else ``d.ddde+XX``; ``-0``, ``inf``,
    ``nan``); returns the number of bytes (at most 17)."""
    bits = np.int64(np.float32(x).view(np.uint32))
    start = p
    if bits >> 31:
        out[p] = 45  # '-'
        p += 1
        bits &= 0x7FFFFFFF
    if bits >= 0x7F800000:
        if bits == 0x7F800000:
            out[p] = 105
            out[p + 1] = 110
            out[p + 2] = 102  # inf
        else:
            p = start
            out[p] = 110
            out[p + 1] = 97
            out[p + 2] = 110  # nan
        return p + 3 - start
    if bits == 0:
        out[p] = 48
        return p + 1 - start
    digits, e = _shortest_f32(bits, inv_split, split)
    n = 1
    t = digits
    while t >= 10:
        t //= 10
        n += 1
    dp = n + e  # digits d1..dn, value 0.d1..dn x 10^dp
    sci = dp - 1
    if -6 <= sci < 10:
        if dp <= 0:
            out[p] = 48
            out[p + 1] = 46
            p += 2
            for _ in range(-dp):
                out[p] = 48
                p += 1
            t = digits
            for k in range(n - 1, -1, -1):
                out[p + k] = 48 + t % 10
                t //= 10
            p += n
        elif dp >= n:
            t = digits
            for k in range(n - 1, -1, -1):
                out[p + k] = 48 + t % 10
                t //= 10
            p += n
            for _ in range(dp - n):
                out[p] = 48
                p += 1
        else:
            t = digits
            for k in range(n, -1, -1):
                if k == dp:
                    out[p + k] = 46
                else:
                    out[p + k] = 48 + t % 10
                    t //= 10
            p += n + 1
    else:
        t = digits
        for k in range(n - 1, 0, -1):
            out[p + 1 + k] = 48 + t % 10
            t //= 10
        out[p] = 48 + t
        if n > 1:
            out[p + 1] = 46
            p += n + 1
        else:
            p += 1
        out[p] = 101  # 'e'
        out[p + 1] = 43 if sci >= 0 else 45
        p += 2
        a = sci if sci >= 0 else -sci
        if a >= 10:
            out[p] = 48 + a // 10
            p += 1
        out[p] = 48 + a % 10
        p += 1
    return p - start


F32_TEXT_MAX = 17
"""Longest text :func:`format_f32_rows` writes for one value (``-0.0000012345679``)."""


@njit(parallel=True, cache=True)
def format_f32_rows(values, out, row_start, lens):  # pragma: no cover - compiled
    """Texts of every float32 in ``values`` (2-D), each row's texts one after another from
    ``out[row_start[r]]`` (rows need ``F32_TEXT_MAX`` bytes per value at most); ``lens`` gets
    every text's length."""
    inv_split = _F32_POW5_INV_SPLIT
    split = _F32_POW5_SPLIT
    for r in prange(values.shape[0]):
        p = row_start[r]
        for g in range(values.shape[1]):
            n = _put_f32(out, p, values[r, g], inv_split, split)
            lens[r, g] = n
            p += n


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
