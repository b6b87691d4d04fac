"""Variance-stabilising normalisation (vsn) of protein intensities, after Huber et al. (2002).

The paper normalised the TMT protein quantifications with the R/Bioconductor package ``vsn``.
The one Python port on PyPI when this module was written (``vsn`` 0.1.1, single-author) loops
over every matrix element in Python (seconds per call at the paper's 1,536 x 4,986 per stimulus,
called at every trimming round) and draws subsamples from NumPy's global random state, so this
module implements the method after the R package's algorithm (``vsnMatrix`` -> ``vsnLTS`` ->
``vsnML``) and its vignette "Likelihood Calculations for vsn".

Model
-----
For sample ``i`` and protein ``k`` with intensity ``y_ik``:

.. math:: \\operatorname{arsinh}\\big(e^{b_i} y_{ik} + a_i\\big) = \\mu_k + \\varepsilon_{ik},
          \\quad \\varepsilon_{ik} \\sim N(0, \\sigma^2)

``a_i, b_i`` calibrate each sample (affine: offset and log scale factor), the arsinh ("glog")
stabilises the variance of an additive-multiplicative error model. The parameters maximise the
profile likelihood (``mu`` and ``sigma^2`` replaced by their ML estimates) including the Jacobian
of the transformation. Robustness: least trimmed squares as ``vsnLTS``: 7 rounds; after
each, proteins are split into 5 slices by the rank of their mean (``cut(rank(mean), breaks = 5)``)
and the next round is fitted on the proteins whose residual variance (over their observed samples,
denominator n - 1) is within the ``lts_quantile`` (0.9) quantile of their slice, plus all proteins
of the lowest slice (versions of R ``vsn`` differ in these two details of the slicing and the
residual variance). Output is on R's glog2 scale:
``arsinh(e^b y + a) / log(2) - log2(2 e^{mean(b)})``, close to ``log2(y)`` for large ``y``.

What differs from R ``vsn``
---------------------------
* one stratum, ``calib = "affine"``, normalisation "among themselves": no ``strata``, no
  ``reference`` (incremental) mode, no ``calib = "none"``;
* missing values are NaN (convert zeros meaning "not quantified" before the call, as in R);
  proteins observed in fewer than 3 samples are left out of the fit (they are still transformed):
  with a free offset and scale per sample, a protein seen once or twice can be fitted exactly at
  the arsinh's steepest point, and the likelihood then grows without bound as the scale factors
  grow, dragging the fit away from the other proteins;
* ``subsample`` draws its proteins from ``numpy.random.default_rng(seed)`` (R uses its own RNG),
  so a subsampled fit is reproducible but not the same draw as R's;
* the optimiser is SciPy's L-BFGS-B with R's settings (memory 5, ``factr = 5e7``, ``pgtol =
  2e-4``, start ``a = 0, b = 1``) rather than R's C copy of the same algorithm. On complete data
  the fit agrees with a Python port of R's code (``vsn`` 0.1.1 on PyPI, which reports agreement
  with R's ``justvsn``) to about 1e-9 (``tests/test_omics_vsn.py``). As in R, the stopping rule
  (relative decrease of the likelihood) often fires before the optimum (offsets and log scale
  factors differ in curvature by orders of magnitude, and moving all samples together hardly
  changes the likelihood); tighter rules (``factr=10, pgtol=1e-12``)
  reach it (tested against the port run to the optimum).

Arrays are samples x proteins (R: proteins x samples).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import rankdata

from i2o_utils.omics._checks import OmicsInputError, as_matrix, check_no_empty_samples, check_no_inf

MIN_PROTEINS = 42
"""R's ``minDataPointsPerStratum``: more proteins than this are needed for a fit."""
N_SLICES = 5
_NUMBA_MIN_SIZE = 250_000
"""Matrices with at least this many entries use the compiled likelihood (``_kernels``: 8-12x)."""


