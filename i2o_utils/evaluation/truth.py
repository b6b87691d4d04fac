"""Recovery of the simulated screen's truth (beyond the paper).

The simulator writes ``simulation/truth_genes.csv`` (``omics, gene, kind, r2_expected``):
``kind`` is ``visible`` for genes driven by the latent state the images show, ``hidden``
(driven by a state the images do not show), ``noise`` or ``low`` (lowly expressed, for the
filter). A good evaluation calls the visible genes significant and little else; on a null
screen (images without signal) it calls about ``alpha`` of the genes or fewer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from i2o_utils.data.layout import TRUTH_KINDS, parse_bool, read_truth_genes, truth_path

__all__ = ["TRUTH_KINDS", "truth_path", "read_truth_genes", "truth_recovery", "signal_summary"]


def _ratio(a: float, b: float) -> float:
    return a / b if b else np.nan


def truth_recovery(per_gene: pd.DataFrame, truth: pd.DataFrame,
                   per_split: pd.DataFrame | None = None) -> pd.DataFrame:
    """Precision and recall of the significant genes against ``kind == 'visible'``.

    Parameters
    ----------
    per_gene
        Per-gene results (:func:`~i2o_utils.evaluation.summaries.summarise_genes`), any number
        of (omics, stimulus).
    truth
        :func:`read_truth_genes`; with a ``stimulus`` column it is matched per stimulus.

    Returns
    -------
    pandas.DataFrame
        One row per (omics, stimulus, call) with call ``"raw"`` (median p < alpha) or
        ``"BH"`` (q < FDR): ``n_genes, n_visible, n_visible_kept, n_called, tp, fp,
        precision, recall`` (of all visible genes measured), ``recall_kept`` (of the visible
        genes that passed the filter), ``false_positive_rate`` (called among tested
        non-visible genes), ``n_not_in_truth`` (evaluated genes the truth does not list),
        ``n_truth_not_measured`` (truth genes absent from the results), and the Spearman
        correlation of observed median r² with ``r2_expected`` (``r2_expected_{stimulus}``
        when the table has it) over the tested visible genes. With ``per_split`` (the per-split
        results), ``split_tests_true_positive_rate`` and ``split_tests_false_positive_rate``:
        the share of single (split, gene) tests with p < alpha among visible and among
        non-visible genes, i.e. one split's test before the median over splits.
    """
    on = ["omics", "stimulus", "gene"] if "stimulus" in truth.columns else ["omics", "gene"]
    extra = [c for c in truth.columns if c.startswith("r2_expected_")]
    extra += ["predictable"] if "predictable" in truth.columns else []
    t = truth[on + ["kind", "r2_expected"] + extra].copy()
    t["gene"] = t["gene"].astype(str)
    rows = []
    for (omics, stimulus), g in per_gene.groupby(["omics", "stimulus"], sort=False):
        m = g.merge(t, on=on, how="left")
        if f"r2_expected_{stimulus}" in m.columns:  # the simulator's per-stimulus expectation
            m["r2_expected"] = m[f"r2_expected_{stimulus}"]
        tg = t[(t["omics"] == omics) & ((t["stimulus"] == stimulus) if "stimulus" in t else True)]
        kind = m["kind"].fillna("not in truth")
        visible = (kind == "visible").to_numpy()
        if "predictable" in m:  # a null screen plants 'visible' genes that the images cannot show
            visible &= m["predictable"].map(parse_bool).fillna(False).to_numpy(bool)
        tested = m["category"].isin(["significant", "not significant"]).to_numpy()
        kept = m["kept"].to_numpy(bool)
        rho, n_rho = np.nan, int((visible & tested & m["r2"].notna()).sum())
        sel = visible & tested & m["r2"].notna().to_numpy()
        if n_rho >= 3 and m.loc[sel, "r2"].nunique() > 1 and m.loc[sel, "r2_expected"].nunique() > 1:
            rho = float(stats.spearmanr(m.loc[sel, "r2"], m.loc[sel, "r2_expected"]).statistic)
        split_tpr = split_fpr = np.nan
        if per_split is not None:
            ps = per_split[(per_split["omics"] == omics) & (per_split["stimulus"] == stimulus)]
            ps = ps[np.isfinite(ps["pvalue"])]
            vis_ps = ps["gene"].isin(set(m.loc[visible, "gene"]))
            alpha = float(g["alpha"].iloc[0]) if "alpha" in g else 0.05
            below = (ps["pvalue"] < alpha).to_numpy()
            split_tpr = float(below[vis_ps.to_numpy()].mean()) if vis_ps.any() else np.nan
            split_fpr = float(below[~vis_ps.to_numpy()].mean()) if (~vis_ps).any() else np.nan
        for call, col in (("raw", "significant"), ("BH", "significant_bh")):
            called = m[col].to_numpy(bool)
            tp = int((called & visible).sum())
            fp = int((called & ~visible).sum())
            rows.append({
                "omics": omics, "stimulus": stimulus, "call": call, "test": g["test"].iloc[0],
                "n_genes": len(m), "n_visible": int(visible.sum()),
                "n_visible_kept": int((visible & kept).sum()), "n_called": int(called.sum()),
                "tp": tp, "fp": fp, "precision": _ratio(tp, tp + fp),
                "recall": _ratio(tp, int(visible.sum())),
                "recall_kept": _ratio(tp, int((visible & kept).sum())),
                "false_positive_rate": _ratio(fp, int((tested & ~visible).sum())),
                "n_not_in_truth": int((kind == "not in truth").sum()),
                "n_truth_not_measured": int((~tg["gene"].isin(m["gene"])).sum()),
                "spearman_r2_vs_expected": rho, "n_spearman": n_rho,
                "split_tests_true_positive_rate": split_tpr,
                "split_tests_false_positive_rate": split_fpr,
            })
    return pd.DataFrame(rows)


def signal_summary(truth: pd.DataFrame) -> pd.DataFrame:
    """The strength of the simulated signal, per omics: how many genes the images can predict and how well.

    One row per omics: ``genes``, ``visible`` (planted as driven by the state the images show;
    0 on a null screen), the range of their loading ``strength`` (when the table has it) and
    the quartiles of ``r2_expected`` over them: the share of a visible gene's label variance
    across perturbations that the visible state explains, i.e. what a perfect image model
    could reach at the perturbation level.
    """
    rows = []
    for omics, g in truth.groupby("omics", sort=False):
        vis = g["kind"] == "visible"
        if "predictable" in g:
            vis &= g["predictable"].map(parse_bool).fillna(False).astype(bool)
        v = g[vis]
        row = {"omics": omics, "genes": len(g), "visible": int(vis.sum())}
        if "strength" in g and len(v):
            row["loading strength"] = f"{v['strength'].min():.2f}-{v['strength'].max():.2f}"
        r2e = v["r2_expected"].to_numpy(np.float64)
        row["expected r² (25/50/75%)"] = (" / ".join(f"{x:.2f}" for x in np.quantile(r2e, [0.25, 0.5, 0.75]))
                                           if len(r2e) else "n/a")
        rows.append(row)
    return pd.DataFrame(rows)
