"""Data splits (paper: "Data splitting"), computed once for a screen.

The unique perturbations (knock-out targets, NT included as one perturbation) are split into
train / validation / test with fractions 70/10/20, once per seed. A perturbation is on one side
only, under both stimuli, so no well of a test perturbation is ever seen in training.

Notebook 10 writes the split table (``split, target, fold``; :func:`split_table_path`) beside
its labels; notebooks 40 and 50 read it (:func:`load_split_table`). Split 0 is the fold column of
the GT tables: on a simulated screen notebook 10 writes that column from split 0; where the GT
tables are given (the authors' data), split 0 is taken from their fold column
(:func:`gt_perturbation_folds`) and the other splits are drawn. :func:`check_split_table`
compares split 0 with every GT table, well by well.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from i2o_utils.config import OMICS, STIMULI
from i2o_utils.data import layout
from i2o_utils.data.layout import FOLDS, LayoutError
from i2o_utils.paths import bucket_paths, results_dir

SPLIT_TABLE_COLUMNS = ("split", "target", "fold")
SPLITS_STEP = "10_preprocess_omics"


def split_perturbations(perturbations: Sequence[str], seed: int,
                        fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> pd.Series:
    """Assign each unique perturbation to 'train', 'val' or 'test': a Series indexed by perturbation
    (sorted), values the fold.

    Counts are ``round(n * f_val)`` and ``round(n * f_test)`` (at least one each when there are
    three or more perturbations); the rest train. Deterministic for a seed.
    """
    uniq = sorted(set(map(str, perturbations)))
    n = len(uniq)
    if n < 3:
        raise ValueError(f"need at least 3 perturbations to split train/val/test, got {n}")
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    n_val = max(1, int(round(n * fractions[1])))
    n_test = max(1, int(round(n * fractions[2])))
    if n_val + n_test >= n:
        raise ValueError(f"{n} perturbations are too few for fractions {fractions}")
    order = np.random.default_rng(seed).permutation(n)
    fold = np.full(n, "train", dtype=object)
    fold[order[:n_test]] = "test"
    fold[order[n_test:n_test + n_val]] = "val"
    return pd.Series(fold, index=pd.Index(uniq, name="target"), name="fold")


def make_splits(perturbations: Sequence[str], n_splits: int = 10,
                fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                split0: pd.Series | None = None) -> pd.DataFrame:
    """All splits as a long table: ``split, target, fold`` (split k uses seed k). ``split0`` (target
    -> fold, e.g. :func:`gt_perturbation_folds`) replaces the drawn split 0 for the perturbations it
    lists (the others, which have no label, keep the drawn fold)."""
    drawn = {k: split_perturbations(perturbations, seed=k, fractions=fractions) for k in range(n_splits)}
    if split0 is not None:
        drawn[0] = split0.astype(str).reindex(drawn[0].index).fillna(drawn[0]).rename("fold")
    return pd.concat(drawn, names=["split"]).reset_index()


def split_table_path(results_root: str | os.PathLike | None = None) -> Path:
    """``<results>/10_preprocess_omics/splits.csv``."""
    return (Path(results_root) if results_root is not None else results_dir()) / SPLITS_STEP / "splits.csv"


def read_split_table(path: str | os.PathLike, n_splits: int | None = None) -> pd.DataFrame:
    """Read and check a split table: columns, folds, one fold per (split, target), the same
    perturbations in every split, splits numbered 0.. (``n_splits`` of them when given). A fault
    raises :class:`LayoutError` naming the file and the split, perturbation or value at fault."""
    path = Path(path)
    if not path.exists():
        raise LayoutError(f"{path}: no such file (the split table is written by notebook {SPLITS_STEP})")
    df = pd.read_csv(path, dtype={"target": str, "fold": str}, keep_default_na=False)
    layout.require_columns(df, SPLIT_TABLE_COLUMNS, path)
    bad = df.loc[~df["fold"].isin(FOLDS)]
    if len(bad):
        raise LayoutError(f"{path}: split {bad['split'].iloc[0]}, perturbation {bad['target'].iloc[0]}: "
                          f"fold {bad['fold'].iloc[0]!r} is not one of {FOLDS}")
    dup = df.duplicated(["split", "target"])
    if dup.any():
        raise LayoutError(f"{path}: perturbation {df.loc[dup, 'target'].iloc[0]} appears twice in split "
                          f"{df.loc[dup, 'split'].iloc[0]}")
    splits = sorted(int(k) for k in df["split"].unique())
    want = list(range(n_splits if n_splits is not None else len(splits)))
    if splits != want:
        raise LayoutError(f"{path}: splits {splits}, expected {want}")
    targets = set(df.loc[df["split"] == 0, "target"])
    for k, g in df.groupby("split"):
        if set(g["target"]) != targets:
            odd = sorted(set(g["target"]) ^ targets)
            raise LayoutError(f"{path}: split {k} does not hold the perturbations of split 0 (e.g. {odd[:3]})")
    return df[list(SPLIT_TABLE_COLUMNS)]


def folds_of(table: pd.DataFrame, split: int, targets: pd.Series, where: str | os.PathLike) -> np.ndarray:
    """The fold of each of ``targets`` in ``split`` of the table; a perturbation the table lacks
    raises :class:`LayoutError` naming ``where``."""
    s = table[table["split"] == split].set_index("target")["fold"]
    f = targets.astype(str).map(s)
    if f.isna().any():
        raise LayoutError(f"{where}: perturbation(s) {sorted(set(targets[f.isna()].astype(str)))[:5]} have no fold "
                          f"in split {split} of the split table")
    return f.to_numpy()


def _gt_well_folds(metadata: pd.DataFrame, root: str | os.PathLike | None) -> list[tuple[Path, pd.DataFrame]]:
    """Each GT table present with its wells' folds and perturbations (``plate_barcode, well_id,
    fold, target``; wells the plate map does not list are left out)."""
    targets = metadata.astype(str).set_index(["PLATE_ID", "well_id"])["target"].to_dict()
    out = []
    for omics in OMICS:
        for stim in STIMULI:
            path = layout.gt_path(omics, stim, root)
            if path.exists():
                f = layout.read_gt_folds(path)
                f["target"] = [targets.get((layout.plate_id(p, where=path), w))
                               for p, w in zip(f[layout.GT_PLATE], f[layout.GT_WELL])]
                out.append((path, f.dropna(subset=["target"])))
    return out


def gt_perturbation_folds(metadata: pd.DataFrame, root: str | os.PathLike | None = None) -> pd.Series | None:
    """The fold of each perturbation in the GT tables' fold column (target -> fold), or ``None``
    without GT tables. A perturbation in two folds raises :class:`LayoutError` naming the file(s)
    and wells."""
    tables = _gt_well_folds(metadata, root)
    if not tables:
        return None
    wells = pd.concat([f.assign(path=path) for path, f in tables], ignore_index=True)
    first = wells.drop_duplicates("target").set_index("target")  # where each perturbation is first seen
    bad = wells["fold"] != wells["target"].map(first["fold"])
    if bad.any():
        r = wells[bad].iloc[0]
        s = first.loc[r["target"]]
        raise LayoutError(f"{r['path']}: well {r[layout.GT_WELL]} of plate {r[layout.GT_PLATE]} puts perturbation "
                          f"{r['target']} in fold {r['fold']!r}, but {s['path']} puts it in {s['fold']!r} (well "
                          f"{s[layout.GT_WELL]} of plate {s[layout.GT_PLATE]}); the wells of one perturbation share "
                          "one fold")
    return first["fold"]


def screen_splits(metadata: pd.DataFrame, n_splits: int, fractions: tuple[float, float, float], *,
                  gt_given: bool, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The split table of a screen (the perturbations of ``metadata.csv``): drawn, except that
    split 0 follows the GT tables' fold column when the GT tables are given (``gt_given``: the
    authors' data, which notebook 10 does not rewrite)."""
    split0 = gt_perturbation_folds(metadata, root) if gt_given else None
    return make_splits(metadata["target"].astype(str).unique(), n_splits, fractions, split0=split0)