@dataclass(frozen=True)
class VsnFit:
    """A fitted vsn model.

    Attributes
    ----------
    offset, log_scale
        Per-sample calibration ``a_i`` and ``b_i``: ``arsinh(exp(b_i) * y + a_i)``.
    hoffset
        ``log2(2 * exp(mean(b)))``, subtracted so that values read like log2 intensities.
    mu
        Per-protein mean on the arsinh scale from the final round (NaN for proteins not in it).
    sigsq
        Residual variance on the arsinh scale.
    optimizer_status
        SciPy L-BFGS-B status of the final round (0 converged, 1 iteration limit, 2 line search
        found no further decrease).
    n_rounds, n_fitted, n_evaluations
        Least-trimmed-squares rounds run, proteins used in the final round, likelihood evaluations.
    """

    offset: np.ndarray
    log_scale: np.ndarray
    hoffset: float
    mu: np.ndarray
    sigsq: float
    optimizer_status: int
    n_rounds: int
    n_fitted: int
    n_evaluations: int = 0

    def transform(self, x: Any) -> np.ndarray | pd.DataFrame:
        """Apply the fitted transformation to ``x`` (same samples, any proteins), glog2 scale."""
        v, samples, genes = as_matrix(x, "x")
        if v.shape[0] != len(self.offset):
            raise OmicsInputError(f"vsn transform: x has {v.shape[0]} samples, the fit {len(self.offset)}")
        check_no_inf(v, "x", samples, genes, allow_nan=True)
        out = np.arcsinh(np.exp(self.log_scale)[:, None] * v + self.offset[:, None])
        out /= math.log(2)
        out -= self.hoffset
        return pd.DataFrame(out, index=samples, columns=genes) if samples is not None else out


# --------------------------------------------------------------------------------------------
# the negative profile log-likelihood and its gradient
# --------------------------------------------------------------------------------------------
class _Data:
    """An intensity matrix with what every likelihood evaluation on it reuses: the counts of
    observed values and, for the compiled engine, the work array (a fresh samples x proteins array
    at every evaluation costs about as much as computing it)."""

    def __init__(self, y: np.ndarray, engine: str = "auto"):
        if engine not in ("auto", "numpy", "numba"):
            raise OmicsInputError(f"vsn: engine must be 'auto', 'numpy' or 'numba', got {engine!r}")
        self.y = np.ascontiguousarray(y, dtype=np.float64)
        obs = ~np.isnan(self.y)
        self.n_obs_sample = obs.sum(axis=1)
        self.n_obs_gene = obs.sum(axis=0)
        self.numba = engine == "numba" or (engine == "auto" and self.y.size >= _NUMBA_MIN_SIZE)
        self._h = np.empty_like(self.y) if self.numba else None

    def terms(self, a: np.ndarray, eb: np.ndarray):
        """(Jacobian term per sample, the 5 sums per sample, mu per protein)."""
        if not self.numba:
            obs = ~np.isnan(self.y)
            y0 = np.where(obs, self.y, 0.0)
            Y = eb[:, None] * y0 + a[:, None]
            h = np.where(obs, np.arcsinh(Y), 0.0)
            jac = 0.5 * np.where(obs, np.log1p(Y * Y), 0.0).sum(axis=1)
            mu = h.sum(axis=0) / obs.sum(axis=0)
            r = np.where(obs, h - mu, 0.0)
            AA = np.where(obs, 1.0 / (1.0 + Y * Y), 0.0)
            A = np.sqrt(AA)
            AAY = AA * Y
            sums = np.stack([(r * r).sum(1), (r * A).sum(1), AAY.sum(1), (r * A * y0).sum(1), (AAY * y0).sum(1)], 1)
            return jac, sums, mu
        import numba

        from i2o_utils.omics._kernels import vsn_pass1, vsn_pass2

        jac = np.empty(self.y.shape[0])
        colsum = np.empty((min(self.y.shape[0], 4 * numba.get_num_threads()), self.y.shape[1]))
        vsn_pass1(self.y, a, eb, self._h, jac, colsum)
        mu = colsum.sum(axis=0) / self.n_obs_gene
        sums = np.empty((self.y.shape[0], 5))
        vsn_pass2(self.y, a, eb, self._h, mu, sums)
        return jac, sums, mu


