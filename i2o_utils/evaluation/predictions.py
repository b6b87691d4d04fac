"""Read what the fine-tuning and omics-preprocessing steps wrote, for the evaluation.

``results/40_finetune_omics/predictions/{omics}_{stimulus}_split{k:02d}.h5ad``
    AnnData, one per (omics, stimulus, split): ``obs`` = the validation and test wells with
    columns ``plate_barcode, well_id, target, fold``; layers ``measured`` and ``predicted``
    (label scale, de-standardised); ``var`` = genes with columns ``train_mean`` and
    ``train_std`` (train-fold statistics; ``train_mean`` is the mean predictor).
``results/10_preprocess_omics/genes_{omics}_{stimulus}.csv``
    ``gene, kept, reason``: every gene measured, whether the expression filter kept it, and why
    not. Its rows are the denominators of the paper's fractions.

Readers check the contract and raise :class:`~i2o_utils.data.layout.LayoutError` naming the
file and the column, well or gene at fault. Missing values inside the matrices are not errors:
the evaluation handles them per gene and reports them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from i2o_utils.config import OMICS, STIMULI
from i2o_utils.data import layout
from i2o_utils.data.layout import FOLDS, LayoutError, normalise_well_id

__all__ = [
    "PREDICTIONS_STEP",
    "PREPROCESS_STEP",
    "PREDICTION_OBS_COLUMNS",
    "PREDICTION_VAR_COLUMNS",
    "PREDICTION_LAYERS",
    "PredictionsMissing",
    "SplitPredictions",
    "predictions_dir",
    "prediction_path",
    "find_prediction_files",
    "read_prediction_split",
    "load_predictions",
    "gene_table_path",
    "read_gene_table",
    "gene_symbols",
    "read_screen_info",
    "attach_gt",
]

PREDICTIONS_STEP = "40_finetune_omics"
PREPROCESS_STEP = "10_preprocess_omics"
PREDICTION_OBS_COLUMNS = ("plate_barcode", "well_id", "target", "fold")
PREDICTION_VAR_COLUMNS = ("train_mean", "train_std")
PREDICTION_LAYERS = ("measured", "predicted")
GENE_TABLE_COLUMNS = ("gene", "kept", "reason")

_FILE_RE = re.compile(r"^(?P<omics>[a-z]+)_(?P<stimulus>m\d)_split(?P<split>\d+)\.h5ad$")


class PredictionsMissing(FileNotFoundError):
    """No prediction files where the fine-tuning step writes them (it has not run yet)."""


def _check_omics_stimulus(omics: str, stimulus: str) -> tuple[str, str]:
    omics, stimulus = str(omics).lower(), str(stimulus).lower()
    if omics not in OMICS:
        raise ValueError(f"unknown omics {omics!r}; expected one of {OMICS}")
    if stimulus not in STIMULI:
        raise ValueError(f"unknown stimulus {stimulus!r}; expected one of {STIMULI}")
    return omics, stimulus


def predictions_dir(results_root: str | os.PathLike | None = None) -> Path:
    """``<results>/40_finetune_omics/predictions`` (not created)."""
    if results_root is None:
        from i2o_utils.paths import results_dir

        return results_dir(PREDICTIONS_STEP) / "predictions"
    return Path(results_root) / PREDICTIONS_STEP / "predictions"


def prediction_path(omics: str, stimulus: str, split: int,
                    folder: str | os.PathLike | None = None) -> Path:
    """Path of one split's predictions: ``{omics}_{stimulus}_split{k:02d}.h5ad``."""
    omics, stimulus = _check_omics_stimulus(omics, stimulus)
    folder = Path(folder) if folder is not None else predictions_dir()
    return folder / f"{omics}_{stimulus}_split{int(split):02d}.h5ad"