def check_split_table(table: pd.DataFrame, metadata: pd.DataFrame, root: str | os.PathLike | None = None,
                      where: str | os.PathLike = "the split table") -> list[Path]:
    """Compare split 0 of the table with the fold column of every GT table, well by well; returns
    the GT files checked. Raises :class:`LayoutError` naming the GT file, the well, its perturbation
    and both folds at the first disagreement, or a GT well whose perturbation the table lacks."""
    s0 = table[table["split"] == 0].set_index("target")["fold"]
    checked = []
    for path, f in _gt_well_folds(metadata, root):
        expected = f["target"].map(s0)
        bad = expected.isna() | (expected != f["fold"])
        if bad.any():
            r = f.loc[bad].iloc[0]
            want = expected[bad].iloc[0]
            what = (f"has no fold in split 0 of {where}" if pd.isna(want)
                    else f"is in fold {want!r} in split 0 of {where}")
            raise LayoutError(f"{path}: well {r[layout.GT_WELL]} of plate {r[layout.GT_PLATE]} (perturbation "
                              f"{r['target']}) has fold {r['fold']!r}, but the perturbation {what} "
                              f"({int(bad.sum())} well(s) disagree)")
        checked.append(path)
    return checked


def load_split_table(n_splits: int | None = None, path: str | os.PathLike | None = None, *,
                     data_root: str | os.PathLike | None = None, check_gt: bool = True) -> pd.DataFrame:
    """Read notebook 10's split table (:func:`read_split_table`) and, with ``check_gt``, check its
    split 0 against the GT tables of the data root (:func:`check_split_table`)."""
    path = Path(path) if path is not None else split_table_path()
    table = read_split_table(path, n_splits)
    metadata = bucket_paths(data_root)["metadata"]
    if check_gt and metadata.exists():
        check_split_table(table, layout.read_metadata(metadata), data_root, where=path)
    return table
