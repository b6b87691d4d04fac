"""Checks of the preprocessing: PCA of the control wells per plate (paper Fig 9), plate effect sizes.

The paper checks qualitatively, by a PCA of the control (NT) wells coloured by plate, that plate
effects are gone after batch correction; :func:`plate_effect_summary` puts a number on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from i2o_utils.config import CONTROL
from i2o_utils.data.layout import read_truth_genes, truth_path
from i2o_utils.omics.vsn import mean_sd_slope


def _layer(adata, layer: str) -> np.ndarray:
    return np.asarray(adata.layers[layer] if layer in adata.layers else adata.X, dtype=np.float64)


def control_pca(adata, layer: str, control: str = CONTROL, n_components: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
    """PCA of the control wells of one set.

    Genes with a missing value in any control well are left out; genes are centred, not scaled.

    Returns
    -------
    (scores, explained)
        ``scores``: one row per control well, ``plate_barcode`` and ``PC1..PCk``; ``explained``:
        fraction of variance of each component.
    """
    ctrl = (adata.obs["target"].astype(str) == control).to_numpy()
    x = _layer(adata, layer)[ctrl]
    x = x[:, np.isfinite(x).all(axis=0)]
    k = int(min(n_components, max(x.shape[0] - 1, 0), x.shape[1]))
    scores = np.full((len(x), n_components), np.nan)
    explained = np.full(n_components, np.nan)
    if k > 0:
        u, s, _ = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
        scores[:, :k] = u[:, :k] * s[:k]
        explained[:k] = s[:k] ** 2 / (s**2).sum() if (s**2).sum() > 0 else np.nan
    out = pd.DataFrame({"plate_barcode": adata.obs["plate_barcode"].to_numpy()[ctrl]}, index=adata.obs_names[ctrl])
    out[[f"PC{i + 1}" for i in range(n_components)]] = scores
    return out, explained


def plate_r2(values: np.ndarray, plates) -> float:
    """Fraction of the total variance of ``values`` (wells x features) explained by the plate
    (between-plate sum of squares over total sum of squares)."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)  # (one feature: a column)
    p = np.asarray(plates)
    centred = v - v.mean(axis=0)
    total = float((centred**2).sum())
    if total == 0:
        return float("nan")
    return sum(float((p == q).sum()) * float((centred[p == q].mean(axis=0) ** 2).sum()) for q in np.unique(p)) / total


def plate_effect_summary(sets, control: str = CONTROL) -> pd.DataFrame:
    """Plate effect in the control wells of every set, before and after batch correction.

    Columns: ``omics, stimulus, layer, controls, plates, plate_r2_pc12`` (share of the first two
    control PCs' variance explained by plate), ``plate_r2_genes`` (share of all genes' variance),
    ``chance`` (the expectation of either share without any plate effect: ``(plates - 1) /
    (controls - 1)``).
    """
    rows = []
    for (o, s), a in (sets.data if hasattr(sets, "data") else sets).items():
        ctrl = (a.obs["target"].astype(str) == control).to_numpy()
        plates = a.obs["plate_barcode"].to_numpy()[ctrl]
        n, k = int(ctrl.sum()), len(set(plates))
        for layer in ("normalised", "corrected"):
            scores, _ = control_pca(a, layer, control)
            x = _layer(a, layer)[ctrl]
            x = x[:, np.isfinite(x).all(axis=0)]
            rows.append({"omics": o, "stimulus": s, "layer": layer, "controls": n, "plates": k,
                         "plate_r2_pc12": plate_r2(scores[["PC1", "PC2"]].to_numpy(), plates) if n > 2 else np.nan,
                         "plate_r2_genes": plate_r2(x, plates) if n > 1 else np.nan,
                         "chance": (k - 1) / (n - 1) if n > 1 else np.nan})
    return pd.DataFrame(rows, columns=["omics", "stimulus", "layer", "controls", "plates", "plate_r2_pc12",
                                       "plate_r2_genes", "chance"])


def mean_sd_summary(sets, omics: str = "proteomics", window: float = 0.1) -> pd.DataFrame:
    """Slope of the mean-sd trend (see :func:`i2o_utils.omics.vsn.mean_sd_slope`) of the raw, log2 and
    vsn-normalised intensities of each stimulus: near 0 when the variance does not depend on the mean."""
    rows = []
    for (o, s), a in (sets.data if hasattr(sets, "data") else sets).items():
        if o != omics:
            continue
        raw = np.asarray(a.layers["raw"], dtype=np.float64)
        raw = np.where(raw > 0, raw, np.nan)
        rows.append({"omics": o, "stimulus": s, "raw": mean_sd_slope(raw, window),
                     "log2": mean_sd_slope(np.log2(raw), window),
                     "vsn": mean_sd_slope(np.asarray(a.layers["normalised"], dtype=np.float64), window)})
    return pd.DataFrame(rows, columns=["omics", "stimulus", "raw", "log2", "vsn"]).round(3)


def filter_against_truth(sets, root=None) -> pd.DataFrame | None:
    """Genes kept and filtered per kind of the simulated truth (``simulation/truth_genes.csv``).

    The simulated screen marks the genes expressed too low to pass the filter as ``kind ==
    "low"``; this table shows whether the filter removed exactly those. ``None`` without a truth
    table (real data).
    """
    truth = read_truth_genes(truth_path(root))
    if truth is None:
        return None
    rows = []
    for (o, s), table in (sets.genes if hasattr(sets, "genes") else sets).items():
        merged = table[["gene", "kept"]].astype({"gene": str}).merge(truth[truth["omics"] == o], on="gene", how="left")
        merged["kind"] = merged["kind"].fillna("not in truth table")
        for kind, grp in merged.groupby("kind"):
            rows.append({"omics": o, "stimulus": s, "kind": kind, "genes": len(grp),
                         "kept": int(grp["kept"].sum()), "filtered": int((~grp["kept"]).sum())})
    return pd.DataFrame(rows, columns=["omics", "stimulus", "kind", "genes", "kept", "filtered"])
