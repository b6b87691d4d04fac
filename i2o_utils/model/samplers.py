"""Batch sampler of the triplet pre-training (paper: "Backbone Pre-training").

Each batch holds K wells spread uniformly over G randomly drawn groups, a group being one
(genetic perturbation, stimulus) pair: K/G wells per group. A group with fewer wells than K/G
contributes each of its wells once (in random order) before any repeats; a repeated well gets
fresh random tiles, so it is a distinct instance of the perturbation. Only groups of at least
two wells take part (a triplet needs a positive).

All randomness comes from one ``numpy.random.Generator`` whose state is part of the sampler's
``state_dict``, so a resumed run draws the very batches it would have drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["TripletBatchSampler", "group_labels"]


def group_labels(wells: pd.DataFrame, by: tuple[str, ...] = ("target", "cell_state")) -> np.ndarray:
    """Integer group label per well: one label per (perturbation, stimulus), sorted by name."""
    missing = [c for c in by if c not in wells.columns]
    if missing:
        raise KeyError(f"wells table lacks column(s) {missing}")
    keys = wells[list(by)].astype(str).agg("|".join, axis=1)
    return pd.Categorical(keys, categories=sorted(keys.unique())).codes.astype(np.int64)


class TripletBatchSampler:
    """Draw batches of K wells from G random groups.

    Parameters
    ----------
    labels
        Group label per well (see :func:`group_labels`); negative labels exclude a well.
    wells_per_batch
        K; must be a multiple of ``groups_per_batch``.
    groups_per_batch
        G; at most the number of groups with two or more wells.
    seed
        Seed of the sampler's generator.
    """

    def __init__(self, labels: np.ndarray, wells_per_batch: int, groups_per_batch: int,
                 seed: int = 0) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if wells_per_batch % groups_per_batch:
            raise ValueError(f"wells_per_batch={wells_per_batch} is not a multiple of "
                             f"groups_per_batch={groups_per_batch}")
        self.per_group = wells_per_batch // groups_per_batch
        if self.per_group < 2:
            raise ValueError("need at least two wells per group in a batch (K/G >= 2)")
        self.labels = labels
        uniq, counts = np.unique(labels[labels >= 0], return_counts=True)
        self.groups = uniq[counts >= 2]
        if len(self.groups) < groups_per_batch:
            raise ValueError(f"only {len(self.groups)} groups have two or more wells; "
                             f"groups_per_batch={groups_per_batch} is too many")
        if len(self.groups) < 2:
            raise ValueError("need at least two groups with two or more wells (negatives)")
        self.members = {int(g): np.flatnonzero(labels == g) for g in self.groups}
        self.wells_per_batch = int(wells_per_batch)
        self.groups_per_batch = int(groups_per_batch)
        self.rng = np.random.default_rng(seed)

    def next_batch(self, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(well indices (K,), group labels (K,)) of the next batch."""
        rng = self.rng if rng is None else rng
        chosen = rng.choice(self.groups, size=self.groups_per_batch, replace=False)
        idx = []
        for g in chosen:
            m = self.members[int(g)]
            reps = -(-self.per_group // len(m))
            order = np.concatenate([rng.permutation(m) for _ in range(reps)])
            idx.append(order[: self.per_group])
        wells = np.concatenate(idx)
        return wells, self.labels[wells]

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
