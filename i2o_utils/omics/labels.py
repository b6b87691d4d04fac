"""The label protocol (paper: “Label Calculation”) and the per-gene z-scores of the model targets.

Imaging wells and omics wells are different physical wells, so a well's label is built per group:

1. group the omics wells of one omics layer by perturbation (``target``) and stimulus;
2. draw two wells of the group at random (without replacement) and average their values;
3. the average is the label of every imaging well of that perturbation and stimulus.

There are two imaging plates per omics plate, so the draw is made once per label seed: an imaging
plate's ``replicate`` (0 or 1 in ``metadata.csv``) selects ``OmicsConfig.label_seeds[replicate]``.

Exactly, for one (omics, stimulus) set and seed ``s``: the groups are visited in sorted target
order with one ``numpy.random.default_rng(s)``; a group of ``m`` omics wells (drawn over all omics
plates of the stimulus, as the paper groups by perturbation and stimulus only) gets
``rng.choice(m, size=min(2, m), replace=False)`` of its wells taken in (plate, well) order. The
label is the mean of the drawn wells, gene by gene, ignoring missing values (protein intensities
that were not quantified). A gene missing in every drawn well falls back to the mean over the
whole group and, if missing in the whole group, to the gene's smallest observed value in the set
(proteins go missing when they are low); such values are counted in the result.

Model targets are z-scores per gene with the train fold's mean and standard deviation (ddof=1),
undone after prediction (:func:`fit_zscore`, :func:`apply_zscore`, :func:`invert_zscore`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from i2o_utils.data.layout import require_columns
from i2o_utils.omics._checks import OmicsInputError, _name, as_labels, check_no_inf
from i2o_utils.omics.gt import WellLabels


@dataclass
class Labels:
    """Labels of one (omics, stimulus) set.

    Attributes
    ----------
    values
        ``(n_seeds, n_targets, n_genes)`` label values.
    targets, genes, seeds
        The axes of ``values``.
    draws
        One row per drawn omics well: ``seed, target, sample`` (the omics sample's name).
    n_fallback_group, n_fallback_min
        Label values that fell back to the group mean / to the gene's minimum (missing data).
    """

    values: np.ndarray
    targets: list[str]
    genes: list[str]
    seeds: list[int]
    draws: pd.DataFrame
    n_fallback_group: int = 0
    n_fallback_min: int = 0


def compute_labels(values: Any, targets: Sequence[str], seeds: Sequence[int], wells_per_label: int = 2) -> Labels:
    """Average ``wells_per_label`` randomly drawn omics wells per perturbation, once per seed.

    Parameters
    ----------
    values
        Omics wells x genes of one (omics, stimulus) set (normalised, batch-corrected, log
        scale); NaN = missing. A DataFrame names the wells (in the order they are drawn from) and
        the genes; an array's are their positions.
    targets
        Perturbation of each omics well.
    seeds
        Label seeds (one per imaging replicate).
    wells_per_label
        Wells drawn per group (paper: 2).
    """
    x = np.asarray(values)
    if x.dtype not in (np.float32, np.float64):  # float32 stays: means are taken in float64 below
        x = x.astype(np.float64)
    if x.ndim != 2:
        raise OmicsInputError(f"label values: expected wells x genes, got shape {x.shape}")
    n, g = x.shape
    named = isinstance(values, pd.DataFrame)
    samples = [str(s) for s in (values.index if named else range(n))]
    genes = [str(v) for v in (values.columns if named else range(g))]
    if len(set(samples)) != n:
        raise OmicsInputError("label values: duplicated sample names")
    check_no_inf(x, "label values", samples, genes, allow_nan=True)
    tg = as_labels(targets, n, "targets")
    if wells_per_label < 1:
        raise OmicsInputError(f"wells_per_label must be >= 1, got {wells_per_label}")
    uniq = sorted(set(tg))
    members = {t: np.flatnonzero(tg == t) for t in uniq}
    gene_min = None  # the fallbacks, computed when a label needs them
    out = np.empty((len(seeds), len(uniq), g))
    draws = []
    n_group = n_min = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # means of all-NaN slices: the fallbacks below
        for si, seed in enumerate(seeds):
            rng = np.random.default_rng(int(seed))
            for ti, t in enumerate(uniq):
                idx = members[t]
                pick = idx[rng.choice(len(idx), size=min(wells_per_label, len(idx)), replace=False)]
                draws.extend((int(seed), t, samples[i]) for i in pick)
                lab = np.nanmean(x[pick].astype(np.float64), axis=0)
                miss = np.isnan(lab)
                if miss.any():
                    fill = np.nanmean(x[idx], axis=0, dtype=np.float64)
                    use_min = miss & np.isnan(fill)
                    if use_min.any() and gene_min is None:
                        gene_min = np.nanmin(x, axis=0).astype(np.float64)
                    n_group += int((miss & ~use_min).sum())
                    n_min += int(use_min.sum())
                    lab = np.where(miss, np.where(use_min, gene_min if use_min.any() else 0.0, fill), lab)
                out[si, ti] = lab
    if np.isnan(out).any():
        j = int(np.flatnonzero(np.isnan(out).any(axis=(0, 1)))[0])
        raise OmicsInputError(f"label values: gene {genes[j]!r} has no observed value in any well")
    return Labels(values=out, targets=uniq, genes=genes, seeds=[int(s) for s in seeds],
                  draws=pd.DataFrame(draws, columns=["seed", "target", "sample"]),
                  n_fallback_group=n_group, n_fallback_min=n_min)


def label_wells(labels: Labels, imaging: pd.DataFrame, seeds: Sequence[int], fold: pd.Series) -> WellLabels:
    """The GT table of one set, compact: each imaging well gets its group's label for its replicate's seed.

    Parameters
    ----------
    labels
        From :func:`compute_labels` (its ``seeds`` must be ``seeds``).
    imaging
        Imaging wells of this stimulus: ``PLATE_ID``, ``well_id``, ``target``, ``replicate``, and
        the imaging plate's barcode in ``plate_barcode`` (the GT tables' ``plate_barcode``, which
        joins them to the images' ``PLATE_BARCODE``); without that column ``PLATE_ID`` is used.
    seeds
        ``OmicsConfig.label_seeds``; replicate ``r`` uses ``seeds[r]``.
    fold
        Fold ('train'/'val'/'test') of each target (split 0).

    Returns
    -------
    WellLabels
        Imaging wells ordered by plate, row and column (by plate and well id without ``ROW`` and
        ``COLUMN``); imaging wells whose perturbation has no omics wells get no rows.
    """
    require_columns(imaging, ("PLATE_ID", "well_id", "target", "replicate"), "imaging metadata", error=OmicsInputError)
    rep = pd.to_numeric(imaging["replicate"], errors="coerce")
    bad = rep.isna() | (rep < 0) | (rep >= len(seeds)) | (rep != np.floor(rep))
    if bad.any():
        r = imaging.loc[bad].iloc[0]
        raise OmicsInputError(f"imaging metadata: replicate {r['replicate']} of plate {r['PLATE_ID']} well "
                              f"{r['well_id']} is not one of 0..{len(seeds) - 1} (one per label seed)")
    seed_row = {int(s): i for i, s in enumerate(labels.seeds)}
    missing_seeds = [int(s) for s in seeds if int(s) not in seed_row]
    if missing_seeds:
        raise OmicsInputError(f"labels were computed without seed(s) {missing_seeds}")
    target = imaging["target"].astype(str).map({t: i for i, t in enumerate(labels.targets)})
    wells = imaging.loc[target.notna()].copy()
    # each well's row of values.reshape(-1, n_genes) below: its seed's row x n_targets + its target's
    wells["_label"] = target.dropna().astype(int) + len(labels.targets) * np.array(
        [seed_row[int(seeds[int(r)])] for r in rep[target.notna()]], dtype=np.int64)
    miss_fold = sorted(set(wells["target"].astype(str)) - set(fold.index.astype(str)))
    if miss_fold:
        raise OmicsInputError(f"no fold for target(s) {miss_fold[:5]}")
    wells = wells.sort_values(["PLATE_ID", "ROW", "COLUMN"] if {"ROW", "COLUMN"} <= set(wells.columns)
                              else ["PLATE_ID", "well_id"], kind="stable")
    barcode = wells["plate_barcode"] if "plate_barcode" in wells.columns else wells["PLATE_ID"]
    table = pd.DataFrame({"plate_barcode": barcode.astype(str).to_numpy(),
                          "well_id": wells["well_id"].astype(str).to_numpy(),
                          "fold": fold.reindex(wells["target"].astype(str)).astype(str).to_numpy()})
    return WellLabels(wells=table, label_index=wells["_label"].to_numpy(),
                      values=labels.values.reshape(-1, labels.values.shape[-1]), genes=labels.genes)


# --------------------------------------------------------------------------------------------
# z-scores of the model targets (DESIGN.md section 7: train-fold mean/std, ddof=1)
# --------------------------------------------------------------------------------------------
def fit_zscore(y_train: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and standard deviation (ddof=1) of the train wells, wells x genes.

    Raises
    ------
    OmicsInputError
        Fewer than 2 train wells, non-finite values, or a gene constant over the train wells
        (its z-score is undefined); the message names the gene.
    """
    named = isinstance(y_train, pd.DataFrame)  # names the well and gene at fault (wells may repeat across plates)
    wells, genes = (y_train.index, y_train.columns) if named else (None, None)
    y = np.asarray(y_train, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 2:
        raise OmicsInputError(f"z-score: need at least 2 train wells (wells x genes), got shape {y.shape}")
    check_no_inf(y, "z-score train values", wells, genes)
    mean = y.mean(axis=0)
    std = y.std(axis=0, ddof=1)
    zero = np.flatnonzero(~(std > 0))
    if len(zero):
        raise OmicsInputError(f"z-score: {_name(genes, zero[0], 'gene')} is constant over the train wells "
                              f"({len(zero)} such genes)")
    return mean, std


def apply_zscore(y: Any, mean: np.ndarray, std: np.ndarray):
    """``(y - mean) / std`` per gene (keeps a DataFrame a DataFrame)."""
    return (y - mean) / std


def invert_zscore(z: Any, mean: np.ndarray, std: np.ndarray):
    """``z * std + mean`` per gene: back to the label scale."""
    return z * std + mean
