"""The expression filter (paper: “Data preprocessing”).

    "If the normalized counts were greater than zero in less than 50 out of 384 wells (13 %) in
    each plate, the transcript/protein was eliminated from the analysis."

The sentence admits two readings, both offered through ``rule``:

* ``"all"`` (default, the stricter): a gene is kept only if it is detected in at least the
  fraction of wells on **every** plate, i.e. it is eliminated as soon as it fails on one plate;
* ``"any"``: a gene is eliminated only if it fails on **every** plate (kept if it passes on one).

The threshold is a fraction of each plate's wells (``50 / 384`` in the paper), so other plate
sizes work. "Detected" is a normalised value > 0: for RNA a count > 0, for proteins a quantified
(non-zero, non-missing) intensity, since vsn values can be negative.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from i2o_utils.omics._checks import OmicsInputError, as_labels

RULES = ("all", "any")


def filter_low_expression(detected: Any, plates: Any, min_fraction: float = 50 / 384, rule: str = "all",
                          genes: Any | None = None) -> pd.DataFrame:
    """Which genes pass the paper's expression filter, and why the others do not.

    Parameters
    ----------
    detected
        Boolean samples x genes (normalised value > 0 / quantified), array or DataFrame.
    plates
        Plate of each sample (the filter is applied plate by plate).
    min_fraction
        Minimum fraction of a plate's wells in which the gene must be detected (paper: 50/384).
    rule
        ``"all"``: must pass on every plate (default, stricter); ``"any"``: on at least one.
    genes
        Gene labels when ``detected`` is an array.

    Returns
    -------
    pandas.DataFrame
        Indexed by gene: ``kept`` (bool), ``reason`` ("" for kept genes), ``n_plates_passed``,
        ``min_detected_fraction`` and ``max_detected_fraction`` over plates.
    """
    if rule not in RULES:
        raise OmicsInputError(f"filter rule must be one of {RULES}, got {rule!r}")
    if not 0 <= min_fraction <= 1:
        raise OmicsInputError(f"min_fraction must be in [0, 1], got {min_fraction}")
    frame = isinstance(detected, pd.DataFrame)
    d = np.asarray(detected).astype(bool)
    if d.ndim != 2:
        raise OmicsInputError(f"detected: expected a samples x genes matrix, got shape {d.shape}")
    plate_names, plate = np.unique(as_labels(plates, d.shape[0], "plates", detected.index if frame else None),
                                   return_inverse=True)
    counts = np.stack([d[plate == j].sum(axis=0) for j in range(len(plate_names))]).astype(np.float64)
    n = np.bincount(plate).astype(float)  # wells per plate
    if genes is None:
        genes = detected.columns if frame else np.arange(d.shape[1])
    # compare counts (not fractions) with a tolerance, so that 50 of 384 passes at 50/384
    passed = counts >= min_fraction * n[:, None] - 1e-9
    frac = counts / n[:, None]
    n_pass = passed.sum(axis=0)
    n_plates = passed.shape[0]
    kept = n_pass == n_plates if rule == "all" else n_pass >= 1
    pct = f"{min_fraction:.1%}"
    reason = ["" if k else (f"detected in < {pct} of wells on every plate" if m == 0 else
                            f"detected in < {pct} of wells on {n_plates - m} of {n_plates} plates")
              for k, m in zip(kept, n_pass)]
    return pd.DataFrame({
        "kept": kept,
        "reason": reason,
        "n_plates_passed": n_pass,
        "min_detected_fraction": frac.min(axis=0),
        "max_detected_fraction": frac.max(axis=0),
    }, index=pd.Index(genes, name="gene"))
