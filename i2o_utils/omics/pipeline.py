"""Notebook 10's pipeline: raw omics -> filtered, normalised, batch-corrected sets -> labels (GT).

Per omics layer and stimulus (the paper normalises and corrects M1 and M2 plates separately):

* transcriptomics: DESeq2 median-of-ratios size factors -> normalised counts -> expression filter
  -> ``log2(normalised + pseudocount)`` -> ``remove_batch_effect(batch = omics plate)``;
* proteomics: zero intensities are "not quantified" (NaN) -> expression filter (quantified in
  enough wells; vsn values can be negative, so "> 0" means quantified) -> vsn (glog2) fitted to
  the kept proteins -> ``remove_batch_effect(batch = omics plate, batch2 = TMT multiplex)``;
  missing values stay missing.

Labels (:mod:`i2o_utils.omics.labels`) need the pairing of imaging and omics plates (``metadata.csv``
columns ``omics_plate``, ``replicate``: the simulated screen's); the real data ship their GT tables.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from i2o_utils.config import CONTROL, OMICS, STIMULI, OmicsConfig
from i2o_utils.data import layout
from i2o_utils.omics._checks import OmicsInputError, _at, check_counts, check_no_empty_samples, check_no_inf
from i2o_utils.omics.batch import remove_batch_effect
from i2o_utils.omics.filter import filter_low_expression
from i2o_utils.omics.gt import WellLabels, gt_file_format
from i2o_utils.omics.labels import compute_labels, label_wells
from i2o_utils.omics.normalise import log_normalised, median_of_ratios
from i2o_utils.omics.vsn import vsn_fit
from i2o_utils.paths import bucket_paths

log = logging.getLogger(__name__)

OBS_REQUIRED = ("plate_barcode", "well_id", "target", "cell_state")
PAIRING_COLUMNS = ("omics_plate", "replicate")


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def read_omics_raw(omics: str, root: str | os.PathLike | None = None):
    """Read and check ``data/OMICS_RAW/<omics>.h5ad``.

    Returns
    -------
    anndata.AnnData
        Wells sorted by plate, row and column; ``obs`` gains ``ROW`` and ``COLUMN``; well ids in
        the authors' form.

    Raises
    ------
    OmicsInputError
        Naming the file and the fault: missing file or obs column, missing values in obs,
        malformed or duplicated (plate, well), unknown stimulus, duplicated gene ids, a matrix that
        does not match obs/var.
    """
    import anndata as ad

    if omics not in OMICS:
        raise OmicsInputError(f"unknown omics {omics!r}; expected one of {OMICS}")
    path = bucket_paths(root)["omics_raw"] / f"{omics}.h5ad"
    if not path.exists():
        raise OmicsInputError(f"{path}: no such file")
    try:
        a = ad.read_h5ad(path)
    except Exception as e:  # h5py/anndata raise many kinds for a broken file
        raise OmicsInputError(f"{path}: not a readable AnnData file: {e}") from e
    required = OBS_REQUIRED + (("tmt_batch",) if omics == "proteomics" else ())
    layout.require_columns(a.obs, required, f"{path}: obs", error=OmicsInputError)
    obs = a.obs.copy()
    for c in required:
        na = obs[c].isna()
        if na.any():
            raise OmicsInputError(f"{path}: missing {c!r} for sample {obs.index[na.to_numpy()][0]!r}")
        obs[c] = obs[c].astype(str)
    try:
        layout.index_well_ids(obs, "plate_barcode", path)
    except layout.LayoutError as e:
        raise OmicsInputError(str(e)) from e
    obs["cell_state"] = obs["cell_state"].str.lower()
    bad = ~obs["cell_state"].isin(STIMULI)
    if bad.any():
        raise OmicsInputError(f"{path}: cell_state {obs['cell_state'][bad.to_numpy()].iloc[0]!r} of sample "
                              f"{obs.index[bad.to_numpy()][0]!r} is not one of {STIMULI}")
    if a.var_names.has_duplicates:
        raise OmicsInputError(f"{path}: duplicated gene id {a.var_names[a.var_names.duplicated()][0]!r}")
    obs.index = pd.Index([f"{p}:{w}" for p, w in zip(obs["plate_barcode"], obs["well_id"])], name="sample")
    order = np.lexsort((obs["COLUMN"].to_numpy(), obs["ROW"].to_numpy(), obs["plate_barcode"].to_numpy()))
    x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    var = a.var.set_axis(a.var.index.astype(str).rename("gene"))
    if "symbol" not in var:
        var["symbol"] = var.index
    if not np.array_equal(order, np.arange(len(order))):  # (already in order: no copy)
        x, obs = x[order], obs.iloc[order]
    return ad.AnnData(X=x, obs=obs, var=var, uns={"source": str(path)})


def read_all_omics_raw(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Every omics layer present in ``data/OMICS_RAW`` (absent files are skipped)."""
    return {o: read_omics_raw(o, root) for o in OMICS if (bucket_paths(root)["omics_raw"] / f"{o}.h5ad").exists()}


