"""Data splits (paper: "Data splitting").

The unique perturbations (knock-out targets, NT included as one perturbation) are split into
train / validation / test with fractions 70/10/20, once per seed. A perturbation is on one side
only, under both stimuli, so no well of a test perturbation is ever seen in training.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

FOLDS = ("train", "val", "test")


def split_perturbations(perturbations: Sequence[str], seed: int,
                        fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> pd.Series:
    """Assign each unique perturbation to 'train', 'val' or 'test'.

    Counts are ``round(n * f_val)`` and ``round(n * f_test)`` (at least one each when there are
    three or more perturbations); the rest train. Deterministic for a seed.

    Returns
    -------
    pandas.Series
        Indexed by perturbation (sorted), values the fold.
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
    fold = np.empty(n, dtype=object)
    fold[order[:n_test]] = "test"
    fold[order[n_test:n_test + n_val]] = "val"
    fold[order[n_test + n_val:]] = "train"
    return pd.Series(fold, index=pd.Index(uniq, name="target"), name="fold")


def make_splits(perturbations: Sequence[str], n_splits: int = 10,
                fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> pd.DataFrame:
    """All splits as a long table: ``split, target, fold`` (split k uses seed k)."""
    parts = []
    for k in range(n_splits):
        s = split_perturbations(perturbations, seed=k, fractions=fractions).reset_index()
        s.insert(0, "split", k)
        parts.append(s)
    return pd.concat(parts, ignore_index=True)
