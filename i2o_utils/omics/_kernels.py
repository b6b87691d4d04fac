"""Compiled (numba) kernels of vsn's likelihood, imported on first use.

This is the one hand-written compiled step of the omics pipeline that earns its place: the vsn fit
evaluates its likelihood some 80-250 times per stimulus, and at the paper's size (1,536 wells x
4,986 proteins) one evaluation takes 31-36 ms against 280-430 ms with NumPy (8-12x over repeated
runs on 2 shared cores; a whole fit about 20 s against 270 s; ``python -m benchmarks.bench_omics
--kernels`` measures it again).
Compiled versions of the pipeline's other steps gained less than 5x over NumPy at the paper's size
(count checks 1.7x, size factors 2.4x, log normalisation 4.2x, column take 1.6x, vsn transform
2.0x and trimming statistics 1.8x, missing-value batch fits 1.0-1.6x), so those steps use NumPy.

The kernels are module-level functions so that numba's on-disk cache serves them to every later
process. ``flog`` is fdlibm's ``__ieee754_log`` (Sun Microsystems, 1993; the same code is in musl
and FreeBSD, error below 1 ulp), written without branches or library calls so that the compiler
vectorises the loops that use it (numba's wheels for x86-64 come without a vector math library).
It is valid for positive normal numbers; every argument here is >= 1.
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


# with vsn_pass2: 8-12x over the NumPy path of vsn._Data.terms at 1,536 x 4,986 (module notes)
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
    """The 5 per-sample sums of the likelihood's gradient (branch-free: selects instead of NaN
    tests, so that the loop vectorises)."""
    n, g = y.shape
    for i in prange(n):
        ssq = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
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
        out[i, 0] = ssq
        out[i, 1] = s1
        out[i, 2] = s2
        out[i, 3] = s3
        out[i, 4] = s4