def _stimulus_sets(raw: Mapping[str, Any]):
    """Yield (omics, stimulus, AnnData, well mask, values) for every set present in ``raw``."""
    for o, a in raw.items():
        for s in STIMULI:
            sel = (a.obs["cell_state"] == s).to_numpy()
            if sel.any():
                yield o, s, a, sel, np.asarray(a.X[sel])


def raw_summary(raw: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (omics, stimulus) of the raw tables: plates, wells, genes, share of zeros."""
    rows = []
    for o, s, a, sel, x in _stimulus_sets(raw):
        obs = a.obs.loc[sel]
        rows.append({"omics": o, "stimulus": s, "plates": obs["plate_barcode"].nunique(),
                     "wells": int(sel.sum()), "control_wells": int((obs["target"] == CONTROL).sum()),
                     "targets": obs["target"].nunique(), "genes": a.n_vars,
                     "zeros_%": round(100 * float((x == 0).mean()), 2),
                     "tmt_batches": obs["tmt_batch"].nunique() if "tmt_batch" in obs.columns else 0})
    return pd.DataFrame(rows, columns=["omics", "stimulus", "plates", "wells", "control_wells", "targets", "genes",
                                       "zeros_%", "tmt_batches"])


def compare_filter_rules(raw: Mapping[str, Any], cfg: OmicsConfig = OmicsConfig()) -> pd.DataFrame:
    """Genes kept under both readings of the paper's filter ("all" plates / "any" plate) per set."""
    rows = []
    for o, s, a, sel, x in _stimulus_sets(raw):
        detected = (x > 0) & np.isfinite(x)
        plates = a.obs["plate_barcode"].to_numpy()[sel]
        rows.append({"omics": o, "stimulus": s, "genes": a.n_vars} | {
            f"kept_{rule}": int(filter_low_expression(detected, plates, cfg.min_expressed_fraction, rule)["kept"].sum())
            for rule in ("all", "any")})
    return pd.DataFrame(rows, columns=["omics", "stimulus", "genes", "kept_all", "kept_any"])


# --------------------------------------------------------------------------------------------
# one set
# --------------------------------------------------------------------------------------------
def _design(obs: pd.DataFrame, kind: str) -> np.ndarray | None:
    """The effects kept by the batch correction: an intercept, or the perturbations (dummies, the
    first column replaced by the intercept)."""
    if kind == "intercept":
        return None
    if kind != "target":
        raise OmicsInputError(f"batch_design must be 'intercept' or 'target', got {kind!r}")
    d = pd.get_dummies(obs["target"].astype(str)).to_numpy(dtype=np.float64)
    d[:, 0] = 1.0
    return d


def _rows(x, sel: np.ndarray) -> np.ndarray:
    """``x[sel]`` for a boolean row mask: a view when the selected rows are consecutive (the wells
    of one stimulus usually are, as wells are sorted by plate), else a copy."""
    idx = np.flatnonzero(sel)
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx) and isinstance(x, np.ndarray):
        return x[idx[0]:idx[-1] + 1]
    return np.asarray(x[sel])


_GENE_BLOCK = 4096


