"""CORAL: CORrelation ALignment of each plate's well embeddings (paper: Fig 7).

Sun, Feng & Saenko (2016), *Return of Frustratingly Easy Domain Adaptation* (AAAI), Algorithm 1::

    C_S = cov(D_S) + eye(d)
    C_T = cov(D_T) + eye(d)
    D_S = D_S * C_S^(-1/2)      % whitening with the source covariance
    D_S* = D_S * C_T^(1/2)      % re-colouring with the target covariance

The Image2Omics authors removed plate effects from the well embeddings with it, the source being
one plate's non-targeting (NT) control wells and the target all NT control wells of the screen;
the transform fitted on a plate's NT wells is applied to every well of that plate.

Two choices made here, both switchable:

* ``center``: the source is centred on its NT mean before whitening and the target's NT mean is
  added after re-colouring. Algorithm 1 aligns second moments only; a plate effect is largely a
  shift, which the centring removes (with ``center=False`` the transform is Algorithm 1 as written).
* ``standardize``: features are first scaled by the target's per-dimension standard deviation, so
  that the regularising identity (``reg * eye``) has the same meaning whatever the scale of the
  embedding (Sun et al. use standardised features); the result is scaled back.

The matrix square roots use the eigen-decomposition of the symmetric, positive definite
regularised covariances; ``tests/test_analysis_coral.py`` checks them against
``scipy.linalg.sqrtm`` and ``inv`` (the form of the reference implementations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["CoralTransform", "fit_coral", "coral_align_plates", "regularised_covariance"]


def regularised_covariance(x: np.ndarray, reg: float = 1.0) -> np.ndarray:
    """Sample covariance (ddof=1) of the rows of ``x`` plus ``reg`` times the identity."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least two rows of features for a covariance, got shape {x.shape}")
    c = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])
    return c + reg * np.eye(x.shape[1])


def _sym_power(c: np.ndarray, power: float) -> np.ndarray:
    vals, vecs = np.linalg.eigh(c)
    if vals.min() <= 0:
        raise ValueError(f"covariance is not positive definite (smallest eigenvalue {vals.min():.3g}); "
                         "use reg > 0")
    return (vecs * vals**power) @ vecs.T


@dataclass
class CoralTransform:
    """``x -> (x - source_mean) @ matrix + target_mean`` (means are zero when not centring)."""

    matrix: np.ndarray
    source_mean: np.ndarray
    target_mean: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.source_mean) @ self.matrix + self.target_mean


def fit_coral(source: np.ndarray, target: np.ndarray, reg: float = 1.0, center: bool = True) -> CoralTransform:
    """The CORAL map from ``source`` rows to ``target`` rows: ``C_S^(-1/2) C_T^(1/2)``.

    Parameters
    ----------
    source, target
        (n_s, d) and (n_t, d) feature matrices.
    reg
        Added to the diagonal of both covariances (Sun et al.: 1).
    center
        Remove the source mean and add the target mean (see the module docstring).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(f"source {source.shape} and target {target.shape} must be (n, d) with the same d")
    cs = regularised_covariance(source, reg)
    ct = regularised_covariance(target, reg)
    a = _sym_power(cs, -0.5) @ _sym_power(ct, 0.5)
    d = source.shape[1]
    mu_s = source.mean(axis=0) if center else np.zeros(d)
    mu_t = target.mean(axis=0) if center else np.zeros(d)
    return CoralTransform(matrix=a, source_mean=mu_s, target_mean=mu_t)


def coral_align_plates(emb: np.ndarray, wells: pd.DataFrame, control: str = "NT", reg: float = 1.0,
                       center: bool = True, standardize: bool = True, plate_col: str = "plate",
                       target_col: str = "target", target_by: str | None = None) -> np.ndarray:
    """Align every plate's well embeddings to the screen's NT control wells (the authors' choice).

    For each plate, CORAL is fitted with source = that plate's NT wells and target = all NT wells
    of the screen, and applied to every well of the plate.

    Parameters
    ----------
    emb
        (W, d) well embeddings; rows with NaN stay NaN.
    wells
        One row per embedding with ``plate_col`` and ``target_col``.
    control
        Target name of the control wells.
    reg, center
        See :func:`fit_coral`.
    standardize
        Scale features by the NT wells' standard deviation before, and back after.
    target_by
        None (the authors' choice): the target is every NT well of the screen. A column name
        (e.g. ``"cell_state"``): the target is the NT wells with the plate's value of that column,
        so that plates of different stimuli are not pulled onto one another.

    Raises
    ------
    ValueError
        If the shapes disagree, or a plate has fewer than two NT wells (its covariance is
        undefined), naming the plate.
    """
    x = np.asarray(emb, dtype=np.float64)
    w = wells.reset_index(drop=True)
    if x.ndim != 2 or len(x) != len(w):
        raise ValueError(f"{len(w)} wells but embeddings of shape {x.shape}")
    for c in (plate_col, target_col) + ((target_by,) if target_by else ()):
        if c not in w.columns:
            raise ValueError(f"wells table has no column {c!r}")
    ok = np.isfinite(x).all(axis=1)
    plates = w[plate_col].astype(str).to_numpy()
    is_ctrl = (w[target_col].astype(str) == control).to_numpy() & ok
    if is_ctrl.sum() < 2:
        raise ValueError(f"CORAL needs NT control wells ({control!r}); found {int(is_ctrl.sum())}")
    scale = x[is_ctrl].std(axis=0, ddof=1) if standardize else np.ones(x.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    xs = x / scale
    group = w[target_by].astype(str).to_numpy() if target_by else np.zeros(len(w), dtype=str)
    out = np.full_like(x, np.nan)
    for p in pd.unique(plates):
        on_plate = (plates == p) & ok
        src = xs[on_plate & is_ctrl]
        if len(src) < 2:
            raise ValueError(f"plate {p}: {len(src)} NT control well(s) with an embedding; CORAL needs at least 2")
        values = np.unique(group[on_plate])
        if len(values) != 1:
            raise ValueError(f"plate {p} holds several values of {target_by!r} ({list(values)}): "
                             "no single target for it")
        t = fit_coral(src, xs[is_ctrl & (group == values[0])], reg=reg, center=center)
        out[on_plate] = t(xs[on_plate])
    return out * scale
