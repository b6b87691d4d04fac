"""Figures of the evaluation: the paper's Fig 2, Fig 3 and Fig 12, and the headline comparison.

Each function takes saved results (the per-gene table, the fractions, the predictions) and
returns a matplotlib Figure, so every figure rebuilds without retraining. Every figure names
the significance test it shows.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from i2o_utils.config import OMICS, STIMULI
from i2o_utils.evaluation.predictions import SplitPredictions
from i2o_utils.evaluation.significance import TEST_LABELS
from i2o_utils.plotting.common import save_figure

__all__ = ["COLOURS", "fig2_r2_violins", "fig3_predictability_bars", "fig12_measured_vs_predicted",
           "headline_plot", "null_qq_plot", "save_figure"]

COLOURS = {
    "significant": "#6a3d9a",  # purple, as in the paper's Fig 3
    "not significant": "#f4b6c2",  # light pink
    "filtered (low/no expression)": "#d9d9d9",  # light grey
    "not evaluated": "#ffffff",
}


def _present(per_gene: pd.DataFrame, col: str, order: Sequence[str]) -> list[str]:
    have = set(per_gene[col])
    return [x for x in order if x in have] + sorted(have - set(order))


def fig2_r2_violins(per_gene: pd.DataFrame, seed: int = 0) -> plt.Figure:
    """Fig 2: violins of the median r² per gene, per omics (panel) and stimulus (x), gene dots.

    Genes with a defined r² that passed the filter are shown; dots are coloured by whether the
    gene is significant under the test named in the title.
    """
    omics_list = _present(per_gene, "omics", OMICS)
    stimuli = _present(per_gene, "stimulus", STIMULI)
    fig, axes = plt.subplots(1, len(omics_list), figsize=(4.2 * len(omics_list), 4.2), squeeze=False,
                             sharey=True)
    rng = np.random.default_rng(seed)
    test = per_gene["test"].iloc[0]
    for ax, omics in zip(axes[0], omics_list):
        for i, stim in enumerate(stimuli):
            g = per_gene[(per_gene["omics"] == omics) & (per_gene["stimulus"] == stim)
                         & per_gene["kept"] & per_gene["r2"].notna()]
            if len(g) >= 2 and g["r2"].nunique() > 1:
                parts = ax.violinplot(g["r2"], positions=[i], widths=0.8, showextrema=False)
                for b in parts["bodies"]:
                    b.set_facecolor("#9e9ac8")
                    b.set_alpha(0.35)
            for sig, colour, z in ((False, "#7f7f7f", 2), (True, COLOURS["significant"], 3)):
                s = g[g["significant"] == sig]
                x = i + rng.uniform(-0.18, 0.18, len(s))
                ax.scatter(x, s["r2"], s=6, color=colour, alpha=0.6, lw=0, zorder=z,
                           label=("significant" if sig else "not significant") if i == 0 else None)
            ax.text(i, 1.02, f"n={len(g)}", ha="center", va="bottom", fontsize=8)
            if g.empty:
                ax.text(i, 0.5, "no gene with\na defined r²", ha="center", va="center", fontsize=8,
                        color="#7f7f7f")
        ax.set_xticks(range(len(stimuli)), [s.upper() for s in stimuli])
        ax.set_xlim(-0.6, len(stimuli) - 0.4)
        ax.set_ylim(0, 1.08)
        ax.set_title(omics)
        ax.set_xlabel("stimulus")
    axes[0, 0].set_ylabel("r² (measured vs predicted, test wells; median over splits)")
    axes[0, -1].legend(loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"Fig 2 | Prediction performance per gene product\n"
                 f"colour: significant by the {TEST_LABELS[test]}", fontsize=10)
    fig.tight_layout()
    return fig


def fig3_predictability_bars(fractions: pd.DataFrame) -> plt.Figure:
    """Fig 3: percent significant / not significant / filtered per omics (row) and stimulus (column).

    The significant bar carries the paper's interval (counts at the 97.5% and 2.5% quantiles of
    p over splits); the Benjamini–Hochberg count at 5% FDR is written beside it.
    """
    omics_list = _present(fractions, "omics", OMICS)
    stimuli = _present(fractions, "stimulus", STIMULI)
    fig, axes = plt.subplots(len(omics_list), len(stimuli), figsize=(4.3 * len(stimuli), 2.6 * len(omics_list)),
                             squeeze=False, sharex=True)
    cats = [("significant", "pct_significant"), ("not significant", "pct_not_significant"),
            ("filtered (low/no expression)", "pct_filtered"), ("not evaluated", "pct_not_evaluated")]
    test = fractions["test"].iloc[0]
    for r, omics in enumerate(omics_list):
        for c, stim in enumerate(stimuli):
            ax = axes[r, c]
            row = fractions[(fractions["omics"] == omics) & (fractions["stimulus"] == stim)]
            if row.empty:
                ax.set_axis_off()
                continue
            row = row.iloc[0]
            shown = [(k, col) for k, col in cats if k != "not evaluated" or row[col] > 0]
            y = np.arange(len(shown))[::-1]
            vals = [row[col] for _, col in shown]
            ax.barh(y, vals, color=[COLOURS[k] for k, _ in shown], edgecolor="black", lw=0.5)
            lo, hi = row["pct_significant_lo"], row["pct_significant_hi"]
            ax.errorbar(row["pct_significant"], y[0], xerr=[[row["pct_significant"] - lo], [hi - row["pct_significant"]]],
                        fmt="none", ecolor="black", capsize=3, lw=1)
            for yi, (k, col), v in zip(y, shown, vals):
                n = row[f"n_{col[4:]}"]
                txt = f"{v:.1f}% ({n})"
                x_txt = v
                if k == "significant":
                    txt += f"; BH 5%: {row['n_significant_bh']}"
                    x_txt = max(v, hi)  # right of the interval
                ax.text(min(x_txt, 100) + 1.5, yi, txt, va="center", fontsize=8)
            ax.set_yticks(y, [k for k, _ in shown], fontsize=8)
            ax.set_xlim(0, 130)
            ax.set_title(f"{omics}, {stim.upper()} (of {row['n_genes']} genes)", fontsize=9)
            if r == len(omics_list) - 1:
                ax.set_xlabel("% of gene products measured")
    fig.suptitle(f"Fig 3 | Gene products more predictable than the mean predictor "
                 f"({'pooled' if test == 'perturbation' else 'median'} p < {fractions['alpha'].iloc[0]} "
                 f"over {int(fractions['n_splits'].max())} splits)\n"
                 f"{TEST_LABELS[test]}; bar: 95% interval from the 2.5%/97.5% quantiles of p",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _pick_genes(per_gene: pd.DataFrame, omics: str, stimulus: str) -> tuple[list, str]:
    g = per_gene[(per_gene["omics"] == omics) & (per_gene["stimulus"] == stimulus) & per_gene["r2"].notna()]
    pool = g[g["significant"]]
    note = "significant genes"
    if pool.empty:
        pool = g[g["kept"]]
        note = "none significant: all tested"
    if pool.empty:
        return [], "no gene with a defined r²"
    pool = pool.sort_values(["r2", "gene"], ascending=[False, True], kind="mergesort")
    picks = [pool.iloc[0]]
    if len(pool) > 1:
        picks.append(pool.iloc[-1])
    return picks, note


def fig12_measured_vs_predicted(per_gene: pd.DataFrame,
                                predictions: Mapping[tuple[str, str], Sequence[SplitPredictions]]) -> plt.Figure:
    """Fig 12: measured vs predicted for the most (left) and least (right) predictable genes.

    Per (omics, stimulus) row, the significant gene with the highest and the one with the
    lowest median r² (all tested genes when none is significant, said in the panel). Every
    point is one test well of one split; the test wells of all splits are pooled.
    """
    keys = [(o, s) for o in OMICS for s in STIMULI if (o, s) in predictions]
    keys += [k for k in predictions if k not in keys]
    fig, axes = plt.subplots(max(1, len(keys)), 2, figsize=(8, 3.4 * max(1, len(keys))), squeeze=False)
    test = per_gene["test"].iloc[0]
    for r, (omics, stim) in enumerate(keys):
        picks, note = _pick_genes(per_gene, omics, stim)
        for c in range(2):
            ax = axes[r, c]
            if c >= len(picks):
                ax.set_axis_off()
                ax.text(0.5, 0.5, note if not picks else "only one gene to show", ha="center",
                        va="center", transform=ax.transAxes, fontsize=9)
                continue
            gene = picks[c]
            xs, ys = [], []
            for sp in predictions[(omics, stim)]:
                idx = sp.genes.get_indexer([gene["gene"]])[0]
                if idx < 0:
                    continue
                xs.append(sp.measured[:, idx])
                ys.append(sp.predicted[:, idx])
            x = np.concatenate(xs) if xs else np.zeros(0)
            y = np.concatenate(ys) if ys else np.zeros(0)
            ok = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[ok], y[ok], s=8, alpha=0.5, color=COLOURS["significant"] if gene["significant"] else "#7f7f7f", lw=0)
            if ok.sum() > 1:
                lo, hi = np.nanmin([x[ok].min(), y[ok].min()]), np.nanmax([x[ok].max(), y[ok].max()])
                ax.plot([lo, hi], [lo, hi], color="black", lw=0.7, ls="--")
            label = gene["symbol"] if isinstance(gene["symbol"], str) else gene["gene"]
            which = "most" if c == 0 else "least"
            ax.set_title(f"{omics} {stim.upper()}: {which} predictable ({note})\n{label}: "
                         f"r² {gene['r2']:.2f}, p {gene.get('p_gene', gene['p_median']):.2g}", fontsize=8)
            ax.set_xlabel("measured")
            ax.set_ylabel("predicted")
    fig.suptitle(f"Fig 12 | Measured vs predicted abundance (points: test wells of all splits)\n"
                 f"significance: {TEST_LABELS[test]}", fontsize=10)
    fig.tight_layout()
    return fig


def headline_plot(headline: pd.DataFrame) -> plt.Figure:
    """This run's significant fraction (with interval) beside the paper's, per omics and stimulus."""
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(headline) + 1.6))
    y = np.arange(len(headline))[::-1]
    for yi, (_, r) in zip(y, headline.iterrows()):
        ax.errorbar(r["pct_significant"], yi + 0.12,
                    xerr=[[r["pct_significant"] - r["pct_significant_lo"]], [r["pct_significant_hi"] - r["pct_significant"]]],
                    fmt="o", color=COLOURS["significant"], capsize=3, label="this run" if yi == y[0] else None)
        ax.plot(r["pct_significant_bh"], yi + 0.12, marker="x", color="black", ls="none",
                label="this run, BH 5% FDR" if yi == y[0] else None)
        if np.isfinite(r["paper_pct"]):
            ax.errorbar(r["paper_pct"], yi - 0.12,
                        xerr=[[r["paper_pct"] - r["paper_pct_lo"]], [r["paper_pct_hi"] - r["paper_pct"]]],
                        fmt="s", color="#7f7f7f", capsize=3, label="paper" if yi == y[0] else None)
    ax.set_yticks(y, [f"{o}, {s}" for o, s in zip(headline["omics"], headline["stimulus"])])
    ax.set_xlabel("% of gene products significantly more predictable than the mean predictor")
    ax.set_xlim(0, 100)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    prof, src = headline["profile"].iloc[0], headline["data source"].iloc[0]
    ax.set_title(f"This run ({prof} profile, {src}) vs the paper\n{headline['test'].iloc[0]}", fontsize=9)
    fig.tight_layout()
    return fig


TEST_COLOURS = {"perturbation": "#1b7837", "mannwhitney": "#2166ac", "wilcoxon": "#b2182b"}


def null_qq_plot(pvalues: pd.DataFrame, alpha: float = 0.05, title: str = "") -> plt.Figure:
    """QQ plot of a null screen's p-values against the uniform, every test, on -log10 axes.

    ``pvalues``: :func:`i2o_utils.evaluation.pipeline.pvalues_by_test`. Left panel: single
    split tests (each should be uniform on a screen without signal); right: the gene's p-value
    over the splits, the one the significance call uses. All (omics, stimulus) pooled. A
    calibrated test follows the diagonal or stays below it; a curve above it rejects too often.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.3), squeeze=False)
    for ax, level, name in zip(axes[0], ("split", "gene"), ("single split tests", "over splits (the call)")):
        top = 0.0
        for test in [t for t in TEST_COLOURS if t in set(pvalues["test"])]:
            p = np.sort(pvalues.loc[(pvalues["test"] == test) & (pvalues["level"] == level), "pvalue"]
                        .to_numpy(np.float64))
            p = p[np.isfinite(p)]
            if not len(p):
                continue
            expected = (np.arange(1, len(p) + 1) - 0.5) / len(p)
            obs = -np.log10(np.clip(p, 1e-300, 1))
            ax.plot(-np.log10(expected), obs, ".", ms=2.5, color=TEST_COLOURS[test], label=test)
            top = max(top, float(obs.max()), float(-np.log10(expected[0])))
        ax.plot([0, top], [0, top], color="black", lw=0.8)
        ax.axhline(-np.log10(alpha), color="grey", ls=":", lw=0.8)
        ax.set_xlabel("expected -log10(p) (uniform)")
        ax.set_ylabel("observed -log10(p)")
        ax.set_title(name, fontsize=10)
        ax.legend(frameon=False, fontsize=8, markerscale=3)
    fig.suptitle(title or "Null screen: p-values against the uniform (dotted: alpha)", fontsize=10)
    fig.tight_layout()
    return fig
