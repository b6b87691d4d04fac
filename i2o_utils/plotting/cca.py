"""Figures of notebook 90: the paper's Fig 13 (similarity of interpretable features with the
learned features, by CCA), the canonical correlations, and the check against the simulator's latent state."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from i2o_utils.analysis.cca import CCAResult

__all__ = ["fig13_cca_similarity", "canonical_correlations_plot", "similarity_vs_tie_plot"]


def fig13_cca_similarity(result: CCAResult, max_features: int = 60) -> plt.Figure:
    """Fig 13: interpretable features (rows, most similar first) against the learned canonical
    variates (columns); brightness = |correlation| on held-out wells; right: the feature's
    similarity (R² on all learned variates)."""
    scores = result.scores.head(max_features)
    sim = result.similarity.loc[scores["feature"]].abs()
    h = max(3.0, 0.17 * len(scores) + 1.5)
    fig, (ax, axb) = plt.subplots(1, 2, figsize=(9.5, h), gridspec_kw={"width_ratios": [max(2, sim.shape[1]), 2]},
                                  sharey=True, layout="constrained")
    im = ax.imshow(sim.to_numpy(), aspect="auto", cmap="magma", vmin=0, vmax=1)
    ax.set_yticks(np.arange(len(scores)))
    ax.set_yticklabels(scores["feature"], fontsize=6)
    ax.set_xticks(np.arange(sim.shape[1]))
    ax.set_xticklabels(sim.columns, fontsize=7)
    ax.set_xlabel("learned features (canonical variates of the well embeddings)")
    fig.colorbar(im, ax=[ax, axb], location="bottom", fraction=0.02, pad=0.01, aspect=40,
                 label="|correlation| with the learned canonical variate (held-out wells)")
    axb.barh(np.arange(len(scores)), scores["similarity"].clip(lower=0), color="#6a3d9a")
    axb.set_xlabel("similarity (adjusted R², held-out)")
    axb.set_xlim(0, 1)
    fig.suptitle(f"Fig 13 · Interpretable features vs learned features (CCA fitted on {result.n_train} wells, "
                 f"shown on {result.n_test} wells of other plates)", fontsize=9)
    return fig


def canonical_correlations_plot(result: CCAResult, null: CCAResult | None = None) -> plt.Figure:
    """Canonical correlations per component: training wells, held-out wells and, if given, the
    held-out correlations of the null run (embeddings shuffled against the features)."""
    c = result.canonical
    x = np.arange(len(c))
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    ax.bar(x - 0.25, c["r_train"], 0.25, label="training wells", color="#cab2d6")
    ax.bar(x, c["r_held_out"], 0.25, label="held-out plates", color="#6a3d9a")
    if null is not None:
        n = null.canonical["r_held_out"].reindex(range(len(c)))
        ax.bar(x + 0.25, n, 0.25, label="null (shuffled), held-out", color="#bdbdbd")
    ax.set_xticks(x)
    ax.set_xticklabels(c["component"])
    ax.axhline(0, color="#999999", lw=0.8)
    ax.set_ylabel("canonical correlation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def similarity_vs_tie_plot(scores: pd.DataFrame, ties: pd.DataFrame, label_top: int = 6) -> plt.Figure:
    """Each feature's CCA similarity against its tie to the simulator's visible latent state."""
    m = scores.merge(ties, on="feature")
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.scatter(m["tie_to_latent"], m["similarity"], s=14, color="#6a3d9a", alpha=0.8)
    for r in m.sort_values("similarity", ascending=False).head(label_top).itertuples():
        ax.annotate(r.feature.replace("Cells_", "").replace("Nuclei_", "Nuc_"), (r.tie_to_latent, r.similarity),
                    fontsize=5, alpha=0.8)
    ax.set_xlabel("tie to the simulated latent state (R²)")
    ax.set_ylabel("CCA similarity with learned features (adj. R²)")
    ax.set_xlim(-0.02, 1.02)
    fig.tight_layout()
    return fig
