"""Planted dependence of predictability on location and pathway in the simulated screen.

The paper reports that predictability differs by subcellular location (plasma membrane and
vesicles above, cytosol below; Fig 4) and by pathway membership (Fig 5). The simulator plants
such effects with a known size, so the analyses of notebook 60 can be checked against them.

Mechanism: :func:`i2o_utils.data.simulate.gene_programme` draws each gene's programme (kind,
strength, loadings) independently of its identity. Its rows are exchangeable, so re-assigning
them to genes changes nothing but which genes get which programme. :func:`plant_annotation_effects`
gives every gene a *propensity*, the sum of the planted effects of its locations and gene sets,
adds standard Gumbel noise, and hands the ``visible`` programmes (strongest first) to the genes
with the highest scores; the other programmes go to the remaining genes in random order. Genes
of a location with a positive effect are therefore more often, and more strongly, driven by the
visible cell state. The size of each effect in r² units follows from the truth table: regress the
simulator's ``r2_expected`` on the same design as the measured r² (notebook 60 does).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LOCATION_EFFECTS: dict[str, float] = {
    "Plasma membrane": 1.5,
    "Vesicles": 1.2,
    "Cytosol": -1.0,
    "Nucleoplasm": -0.6,
}
"""Planted propensity of each location (others 0), in the direction the paper reports."""

PATHWAY_EFFECT = 1.5
N_PATHWAYS_EACH_WAY = 2
MIN_PATHWAY_GENES = 20
"""Pathways get a planted effect only if this many of the screen's genes are members."""


def membership(genes: pd.Series, gene_sets: pd.DataFrame) -> dict[str, np.ndarray]:
    """Boolean membership of each gene (symbols) in each set (``name -> array``)."""
    pos = {g: i for i, g in enumerate(genes)}
    out = {}
    for name, members in zip(gene_sets["name"], gene_sets["members"]):
        m = np.zeros(len(genes), bool)
        m[[pos[g] for g in members if g in pos]] = True
        out[name] = m
    return out


def planted_terms(genes: pd.DataFrame, gene_sets: pd.DataFrame, rng: np.random.Generator,
                  null: bool = False) -> pd.DataFrame:
    """The planted effects of one screen: ``term_type, term, propensity, n_genes``.

    Locations: :data:`LOCATION_EFFECTS`. Pathways: :data:`N_PATHWAYS_EACH_WAY` sets raised and as
    many lowered by :data:`PATHWAY_EFFECT`, drawn at random among the sets with at least
    :data:`MIN_PATHWAY_GENES` of the screen's genes (none if no set is that large).
    """
    locs = genes["location"].fillna("").str.split(";")
    rows = [("location", loc, eff, int(sum(loc in l for l in locs))) for loc, eff in LOCATION_EFFECTS.items()]
    mem = membership(genes["symbol"], gene_sets)
    big = sorted(n for n, m in mem.items() if m.sum() >= MIN_PATHWAY_GENES)
    k = min(2 * N_PATHWAYS_EACH_WAY, len(big))
    picked = [big[i] for i in rng.choice(len(big), size=k, replace=False)] if k else []
    # raised and lowered in turn
    rows += [("pathway", name, PATHWAY_EFFECT * (-1) ** j, int(mem[name].sum())) for j, name in enumerate(picked)]
    return pd.DataFrame(rows, columns=["term_type", "term", "propensity", "n_genes"])


def gene_propensity(genes: pd.DataFrame, terms: pd.DataFrame, gene_sets: pd.DataFrame) -> np.ndarray:
    """Sum of the planted effects of each gene's locations and gene sets."""
    p = np.zeros(len(genes))
    locs = genes["location"].fillna("").str.split(";")
    for r in terms[terms["term_type"] == "location"].itertuples(index=False):
        p += np.array([r.term in l for l in locs]) * r.propensity
    pw = terms[terms["term_type"] == "pathway"]
    mem = membership(genes["symbol"], gene_sets[gene_sets["name"].isin(set(pw["term"]))])
    for r in pw.itertuples(index=False):
        p += mem[r.term] * r.propensity
    return p


def plant_annotation_effects(prog: pd.DataFrame, propensity: np.ndarray,
                             rng: np.random.Generator) -> pd.DataFrame:
    """Re-assign the rows of a gene programme so that high-propensity genes get the visible ones.

    Parameters
    ----------
    prog
        :func:`~i2o_utils.data.simulate.gene_programme` output, one row per gene.
    propensity
        Per-gene planted score (:func:`gene_propensity`); all zeros leaves the assignment random.

    Returns
    -------
    pandas.DataFrame
        ``prog`` with its rows permuted (index reset); the multiset of rows is unchanged.
    """
    n = len(prog)
    if len(propensity) != n:
        raise ValueError(f"propensity has {len(propensity)} values for {n} genes")
    score = np.asarray(propensity, float) + rng.gumbel(size=n)
    genes_by_score = np.argsort(-score, kind="stable")
    vis = np.flatnonzero(prog["kind"].to_numpy() == "visible")
    vis = vis[np.argsort(-prog["strength"].to_numpy()[vis], kind="stable")]
    others = rng.permutation(np.flatnonzero(prog["kind"].to_numpy() != "visible"))
    assign = np.empty(n, np.int64)
    assign[genes_by_score] = np.concatenate([vis, others])
    return prog.iloc[assign].reset_index(drop=True)