def _normalise_and_correct_counts(x_raw: np.ndarray, kept_idx: np.ndarray, sf: np.ndarray, plates: np.ndarray,
                                  design: np.ndarray | None, cfg: OmicsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Log-normalised counts of the kept genes and the same batch-corrected (float32 both), in blocks
    of genes (each gene's fit is its own), so that no full-size float64 matrix is ever held."""
    n, k = x_raw.shape[0], len(kept_idx)
    normalised32 = np.empty((n, k), dtype=np.float32)
    corrected32 = np.empty((n, k), dtype=np.float32)
    for j in range(0, k, _GENE_BLOCK):
        block = slice(j, min(j + _GENE_BLOCK, k))
        values = log_normalised(x_raw, kept_idx[block], sf, cfg.log_pseudocount, cfg.log_base)
        normalised32[:, block] = values
        remove_batch_effect(values, batch=plates, design=design, out=values)
        corrected32[:, block] = values
    return normalised32, corrected32


def preprocess_set(raw, omics: str, stimulus: str, cfg: OmicsConfig = OmicsConfig(), progress: bool = False):
    """Filter, normalise and batch-correct the wells of one stimulus in ``raw`` (from
    :func:`read_omics_raw`).

    Returns ``(adata, genes)``: AnnData of the set's wells x kept genes with layers ``raw``,
    ``normalised`` (log scale, before batch correction) and ``corrected`` (also ``X``); the gene table
    of all genes, kept or not (``gene, symbol, kept, reason`` why filtered, detection fractions).
    Where every gene is kept and the set's wells are consecutive in ``raw``, the layer ``raw`` is a
    view of ``raw.X`` (no copy): copy it before changing it in place.
    """
    import anndata as ad

    src = raw.uns.get("source", omics)
    sel = (raw.obs["cell_state"] == stimulus).to_numpy()
    if not sel.any():
        raise OmicsInputError(f"{src}: no wells with cell_state {stimulus!r}")
    obs = raw.obs.loc[sel].copy()
    x_raw = _rows(raw.X, sel)
    samples, genes = obs.index, raw.var_names
    plates = obs["plate_barcode"].to_numpy()
    info: dict[str, Any] = {"omics": omics, "stimulus": stimulus}
    if omics == "transcriptomics":
        x = x_raw if x_raw.dtype.kind == "f" else x_raw.astype(np.float64)  # counts: float32 holds them exactly
        check_counts(x, f"{src} ({stimulus})", samples, genes)
        detected = x > 0
        sf = median_of_ratios(x, cfg.size_factor_type)
        obs["size_factor"] = sf
        info.update(normalisation=f"DESeq2 median-of-ratios size factors (type={cfg.size_factor_type!r}), "
                                  f"log{cfg.log_base:g}(normalised + {cfg.log_pseudocount:g})",
                    n_genes_in_geometric_means=int(detected.all(axis=0).sum()))
    elif omics == "proteomics":
        check_no_inf(x_raw, f"{src} ({stimulus})", samples, genes, allow_nan=True)
        if (x_raw < 0).any():
            i, j = np.argwhere(x_raw < 0)[0]
            raise OmicsInputError(f"{src}: negative intensity {x_raw[i, j]:g} in {_at(i, j, samples, genes)}")
        y = np.array(x_raw, dtype=np.float64)  # a copy: x_raw may be a view of the raw table
        detected = y > 0
        y[~detected] = np.nan
        check_no_empty_samples(detected, f"{src} ({stimulus})", samples)
    else:
        raise OmicsInputError(f"unknown omics {omics!r}")
    obs["n_detected"] = detected.sum(axis=1)
    filt = filter_low_expression(detected, plates, cfg.min_expressed_fraction, cfg.filter_rule, genes=genes)
    kept = filt["kept"].to_numpy()
    if not kept.any():
        raise OmicsInputError(f"{src} ({stimulus}): no gene passes the expression filter "
                              f"(rule {cfg.filter_rule!r}, min fraction {cfg.min_expressed_fraction:.3f})")
    kept_idx = np.flatnonzero(kept)
    if omics == "transcriptomics":
        del x, detected
        normalised32, corrected32 = _normalise_and_correct_counts(x_raw, kept_idx, sf, plates,
                                                                  _design(obs, cfg.batch_design), cfg)
        info["batch"] = "omics plate"
    else:
        # detection does not depend on the normalisation, so vsn is fitted to the kept proteins
        # only: proteins seen in a handful of wells make its likelihood degenerate
        y = y if kept.all() else y[:, kept]
        fit = vsn_fit(y, lts_quantile=cfg.vsn_lts_quantile, subsample=cfg.vsn_subsample)
        obs[["vsn_offset", "vsn_log_scale"]] = np.column_stack([fit.offset, fit.log_scale])
        info.update(normalisation="vsn (arsinh with per-sample affine calibration, robust ML), glog2 scale",
                    vsn_sigsq=fit.sigsq, vsn_hoffset=fit.hoffset, vsn_optimizer_status=fit.optimizer_status,
                    vsn_rounds=fit.n_rounds, vsn_proteins_fitted=fit.n_fitted, vsn_evaluations=fit.n_evaluations)
        values = fit.transform(y)
        del y, detected
        normalised32 = values.astype(np.float32)
        remove_batch_effect(values, batch=plates, batch2=obs["tmt_batch"].to_numpy(),
                            design=_design(obs, cfg.batch_design), allow_nan=True, progress=progress, out=values)
        corrected32 = values.astype(np.float32)
        del values
        info["batch"] = "omics plate + TMT multiplex"
    info.update(batch_correction="limma removeBatchEffect (sum-to-zero contrasts)", batch_design=cfg.batch_design,
                filter_rule=cfg.filter_rule, min_expressed_fraction=cfg.min_expressed_fraction,
                n_genes=int(len(genes)), n_kept=int(kept.sum()))
    var = raw.var.loc[kept].assign(**{c: filt[c].to_numpy()[kept] for c in ("min_detected_fraction",
                                                                           "max_detected_fraction")})
    raw32 = np.asarray(x_raw if kept.all() else x_raw[:, kept_idx], dtype=np.float32)  # (a view when it can)
    adata = ad.AnnData(X=corrected32, obs=obs, var=var,
                       layers={"raw": raw32, "normalised": normalised32, "corrected": corrected32},
                       uns={"preprocessing": info})
    table = pd.DataFrame({"omics": omics, "stimulus": stimulus, "gene": genes, "symbol": raw.var["symbol"].to_numpy()})
    return adata, pd.concat([table, filt.reset_index(drop=True)], axis=1)


@dataclass
class OmicsSets:
    """The preprocessed sets: ``data[(omics, stimulus)]`` AnnData, ``genes[(omics, stimulus)]`` table."""

    data: dict[tuple[str, str], Any] = field(default_factory=dict)
    genes: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.data)


def preprocess_omics(raw: Mapping[str, Any], cfg: OmicsConfig = OmicsConfig(), progress: bool = True) -> OmicsSets:
    """:func:`preprocess_set` for every omics layer in ``raw`` and every stimulus it holds."""
    out = OmicsSets(notes=[f"{o}: no raw table in data/OMICS_RAW, nothing to normalise" for o in OMICS if o not in raw])
    todo = [(o, s) for o in OMICS if o in raw for s in STIMULI if (raw[o].obs["cell_state"] == s).any()]
    for o, s in tqdm(todo, desc="omics sets", unit="set", disable=not progress):
        out.data[(o, s)], out.genes[(o, s)] = preprocess_set(raw[o], o, s, cfg, progress=progress)
    return out


def gene_filter_summary(sets: OmicsSets) -> pd.DataFrame:
    """Genes kept and filtered per set (one row per omics and stimulus)."""
    rows = []
    for (o, s), t in sets.genes.items():
        info = sets.data[(o, s)].uns["preprocessing"]
        rows.append({"omics": o, "stimulus": s, "wells": sets.data[(o, s)].n_obs,
                     "plates": sets.data[(o, s)].obs["plate_barcode"].nunique(),
                     "genes": len(t), "kept": int(t["kept"].sum()), "filtered": int((~t["kept"]).sum()),
                     "kept_%": round(100 * t["kept"].mean(), 1), "rule": info["filter_rule"],
                     "min_fraction": round(info["min_expressed_fraction"], 4)})
    return pd.DataFrame(rows, columns=["omics", "stimulus", "wells", "plates", "genes", "kept", "filtered",
                                       "kept_%", "rule", "min_fraction"])


# --------------------------------------------------------------------------------------------
# labels -> GT
# --------------------------------------------------------------------------------------------
@dataclass
class GroundTruth:
    """GT tables per set (``tables[(omics, stimulus)]``, :class:`WellLabels`) and how they were made."""

    tables: dict[tuple[str, str], WellLabels] = field(default_factory=dict)
    note: str = ""

    def __bool__(self) -> bool:
        return bool(self.tables)


def check_pairing(metadata: pd.DataFrame, sets: OmicsSets) -> None:
    """Check the imaging-omics plate pairing in ``metadata`` against the omics sets: every imaging
    plate has one ``omics_plate``, ``replicate`` and ``cell_state``, and its ``omics_plate`` is an
    omics plate of that stimulus (``obs['omics_plate']`` of the sets, else ``obs['plate_barcode']``).
    Replicate values are checked well by well by :func:`~i2o_utils.omics.labels.label_wells`."""
    for col in PAIRING_COLUMNS:
        if metadata[col].isna().any():
            r = metadata.loc[metadata[col].isna()].iloc[0]
            raise OmicsInputError(f"metadata.csv: missing {col!r} for plate {r['PLATE_ID']} well {r['well_id']}")
    per_plate = metadata.groupby("PLATE_ID")[["omics_plate", "replicate", "cell_state"]].nunique()
    for col in per_plate.columns:
        bad = per_plate.index[per_plate[col] > 1]
        if len(bad):
            raise OmicsInputError(f"metadata.csv: imaging plate {bad[0]} has more than one {col!r}")
    known: dict[str, set] = {}
    for (o, s), a in sets.data.items():
        key = a.obs["omics_plate"] if "omics_plate" in a.obs.columns else a.obs["plate_barcode"]
        known.setdefault(s, set()).update(key.astype(str))
    for plate, r in metadata.drop_duplicates("PLATE_ID").set_index("PLATE_ID").iterrows():
        if r["cell_state"] in known and str(r["omics_plate"]) not in known[r["cell_state"]]:
            raise OmicsInputError(f"metadata.csv: imaging plate {plate} ({r['cell_state']}) pairs with omics plate "
                                  f"{r['omics_plate']!r}, which is not among that stimulus's omics plates "
                                  f"{sorted(known[r['cell_state']])}")


def build_ground_truth(sets: OmicsSets, metadata: pd.DataFrame, cfg: OmicsConfig = OmicsConfig(), *,
                       split_table: pd.DataFrame | None = None) -> GroundTruth:
    """Labels of every set and the GT long tables of the imaging wells (fold = split 0 of
    ``split_table``, :func:`i2o_utils.data.splits.screen_splits`, which labelling needs).

    Returns an empty :class:`GroundTruth` with a ``note`` when ``metadata`` lacks the pairing
    columns (real data: their GT tables are given) or there are no omics sets.
    """
    missing = [c for c in PAIRING_COLUMNS if c not in metadata.columns]
    if missing:
        return GroundTruth(note=f"metadata.csv has no {', '.join(missing)} column(s): the imaging plates are not "
                                "paired with omics plates here, so no labels are computed and the GT tables in "
                                "data/GT are left as they are (the real data ship them).")
    if not sets:
        return GroundTruth(note="no omics sets to label: data/GT is left as it is")
    if split_table is None:
        raise OmicsInputError("build_ground_truth: no split table to take the GT fold column from "
                              "(i2o_utils.data.splits.screen_splits)")
    seeds = list(cfg.label_seeds)
    check_pairing(metadata, sets)
    fold = split_table[split_table["split"] == 0].set_index("target")["fold"]
    gt = GroundTruth()
    for (o, s), a in sets.data.items():
        corrected = pd.DataFrame(a.layers["corrected"], index=a.obs_names, columns=a.var_names)
        lab = compute_labels(corrected, a.obs["target"].to_numpy(), seeds, cfg.wells_per_label)
        gt.tables[(o, s)] = label_wells(lab, metadata.loc[metadata["cell_state"] == s], seeds, fold)
        a.uns["label_draws"] = lab.draws
    gt.note = (f"labels: mean of {cfg.wells_per_label} omics wells drawn per (target, stimulus) with seeds "
               f"{seeds} (imaging replicate r uses seed {seeds}[r]); fold = split 0 of the "
               f"{len(fold)} perturbations ({', '.join(f'{k} {v}' for k, v in fold.value_counts().items())})")
    return gt


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def may_write_gt(root: str | os.PathLike | None = None) -> tuple[bool, str]:
    """GT tables are (re)written on a simulated screen or where none exist; real GT is never replaced."""
    bp = bucket_paths(root)
    info = layout.read_screen_info(bp["root"])
    if info is not None and info.get("source") == "simulated":
        return True, "simulated screen: GT tables written from the label protocol"
    if not [*bp["gt"].glob("*.csv"), *bp["gt"].glob("*.parquet")]:  # (none where the folder is missing)
        return True, "no GT tables yet: written from the label protocol"
    return False, f"{bp['gt']} already holds GT tables of non-simulated data: left unchanged"


def write_outputs(sets: OmicsSets, gt: GroundTruth, out_dir: str | os.PathLike,
                  root: str | os.PathLike | None = None, progress: bool = False) -> list[Path]:
    """Write the sets (``{omics}_{stimulus}.h5ad``), gene tables (``genes_{omics}_{stimulus}.csv``)
    to ``out_dir`` and the GT tables to ``data/GT`` (when :func:`may_write_gt` allows).

    All files are written under staging names and renamed once every one is complete, so a failure
    replaces none of the files already there and leaves nothing half-written. Everything is computed
    before the first write. The GT tables are written in a second thread while the sets are (both
    writers wait mostly on the disk).
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    gt_ok, why = may_write_gt(root) if gt else (False, "")
    if gt and not gt_ok:
        log.warning(why)
    with layout.staged_paths() as stage, ThreadPoolExecutor(max_workers=1) as pool:
        gt_job = pool.submit(write_gt_tables, gt, root, progress, stage) if gt_ok else None
        for (o, s), a in sets.data.items():
            path = out_dir / f"{o}_{s}.h5ad"
            write_set(a, stage(path))
            table = sets.genes[(o, s)][["gene", "symbol", "kept", "reason", "n_plates_passed",
                                        "min_detected_fraction", "max_detected_fraction"]]
            genes_path = out_dir / f"genes_{o}_{s}.csv"
            layout.write_csv_atomic(table, stage(genes_path))
            written += [path, genes_path]
        if gt_job is not None:
            written += gt_job.result()
    return written


def write_set(adata, path: str | os.PathLike) -> Path:
    """Write one preprocessed set as ``.h5ad`` with :meth:`anndata.AnnData.write_h5ad`, atomically."""
    import anndata as ad

    path = Path(path)
    uns = {k: np.asarray(v).astype(str) if k == "label_draws" else v for k, v in adata.uns.items()}
    out = ad.AnnData(X=adata.X, obs=adata.obs, var=adata.var, uns=uns, obsm=dict(adata.obsm),
                     varm=dict(adata.varm), obsp=dict(adata.obsp), varp=dict(adata.varp), layers=dict(adata.layers))
    with layout.atomic_path(path) as tmp:
        out.write_h5ad(tmp)
    return path


def write_gt_tables(gt: GroundTruth, root: str | os.PathLike | None = None, progress: bool = False,
                    stage=None) -> list[Path]:
    """Write every GT table to ``data/GT`` (:meth:`WellLabels.write`, in the format of
    :func:`~i2o_utils.omics.gt.gt_file_format`), removing one of the other format left from an earlier
    run. ``stage`` (:func:`i2o_utils.data.layout.staged_paths`) publishes them with other files."""
    paths = []
    for (o, s), t in gt.tables.items():
        fmt = gt_file_format(len(t))
        path = layout.gt_path(o, s, root, fmt=fmt)
        t.write(stage(path) if stage is not None else path, progress=progress, label=path.name, fmt=fmt)
        layout.gt_path(o, s, root, fmt="csv" if fmt == "parquet" else "parquet").unlink(missing_ok=True)
        paths.append(path)
    return paths