def negative_profile_loglik(y: np.ndarray | _Data, offset: np.ndarray, log_scale: np.ndarray,
                            engine: str = "auto") -> tuple[float, np.ndarray, np.ndarray, float]:
    """vsn's negative profile log-likelihood, its gradient and the ML estimates of ``mu``, ``sigma^2``.

    Parameters
    ----------
    y
        Intensities, samples x proteins, NaN for missing; every protein observed at least once
        (or the ``_Data`` that :func:`vsn_fit` prepares once for all evaluations).
    offset, log_scale
        ``a`` and ``b`` per sample.
    engine
        ``"numpy"``, ``"numba"`` or ``"auto"`` (numba for large matrices).

    Returns
    -------
    (nll, grad, mu, sigsq)
        ``grad`` is ``[d/da_1..d/da_n, d/db_1..d/db_n]`` (the vignette's equations).
    """
    d = y if isinstance(y, _Data) else _Data(y, engine)
    eb = np.exp(log_scale)
    jac, sums, mu = d.terms(offset, eb)
    ntot = float(d.n_obs_sample.sum())
    sigsq = sums[:, 0].sum() / ntot
    nll = ntot / 2 * math.log(2 * math.pi * sigsq) + ntot / 2 - float((d.n_obs_sample * log_scale).sum()) \
        + float(jac.sum())
    ga = sums[:, 1] / sigsq + sums[:, 2]
    gb = -d.n_obs_sample + eb * (sums[:, 3] / sigsq + sums[:, 4])
    return nll, np.concatenate([ga, gb]), mu, sigsq


# --------------------------------------------------------------------------------------------
# the fit
# --------------------------------------------------------------------------------------------
def vsn_fit(x: Any, lts_quantile: float = 0.9, subsample: int = 0, n_rounds: int = 7,
            factr: float = 5e7, pgtol: float = 2e-4, maxit: int = 60_000, seed: int = 0,
            min_observed: int = 3, engine: str = "auto") -> VsnFit:
    """Fit vsn (affine calibration per sample + arsinh) to intensities, samples x proteins.

    Parameters
    ----------
    x
        Intensities (array or DataFrame), NaN for missing values.
    lts_quantile
        Least-trimmed-squares quantile in [0.5, 1] (R: 0.9; 1 = plain maximum likelihood).
    subsample
        If > 0, fit on this many randomly chosen proteins (R's ``subsample``); the fit is then
        applied to all.
    n_rounds
        Least-trimmed-squares rounds (R: ``cvg.niter = 7``).
    factr, pgtol, maxit
        L-BFGS-B stopping rules (R's defaults).
    seed
        Seed of the ``subsample`` draw.
    min_observed
        Proteins observed in fewer samples are left out of the fit (and still transformed).
    engine
        Likelihood code: ``"auto"``, ``"numpy"`` or ``"numba"``.

    Raises
    ------
    OmicsInputError
        Fewer than 2 samples; not more than 42 proteins observed (R's minimum); inf values; a
        sample with no observed value.
    """
    v, samples, genes = as_matrix(x, "intensities")
    check_no_inf(v, "intensities", samples, genes, allow_nan=True)
    if not 0.5 <= lts_quantile <= 1:
        raise OmicsInputError(f"vsn: lts_quantile must be in [0.5, 1], got {lts_quantile}")
    n, g = v.shape
    if n < 2:
        raise OmicsInputError("vsn: at least 2 samples are needed to fit without a reference")
    observed = np.flatnonzero((~np.isnan(v)).sum(axis=0) >= min(min_observed, n))
    if subsample and subsample < len(observed):
        observed = np.sort(np.random.default_rng(seed).choice(observed, size=int(subsample), replace=False))
    if len(observed) <= MIN_PROTEINS:
        raise OmicsInputError(f"vsn: {len(observed)} proteins observed in at least {min_observed} samples; more "
                              f"than {MIN_PROTEINS} are needed for a reliable fit (R vsn's minDataPointsPerStratum)")
    y = np.ascontiguousarray(v if len(observed) == g else v[:, observed])
    check_no_empty_samples(~np.isnan(y), "intensities (proteins used for the vsn fit)", samples)
    p = np.concatenate([np.zeros(n), np.ones(n)])  # R's start: a = 0, b = 1
    # R's vsnML: L-BFGS-B on the raw parameters (memory 5, offsets free, log scales in [-100, 100])
    lbfgsb = dict(method="L-BFGS-B", bounds=[(None, None)] * n + [(-100.0, 100.0)] * n,
                  options={"maxiter": maxit, "maxcor": 5, "ftol": factr * np.finfo(float).eps, "gtol": pgtol})
    full = _Data(y, engine)
    whsel = np.arange(y.shape[1])
    n_eval = 0
    for rounds in range(1, n_rounds + 1):
        d = full if len(whsel) == y.shape[1] else _Data(y[:, whsel], engine)
        res = minimize(lambda q: negative_profile_loglik(d, q[:n], q[n:])[:2], p, jac=True, **lbfgsb)
        p = res.x
        status = int(res.status)
        _, _, mu_sel, sigsq = negative_profile_loglik(d, p[:n], p[n:])
        n_eval += res.nfev + 1
        del d
        if abs(lts_quantile - 1) < math.sqrt(np.finfo(float).eps) or rounds == n_rounds:
            break  # (R computes the next selection after the last round too, and discards it)
        # per protein, mean and variance (denominator n - 1) of the transformed observed values
        hy = np.exp(p[n:])[:, None] * full.y
        hy += p[:n, None]
        np.arcsinh(hy, out=hy)
        with np.errstate(invalid="ignore", divide="ignore"):
            hmean = np.nansum(hy, axis=0) / full.n_obs_gene
            hy -= hmean
            rvar = np.nansum(hy * hy, axis=0) / (full.n_obs_gene - 1)
        slice_ = pd.cut(rankdata(hmean, method="average"), N_SLICES, labels=False) + 1  # R: cut(rank(mean), breaks=5)
        keep = slice_ == 1
        for s in range(1, N_SLICES + 1):
            m = slice_ == s
            vals = rvar[m & np.isfinite(rvar)]
            if len(vals) == 0:
                raise OmicsInputError("vsn: too many missing values, not enough data for fitting")
            keep |= m & (rvar <= np.quantile(vals, lts_quantile))
        whsel = np.flatnonzero(keep)
    mu = np.full(g, np.nan)
    mu[observed[whsel]] = mu_sel  # (the loop ends at a break: whsel is the last round's selection)
    a, b = p[:n], p[n:]
    return VsnFit(offset=a, log_scale=b, hoffset=float(math.log2(2 * math.exp(b.mean()))), mu=mu,
                  sigsq=float(sigsq), optimizer_status=status, n_rounds=rounds, n_fitted=len(mu_sel),
                  n_evaluations=n_eval)


