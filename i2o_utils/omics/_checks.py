"""Input checks shared by the omics functions: every error names the sample, gene or column at fault."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd


class OmicsInputError(ValueError):
    """Omics input that cannot be processed; the message names the problem and where it is."""


def _name(labels: Sequence[Any] | None, i: int, kind: str) -> str:
    return f"{kind} {i}" if labels is None else f"{kind} {labels[i]!r}"


def as_matrix(x: Any, what: str = "x") -> tuple[np.ndarray, pd.Index | None, pd.Index | None]:
    """A samples x genes array as float64, plus sample and gene labels when ``x`` is a DataFrame.

    Raises
    ------
    OmicsInputError
        If ``x`` is not 2-D, is empty, or has duplicated sample or gene labels.
    """
    index, columns = (x.index, x.columns) if isinstance(x, pd.DataFrame) else (None, None)
    try:
        values = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise OmicsInputError(f"{what}: not a numeric matrix ({e})") from e
    if values.ndim != 2:
        raise OmicsInputError(f"{what}: expected a 2-D samples x genes matrix, got shape {values.shape}")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise OmicsInputError(f"{what}: empty matrix of shape {values.shape}")
    for labels, kind in ((index, "sample"), (columns, "gene")):
        if labels is not None and labels.has_duplicates:
            raise OmicsInputError(f"{what}: duplicated {kind} label {labels[labels.duplicated()][0]!r}")
    return values, index, columns


def _at(i: int, j: int, samples=None, genes=None) -> str:
    return f"{_name(samples, i, 'sample')}, {_name(genes, j, 'gene')}"


def check_no_inf(x: np.ndarray, what: str, samples=None, genes=None, allow_nan: bool = False) -> None:
    """Raise naming the first sample and gene holding an inf (or a NaN unless ``allow_nan``)."""
    bad = np.isinf(x) if allow_nan else ~np.isfinite(x)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise OmicsInputError(f"{what}: {'infinite' if np.isinf(x[i, j]) else 'NaN'} value in "
                              f"{_at(i, j, samples, genes)} ({int(bad.sum())} non-finite values in all)")


def check_counts(x: np.ndarray, what: str, samples=None, genes=None) -> None:
    """Counts must be finite, non-negative integers, and no sample may be all zero."""
    check_no_inf(x, what, samples, genes)
    for bad, fault in ((x < 0, "negative count {v:g} in {at}; counts must be >= 0"),
                       (x != np.floor(x), "non-integer count {v:g} in {at}; raw counts are required")):
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise OmicsInputError(f"{what}: " + fault.format(v=x[i, j], at=_at(i, j, samples, genes)))
    check_no_empty_samples(x > 0, what, samples)


def check_no_empty_samples(detected: np.ndarray, what: str, samples=None) -> None:
    """Raise naming the samples in which nothing was detected."""
    idx = np.flatnonzero(~detected.any(axis=1))
    if len(idx):
        names = ", ".join(_name(samples, i, "sample") for i in idx[:5])
        more = f" and {len(idx) - 5} more" if len(idx) > 5 else ""
        raise OmicsInputError(f"{what}: all-zero (or all-missing) sample(s): {names}{more}")


def align_to_samples(x: Any, samples, what: str, kind: str = "label") -> Any:
    """``x`` reindexed to ``samples`` if it is a Series/DataFrame indexed by sample (raises naming missing
    or duplicated samples); anything else as it is."""
    if not isinstance(x, (pd.Series, pd.DataFrame)) or samples is None or x.index.equals(pd.RangeIndex(len(x))):
        return x
    missing = pd.Index(samples).difference(x.index)
    if len(missing):
        raise OmicsInputError(f"{what}: no {kind} for sample(s) {list(missing[:5])}")
    if x.index.has_duplicates:
        raise OmicsInputError(f"{what}: duplicated sample(s) {list(x.index[x.index.duplicated()][:5])}")
    return x.reindex(samples)


def as_labels(labels: Any, n: int, what: str, samples=None) -> np.ndarray:
    """One label per sample as a string array (a Series indexed by sample aligned by
    :func:`align_to_samples`); raises if the length does not match ``n`` or a label is missing."""
    arr = np.asarray(align_to_samples(labels, samples, what), dtype=object)
    if arr.ndim != 1 or len(arr) != n:
        raise OmicsInputError(f"{what}: {arr.shape[0] if arr.ndim else 1} labels for {n} samples; "
                              "one label per sample is required")
    na = pd.isna(arr)
    if na.any():
        raise OmicsInputError(f"{what}: missing label for {_name(samples, int(np.flatnonzero(na)[0]), 'sample')}")
    return arr.astype(str)