def find_prediction_files(folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """The prediction files in ``folder``: columns ``omics, stimulus, split, path`` (sorted).

    Files whose name does not follow the contract are ignored (and temporary ``.part`` files).
    """
    folder = Path(folder) if folder is not None else predictions_dir()
    rows = []
    if folder.is_dir():
        for p in sorted(folder.glob("*.h5ad")):
            m = _FILE_RE.match(p.name)
            if m and m["omics"] in OMICS and m["stimulus"] in STIMULI:
                rows.append((m["omics"], m["stimulus"], int(m["split"]), p))
    df = pd.DataFrame(rows, columns=["omics", "stimulus", "split", "path"])
    return df.sort_values(["omics", "stimulus", "split"], ignore_index=True)


@dataclass
class SplitPredictions:
    """One split's test-fold predictions for one (omics, stimulus).

    ``measured`` and ``predicted`` have shape (wells, genes); ``train_mean`` (genes,) is the
    mean predictor. ``wells`` holds the obs rows of those wells.
    """

    omics: str
    stimulus: str
    split: int
    wells: pd.DataFrame
    genes: pd.Index
    measured: np.ndarray
    predicted: np.ndarray
    train_mean: np.ndarray
    symbols: pd.Series | None = None
    path: Path | None = None

    @property
    def n_wells(self) -> int:
        return int(self.measured.shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.measured.shape[1])

    def shuffled(self, rng: np.random.Generator) -> "SplitPredictions":
        """A copy whose predictions are permuted across wells (one permutation for all genes).

        The images' information about *which* well they came from is destroyed, everything
        else (the spread of the predictions, the gene-gene structure) is kept: the evaluation
        of a shuffled copy shows how often a gene looks predictable when it is not.
        """
        perm = rng.permutation(self.n_wells)
        return replace(self, predicted=self.predicted[perm])

    def block_shuffled(self, rng: np.random.Generator) -> "SplitPredictions":
        """A copy whose predictions are permuted between test perturbations, whole blocks at once.

        Well k of perturbation g takes the prediction of well (k mod size) of perturbation
        pi(g) (:func:`~i2o_utils.evaluation.perturbation.block_permutation`): the predictions
        keep their clustering by perturbation (as they would with images carrying no signal)
        but cannot know which perturbation they belong to. This is the null at the unit the
        labels vary at; :meth:`shuffled` (across single wells) is not, because it breaks the
        clustering that makes well-level tests over-confident.
        """
        from i2o_utils.evaluation.perturbation import block_permutation

        if "target" not in self.wells:
            raise ValueError(f"{self.path or 'split'}: block shuffling needs the wells' 'target' column")
        order = block_permutation(self.wells["target"], rng)
        return replace(self, predicted=self.predicted[order])


def _dense(m) -> np.ndarray:
    if hasattr(m, "toarray"):
        m = m.toarray()
    return np.asarray(m, dtype=np.float64)


def read_prediction_split(path: str | os.PathLike, fold: str = "test") -> SplitPredictions:
    """Read one prediction file and keep the wells of ``fold`` (default: the test wells).

    Raises
    ------
    LayoutError
        Unreadable file; missing obs column, layer or var column; a fold outside
        train/val/test; a malformed or duplicated well; duplicated genes; layers whose shape
        differs from the obs x var table; no well of ``fold``.
    """
    import anndata as ad

    path = Path(path)
    if fold not in FOLDS:
        raise ValueError(f"fold must be one of {FOLDS}, got {fold!r}")
    if not path.exists():
        raise LayoutError(f"{path}: no such file")
    try:
        adata = ad.read_h5ad(path)
    except Exception as e:  # h5py / anndata raise many kinds
        raise LayoutError(f"{path}: not a readable AnnData (.h5ad) file: {e}") from e
    m = _FILE_RE.match(path.name)
    omics = m["omics"] if m else str(adata.uns.get("omics", "unknown"))
    stimulus = m["stimulus"] if m else str(adata.uns.get("stimulus", "unknown"))
    split = int(m["split"]) if m else int(adata.uns.get("split", -1))

    obs = adata.obs
    missing = [c for c in PREDICTION_OBS_COLUMNS if c not in obs.columns]
    if missing:
        raise LayoutError(f"{path}: obs lacks column(s) {missing}; found {list(obs.columns)}")
    missing = [c for c in PREDICTION_VAR_COLUMNS if c not in adata.var.columns]
    if missing:
        raise LayoutError(f"{path}: var lacks column(s) {missing}; found {list(adata.var.columns)}")
    missing = [k for k in PREDICTION_LAYERS if k not in adata.layers]
    if missing:
        raise LayoutError(f"{path}: missing layer(s) {missing}; found {list(adata.layers.keys())}")
    folds = obs["fold"].astype(str)
    bad = sorted(set(folds) - set(FOLDS))
    if bad:
        raise LayoutError(f"{path}: obs column 'fold' has value(s) {bad}; expected {FOLDS}")
    genes = pd.Index(adata.var_names.astype(str), name="gene")
    if genes.has_duplicates:
        raise LayoutError(f"{path}: duplicated gene(s) {list(genes[genes.duplicated()][:5])}")

    wells = obs[list(PREDICTION_OBS_COLUMNS)].astype(str).reset_index(drop=True)
    wells["well_id"] = [normalise_well_id(w, where=path) for w in wells["well_id"]]
    dup = wells.duplicated(["plate_barcode", "well_id"])
    if dup.any():
        first = wells.loc[dup].iloc[0]
        raise LayoutError(f"{path}: well {first['well_id']} of plate {first['plate_barcode']} "
                          "appears more than once")
    keep = (folds == fold).to_numpy()
    if not keep.any():
        raise LayoutError(f"{path}: no well with fold == {fold!r}")
    measured = _dense(adata.layers["measured"])
    predicted = _dense(adata.layers["predicted"])
    for name, arr in (("measured", measured), ("predicted", predicted)):
        if arr.shape != adata.shape:
            raise LayoutError(f"{path}: layer {name!r} has shape {arr.shape}, expected {adata.shape}")
    train_mean = pd.to_numeric(adata.var["train_mean"], errors="coerce").to_numpy(np.float64)
    symbols = adata.var["symbol"].astype(str) if "symbol" in adata.var.columns else None
    if symbols is not None:
        symbols.index = genes
    return SplitPredictions(omics=omics, stimulus=stimulus, split=split,
                            wells=wells.loc[keep].reset_index(drop=True), genes=genes,
                            measured=measured[keep], predicted=predicted[keep],
                            train_mean=train_mean, symbols=symbols, path=path)


def load_predictions(omics: str, stimulus: str, folder: str | os.PathLike | None = None,
                     n_splits: int | None = None, fold: str = "test") -> list[SplitPredictions]:
    """All splits of one (omics, stimulus), in split order.

    Parameters
    ----------
    n_splits
        If given, splits ``0 .. n_splits-1`` must all be there (a missing one raises, naming
        its file); if ``None``, every split found is read.

    Raises
    ------
    PredictionsMissing
        When no prediction file of this (omics, stimulus) exists: the fine-tuning step has not
        run (or wrote elsewhere).
    """
    omics, stimulus = _check_omics_stimulus(omics, stimulus)
    folder = Path(folder) if folder is not None else predictions_dir()
    files = find_prediction_files(folder)
    files = files[(files["omics"] == omics) & (files["stimulus"] == stimulus)]
    if files.empty:
        raise PredictionsMissing(
            f"{folder}: no {omics}_{stimulus}_splitNN.h5ad prediction file; run the fine-tuning "
            f"notebook ({PREDICTIONS_STEP}) first")
    if n_splits is not None:
        want = set(range(int(n_splits)))
        absent = sorted(want - set(files["split"]))
        if absent:
            raise LayoutError(
                f"{folder}: missing prediction file(s) "
                f"{[prediction_path(omics, stimulus, k, folder).name for k in absent]}")
        files = files[files["split"].isin(want)]
    return [read_prediction_split(p, fold=fold) for p in files["path"]]


def gene_table_path(omics: str, stimulus: str, folder: str | os.PathLike | None = None) -> Path:
    """``<results>/10_preprocess_omics/genes_{omics}_{stimulus}.csv``."""
    omics, stimulus = _check_omics_stimulus(omics, stimulus)
    if folder is None:
        from i2o_utils.paths import results_dir

        folder = results_dir(PREPROCESS_STEP)
    return Path(folder) / f"genes_{omics}_{stimulus}.csv"


def read_gene_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``genes_{omics}_{stimulus}.csv``: ``gene`` (str), ``kept`` (bool), ``reason`` (str).

    Raises
    ------
    LayoutError
        Missing file or column, duplicated gene, or a ``kept`` value that is not a boolean.
    """
    path = Path(path)
    if not path.exists():
        raise LayoutError(f"{path}: no such file (written by the omics preprocessing step, "
                          f"{PREPROCESS_STEP})")
    df = pd.read_csv(path, dtype={"gene": str, "reason": str}, keep_default_na=False)
    missing = [c for c in ("gene", "kept") if c not in df.columns]
    if missing:
        raise LayoutError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    if "reason" not in df.columns:
        df["reason"] = ""
    kept = df["kept"].map(layout.parse_bool)
    bad = kept.isna()
    if bad.any():
        row = df.loc[bad].iloc[0]
        raise LayoutError(f"{path}: column 'kept' of gene {row['gene']} is {row['kept']!r}, "
                          "not a boolean")
    df["kept"] = kept.astype(bool)
    dup = df["gene"].duplicated()
    if dup.any():
        raise LayoutError(f"{path}: gene {df.loc[dup, 'gene'].iloc[0]} appears more than once")
    return df[list(GENE_TABLE_COLUMNS) + [c for c in df.columns if c not in GENE_TABLE_COLUMNS]]


def gene_symbols(tables) -> pd.Series:
    """Gene id -> symbol from the ``symbol`` column of notebook 10's gene tables (:func:`read_gene_table`;
    ``None`` entries skipped); empty when no table has one."""
    parts = [t.set_index("gene")["symbol"] for t in tables if t is not None and "symbol" in t.columns]
    if not parts:
        return pd.Series(dtype=str, name="symbol")
    s = pd.concat(parts).astype(str)
    return s[~s.index.duplicated()].rename("symbol")


def read_screen_info(root: str | os.PathLike | None = None) -> dict:
    """:func:`i2o_utils.data.layout.read_screen_info` with its ``path``, and
    ``{"source": "unknown", "null": False}`` when the data root has no ``SCREEN.json``.

    The data source and whether it is a null screen are named in every headline table.
    """
    from i2o_utils.paths import bucket_paths

    info = layout.read_screen_info(root) or {"source": "unknown (no SCREEN.json at the data root)"}
    return {"source": "unknown", "null": False, **info, "path": str(bucket_paths(root)["root"] / layout.SCREEN_FILE)}


def attach_gt(split: SplitPredictions, gt: pd.DataFrame) -> tuple[SplitPredictions, dict]:
    """Take the measured values of a split from the GT long table (the truth) and report gaps.

    Parameters
    ----------
    split
        Predictions of one split.
    gt
        GT of the same (omics, stimulus): the long table (the authors' columns,
        :data:`i2o_utils.data.layout.GT_COLUMNS`; :func:`i2o_utils.data.layout.read_gt`) or, faster for large tables and when
        several splits share it, the wide matrix of :func:`i2o_utils.data.layout.read_gt_matrix`
        (index ``plate_barcode, well_id``, one column per gene).

    Returns
    -------
    split
        A copy whose ``measured`` comes from ``gt``; a (well, gene) absent from ``gt`` is NaN,
        so the evaluation leaves that well out for that gene and counts it.
    report
        ``wells_missing`` (list of "plate/well" of predicted wells absent from the truth),
        ``genes_missing`` (predicted genes absent from the truth), ``n_cells_missing`` and
        ``n_disagree`` (cells where the file's own ``measured`` layer differs from the truth
        by more than 1e-6 relative).
    """
    if not (isinstance(gt.index, pd.MultiIndex) and list(gt.index.names) == ["plate_barcode", "well_id"]):
        need = (layout.GT_PLATE, layout.GT_WELL, layout.GT_GENE, layout.GT_MEASURED)
        missing = [c for c in need if c not in gt.columns]
        if missing:
            raise LayoutError(f"GT table lacks column(s) {missing}")
        gt = layout.gt_to_matrix(gt.astype({layout.GT_PLATE: str, layout.GT_WELL: str, layout.GT_GENE: str,
                                            layout.GT_MEASURED: float}))
    wide = gt.set_axis([f"{p}/{w}" for p, w in gt.index], axis=0)
    wide.columns = wide.columns.astype(str)
    wkeys = split.wells["plate_barcode"].astype(str) + "/" + split.wells["well_id"].astype(str)
    truth = wide.reindex(index=wkeys.to_numpy(), columns=split.genes).to_numpy(np.float64)
    wells_missing = [k for k in wkeys if k not in wide.index]
    genes_missing = [g for g in split.genes if g not in wide.columns]
    both = np.isfinite(truth) & np.isfinite(split.measured)
    tol = 1e-6 * np.maximum(1.0, np.abs(truth))
    n_disagree = int((np.abs(truth - split.measured) > tol)[both].sum())
    report = {"split": split.split, "wells_missing": wells_missing, "genes_missing": genes_missing,
              "n_cells_missing": int((~np.isfinite(truth)).sum()), "n_disagree": n_disagree}
    return replace(split, measured=truth), report