def vsn(x: Any, **kwargs) -> np.ndarray | pd.DataFrame:
    """Fit vsn and return the transformed values (R's ``justvsn``), samples x proteins, glog2 scale.

    Keyword arguments go to :func:`vsn_fit`. Missing values (NaN) stay missing.
    """
    return vsn_fit(x, **kwargs).transform(x)


# --------------------------------------------------------------------------------------------
# mean-sd diagnostics (R vsn's meanSdPlot)
# --------------------------------------------------------------------------------------------
def mean_sd_trend(x: Any, window: float = 0.1) -> pd.DataFrame:
    """Per-protein mean and standard deviation over samples, with the running median of the sd
    along the rank of the mean (R ``meanSdPlot``, ``ranks = TRUE``).

    Parameters
    ----------
    x
        Samples x proteins (NaN ignored).
    window
        Running-median window as a fraction of the proteins.

    Returns
    -------
    pandas.DataFrame
        Sorted by mean: ``mean``, ``sd``, ``rank`` (1..n), ``sd_trend``.
    """
    v, _, genes = as_matrix(x, "x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN proteins are dropped below
        mean = np.nanmean(v, axis=0)
        sd = np.nanstd(v, axis=0, ddof=1)
    ok = np.isfinite(mean) & np.isfinite(sd)
    df = pd.DataFrame({"mean": mean[ok], "sd": sd[ok]},
                      index=(genes[ok] if genes is not None else np.flatnonzero(ok))).sort_values("mean")
    df["rank"] = np.arange(1, len(df) + 1)
    w = max(3, int(round(window * len(df))) | 1)
    df["sd_trend"] = df["sd"].rolling(w, center=True, min_periods=1).median().to_numpy()
    return df


def mean_sd_slope(x: Any, window: float = 0.1) -> float:
    """Relative change of the sd trend from the lowest to the highest fifth of mean ranks,
    ``(trend_top - trend_bottom) / median(sd)``: about 0 when the variance is stabilised."""
    df = mean_sd_trend(x, window)
    k = max(1, len(df) // 5)
    return float((df["sd_trend"].iloc[-k:].median() - df["sd_trend"].iloc[:k].median()) / df["sd"].median())
