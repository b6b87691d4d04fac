"""Figures of notebook 60: the paper's Fig 4 (r² by location) and Fig 5 (OLS forest plots),
and the planted-versus-recovered check of a simulated screen."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from i2o_utils.analysis.localisation import forest_terms, location_long
from i2o_utils.config import OMICS, STIMULI

__all__ = ["fig4_location_r2", "fig5_forest", "planted_vs_recovered_plot"]

_SECTION_COLOURS = {"pathway": "#6a3d9a", "location": "#1f78b4", "abundance": "#33a02c"}


def _panels(df: pd.DataFrame):
    keys = [(o, s) for o in OMICS for s in STIMULI if ((df["omics"] == o) & (df["stimulus"] == s)).any()]
    return keys


def _message_figure(text: str) -> plt.Figure:
    """A small figure that says why there is nothing to plot (e.g. the smoke profile)."""
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def fig4_location_r2(table: pd.DataFrame, top: pd.DataFrame, r2_label: str = "r² (split 0)") -> plt.Figure:
    """Fig 4: r² of the genes of the 8 largest locations, sorted by mean r² (left lowest), one
    panel per (omics, stimulus): transcripts top, proteins bottom, M1 left, M2 right.

    ``table``: :func:`~i2o_utils.analysis.localisation.predictability_table`; ``top``:
    :func:`~i2o_utils.analysis.localisation.top_locations`. Box: quartiles; dots: genes; diamond: mean.
    """
    long = location_long(table)
    omics_list = [o for o in OMICS if (top["omics"] == o).any()] or list(OMICS[:1])
    fig, axes = plt.subplots(len(omics_list), len(STIMULI), figsize=(6.2 * len(STIMULI), 3.6 * len(omics_list)),
                             squeeze=False, sharey=True)
    rng = np.random.default_rng(0)
    for i, omics in enumerate(omics_list):
        for j, stim in enumerate(STIMULI):
            ax = axes[i, j]
            t = top[(top["omics"] == omics) & (top["stimulus"] == stim)].sort_values("rank")
            ax.set_title(f"{omics.capitalize()} ({stim.upper()})", fontsize=10)
            if t.empty:
                ax.text(0.5, 0.5, "no located genes", ha="center", va="center", transform=ax.transAxes)
                continue
            d = long[(long["omics"] == omics) & (long["stimulus"] == stim)]
            data = [d.loc[d["location"] == loc, "r2"].to_numpy() for loc in t["location"]]
            ax.boxplot(data, positions=np.arange(len(data)), widths=0.6, showfliers=False,
                       medianprops={"color": "#333333"}, boxprops={"color": "#6a3d9a"})
            for k, v in enumerate(data):
                ax.scatter(k + rng.uniform(-0.2, 0.2, len(v)), v, s=4, alpha=0.35, color="#6a3d9a", lw=0)
                ax.scatter([k], [v.mean()], marker="D", s=22, color="#e31a1c", zorder=4)
            ax.set_xticks(np.arange(len(data)))
            ax.set_xticklabels([f"{loc}\n(n={n})" for loc, n in zip(t["location"], t["n_genes"])],
                               rotation=40, ha="right", fontsize=7)
            if j == 0:
                ax.set_ylabel(r2_label)
    fig.suptitle("Fig 4 · Predictability by subcellular location (8 largest locations, sorted by mean r²)",
                 fontsize=11)
    fig.tight_layout()
    return fig


def fig5_forest(coefs: pd.DataFrame, n_top: int = 5, pathway_kind: str = "pathway") -> plt.Figure:
    """Fig 5: forest plots of the OLS coefficients (95% intervals), one panel per (omics, stimulus):
    top and bottom ``n_top`` significant pathway terms, significant location terms, mean abundance."""
    keys = _panels(coefs)
    if not keys:
        return _message_figure("Fig 5: no (omics, stimulus) with genes of defined r² to regress")
    ncol = 2
    nrow = max(1, int(np.ceil(len(keys) / ncol)))
    rows_per = [len(forest_terms(coefs[(coefs["omics"] == o) & (coefs["stimulus"] == s)], n_top)) for o, s in keys]
    height = max(3.0, 0.24 * max(rows_per + [4]) + 1.2)
    fig, axes = plt.subplots(nrow, ncol, figsize=(7.0 * ncol, height * nrow), squeeze=False)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    for ax, (omics, stim) in zip(axes.ravel(), keys):
        f = forest_terms(coefs[(coefs["omics"] == omics) & (coefs["stimulus"] == stim)], n_top)
        y = np.arange(len(f))[::-1]
        for sec, colour in _SECTION_COLOURS.items():
            m = (f["section"] == sec).to_numpy()
            beta, lo, hi = (f.loc[m, c].to_numpy(float) for c in ("beta", "ci_low", "ci_high"))
            ax.errorbar(beta, y[m], xerr=[beta - lo, hi - beta],
                        fmt="o", color=colour, ms=4, capsize=2, lw=1,
                        label=pathway_kind if sec == "pathway" else sec)
        ax.axvline(0, color="#999999", lw=0.8, ls="--")
        labels = [(t if len(t) <= 48 else t[:45] + "...") + ("" if s else " (n.s.)")
                  for t, s in zip(f["term"], f["significant"])]
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=7)
        for k in range(1, len(f)):
            if f["section"].iloc[k] != f["section"].iloc[k - 1]:
                ax.axhline(y[k] + 0.5, color="#cccccc", lw=0.8)
        ax.set_xlabel("OLS coefficient on r² (95% CI; higher = more predictable)")
        ax.set_title(f"{omics.capitalize()} ({stim.upper()})", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Fig 5 · Terms associated with predictability (p ≤ 0.05, not calibrated: genes are not "
                 "independent)", fontsize=10)
    fig.tight_layout()
    return fig


def planted_vs_recovered_plot(measured: pd.DataFrame, expected: pd.DataFrame, comparison: pd.DataFrame) -> plt.Figure:
    """Recovered (measured r²) against planted (simulator's expected r²) coefficients of every
    location term, per (omics, stimulus), planted terms highlighted, with the identity line."""
    keys = _panels(measured)
    if not keys:
        return _message_figure("no regression to compare with the planted effects")
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.6 * max(1, len(keys)), 3.6), squeeze=False)
    for ax, (omics, stim) in zip(axes[0], keys):
        m = measured[(measured["omics"] == omics) & (measured["stimulus"] == stim)
                     & measured["term_type"].isin(["location", "pathway"])]
        e = expected[(expected["omics"] == omics) & (expected["stimulus"] == stim)]
        j = m.merge(e[["term", "beta"]], on="term", suffixes=("", "_planted"))
        loc = j[j["term_type"] == "location"]
        bp, b, lo, hi = (loc[c].to_numpy(float) for c in ("beta_planted", "beta", "ci_low", "ci_high"))
        ax.errorbar(bp, b, yerr=[b - lo, hi - b],
                    fmt="o", ms=3, color="#1f78b4", alpha=0.7, lw=0.7, label="location terms")
        c = comparison[(comparison["omics"] == omics) & (comparison["stimulus"] == stim)].dropna(
            subset=["beta_planted", "beta_recovered"])
        ax.scatter(c["beta_planted"], c["beta_recovered"], s=40, facecolors="none", edgecolors="#e31a1c",
                   label="planted terms", zorder=4)
        lim = np.nanmax(np.abs(np.r_[j["beta"], j["beta_planted"], 0.01])) * 1.1
        ax.plot([-lim, lim], [-lim, lim], color="#999999", lw=0.8, ls="--")
        ax.axhline(0, color="#dddddd", lw=0.6)
        ax.axvline(0, color="#dddddd", lw=0.6)
        ax.set_xlabel("planted (regression of expected r²)")
        ax.set_ylabel("recovered (regression of measured r²)")
        ax.set_title(f"{omics} {stim.upper()}", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig
