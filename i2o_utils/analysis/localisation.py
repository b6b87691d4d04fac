"""Predictability by subcellular location and pathway (the paper's Figs 4 and 5).

Following the authors' released analysis code:

* a gene's predictability is its r² on the test wells of **split 0** (``r2_from="split0"``;
  ``"median"`` takes the median over splits instead);
* its location is the Human Protein Atlas "Main location" (Reliability "Approved"), several
  locations joined by ``;`` (or the GO-derived stand-in, :mod:`i2o_utils.analysis.annotations`);
* Fig 4 shows r² by location for the 8 largest locations, sorted by mean r². A gene with several
  main locations counts in each (the authors grouped by the whole ``;``-joined string; with the
  GO-derived locations that splits genes into many small combinations);
* Fig 5 is an OLS fit ``r² ~ const + location indicators + pathway indicators (pathways with
  more than 10 of the genes) + min-max scaled mean abundance (train fold)``, by ``statsmodels``;
  the forest plot shows the top and bottom 5 significant (p <= 0.05) pathway terms, the
  significant location terms and the abundance term, with 95% intervals.

The regression's p-values treat genes as independent observations; genes sharing pathways and
regulators are not, so the p-values are *not calibrated* and read as a ranking.

On a simulated screen, :func:`planted_vs_recovered` sets the coefficients fitted to the measured
r² beside the same regression fitted to the simulator's ``r2_expected`` (the planted truth, in r²
units) and the planted propensities of :mod:`i2o_utils.data.planted`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from i2o_utils.analysis.annotations import Annotations, split_locations
from i2o_utils.config import OMICS, STIMULI
from i2o_utils.data.layout import read_truth_genes, truth_path

__all__ = ["ABUNDANCE_TERM", "ALL_LOCATIONS", "Design", "OLSResult", "read_train_means", "predictability_table",
           "location_long", "top_locations", "design_matrix", "fit_ols", "regress_predictability",
           "forest_terms", "planted_vs_recovered", "LocalisationInputs", "load_localisation_inputs",
           "expected_table", "recovery_summary", "TruthCheck", "check_against_truth", "save_localisation",
           "coverage_note"]

ABUNDANCE_TERM = "Mean abundance"
COEF_COLUMNS = ["term", "beta", "ci_low", "ci_high", "pvalue", "significant", "term_type", "n_genes", "omics",
                "stimulus", "n_fit", "model_r2"]
ALL_LOCATIONS: tuple[str, ...] = (
    "Actin filaments", "Cell Junctions", "Centriolar satellite", "Centrosome", "Cytokinetic bridge",
    "Cytosol", "Endoplasmic reticulum", "Golgi apparatus", "Intermediate filaments", "Microtubules",
    "Mitochondria", "Nuclear bodies", "Nuclear membrane", "Nuclear speckles", "Nucleoli",
    "Nucleoli fibrillar center", "Nucleoli rim", "Nucleoplasm", "Plasma membrane", "Vesicles",
)
"""The 20 location terms of the authors' regression (HPA names)."""


def read_train_means(omics: str, stimulus: str, split: int = 0,
                     folder: str | os.PathLike | None = None) -> pd.Series:
    """Train-fold mean of every gene (``var.train_mean`` of one prediction file; only ``var`` is read)."""
    import h5py
    from anndata.io import read_elem

    from i2o_utils.evaluation.predictions import prediction_path

    path = prediction_path(omics, stimulus, split, folder)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no predictions of split {split} for {omics} {stimulus}")
    with h5py.File(path, "r") as f:
        var = read_elem(f["var"])
    if "train_mean" not in var.columns:
        raise ValueError(f"{path}: var has no column 'train_mean'; found {list(var.columns)}")
    s = var["train_mean"].astype(float)
    s.index = s.index.astype(str)
    return s.rename("mean_abundance")


def predictability_table(per_gene: pd.DataFrame, per_split: pd.DataFrame | None, annotations: Annotations,
                         train_means: dict[tuple[str, str], pd.Series], r2_from: str = "split0") -> pd.DataFrame:
    """One row per evaluated gene and (omics, stimulus): r², mean abundance and location.

    Parameters
    ----------
    per_gene, per_split
        Notebook 50's ``per_gene.parquet`` and ``per_split.parquet``.
    train_means
        ``(omics, stimulus) -> gene -> train-fold mean`` (:func:`read_train_means`).
    r2_from
        ``"split0"`` (the authors) or ``"median"`` (median over splits, ``per_gene.r2``).

    Returns
    -------
    pandas.DataFrame
        ``omics, stimulus, gene, symbol, r2, mean_abundance, location`` for genes that passed the
        filter with a finite r²; transcripts are matched to locations by Ensembl id, proteins by
        symbol.
    """
    if r2_from not in ("split0", "median"):
        raise ValueError(f"r2_from must be 'split0' or 'median', got {r2_from!r}")
    need = {"omics", "stimulus", "gene", "symbol", "kept", "r2"}
    missing = need - set(per_gene.columns)
    if missing:
        raise ValueError(f"per-gene table lacks column(s) {sorted(missing)}")
    g = per_gene[per_gene["kept"].astype(bool)][["omics", "stimulus", "gene", "symbol", "r2"]].copy()
    if r2_from == "split0":
        if per_split is None or "split" not in per_split.columns:
            raise ValueError("r2_from='split0' needs the per-split table")
        first = per_split["split"].min()
        s0 = per_split[per_split["split"] == first][["omics", "stimulus", "gene", "r2"]]
        g = g.drop(columns="r2").merge(s0, on=["omics", "stimulus", "gene"], how="inner")
    parts = []
    for (omics, stim), d in g.groupby(["omics", "stimulus"], sort=False):
        tm = train_means.get((omics, stim))
        d = d.assign(mean_abundance=d["gene"].map(tm) if tm is not None else np.nan)
        by_ens = omics == "transcriptomics" and d["gene"].str.startswith("ENSG").any()
        d["location"] = annotations.location_of(d["gene"] if by_ens else d["symbol"].fillna(d["gene"]),
                                                by="ensembl_gene_id" if by_ens else "symbol").to_numpy()
        parts.append(d)
    out = pd.concat(parts, ignore_index=True) if parts else g.assign(mean_abundance=np.nan, location="")
    out["symbol"] = out["symbol"].fillna(out["gene"]).astype(str)
    return out[np.isfinite(out["r2"].astype(float))].reset_index(drop=True)


def location_long(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (gene, location) for genes with a known location ("other" and unknown dropped)."""
    t = table.assign(location=split_locations(table["location"])).explode("location")
    return t[t["location"].notna() & (t["location"] != "other")].reset_index(drop=True)


def top_locations(table: pd.DataFrame, k: int = 8) -> pd.DataFrame:
    """Fig 4's data: per (omics, stimulus), the ``k`` largest locations, ordered by mean r².

    Returns ``omics, stimulus, location, n_genes, mean_r2, median_r2, rank`` (rank 0 = lowest mean).
    """
    long = location_long(table)
    rows = []
    for (omics, stim), d in long.groupby(["omics", "stimulus"], sort=False):
        stats = d.groupby("location")["r2"].agg(n_genes="size", mean_r2="mean", median_r2="median")
        stats = stats.sort_values(["n_genes", "mean_r2"], ascending=False).head(k).sort_values("mean_r2")
        stats["rank"] = np.arange(len(stats))
        rows.append(stats.reset_index().assign(omics=omics, stimulus=stim))
    cols = ["omics", "stimulus", "location", "n_genes", "mean_r2", "median_r2", "rank"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


@dataclass
class Design:
    """The regression's design: ``X`` (genes x terms, sparse, no constant) and its ``terms``
    (``term, term_type, n_genes, duplicate_of``; rows with ``duplicate_of`` set are not in ``X``)."""

    X: sparse.csc_matrix
    terms: pd.DataFrame

    @property
    def columns(self) -> list[str]:
        return self.terms.loc[self.terms["duplicate_of"] == "", "term"].tolist()

    def to_frame(self) -> pd.DataFrame:
        """``X`` as a dense DataFrame (small designs only)."""
        return pd.DataFrame(self.X.toarray(), columns=self.columns)


def design_matrix(table: pd.DataFrame, gene_sets: pd.DataFrame, locations: tuple[str, ...] = ALL_LOCATIONS,
                  min_pathway_size: int = 10) -> Design:
    """The regression's design for one (omics, stimulus) (constant not included).

    Columns: one indicator per location of ``locations`` (a gene may have several), one per gene
    set with more than ``min_pathway_size`` members among the genes (matched by symbol), and
    ``Mean abundance`` (min-max scaled to [0, 1]). Columns that are all zero are dropped; a set
    whose indicator equals an earlier column is dropped as a duplicate (no fit can tell them
    apart) and listed with ``duplicate_of``. The matrix is sparse: at the paper's scale it has
    26,317 rows and about 1,500 columns.
    """
    n = len(table)
    locs = split_locations(table["location"]).to_numpy()
    blocks, meta = [], []
    seen: dict[bytes, str] = {}
    for loc in locations:
        rows = np.flatnonzero(np.fromiter((loc in l for l in locs), bool, n))
        if len(rows):
            blocks.append(rows)
            seen[rows.tobytes()] = loc
            meta.append((loc, "location", len(rows), ""))
    pos = pd.Series(np.arange(n), index=pd.Index(table["symbol"].astype(str)))
    pos = pos[~pos.index.duplicated()]
    long = gene_sets[["name", "members"]].explode("members")
    long = long[long["members"].isin(pos.index)]
    long = long.assign(row=pos.reindex(long["members"]).to_numpy())
    names = set(meta_name for meta_name, *_ in meta)
    for name, rows in long.groupby("name", sort=False)["row"]:
        rows = np.unique(rows.to_numpy(np.int64))
        if len(rows) <= min_pathway_size:
            continue
        key = rows.tobytes()
        if key in seen:
            meta.append((name, "pathway", len(rows), seen[key]))
            continue
        if name in names:
            name = f"{name} (pathway)"
        names.add(name)
        seen[key] = name
        blocks.append(rows)
        meta.append((name, "pathway", len(rows), ""))
    indptr = np.concatenate([[0], np.cumsum([len(b) for b in blocks])]).astype(np.int64)
    indices = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
    X = sparse.csc_matrix((np.ones(len(indices)), indices, indptr), shape=(n, len(blocks)))
    ab = table["mean_abundance"].to_numpy(float)
    if np.isfinite(ab).any():
        lo, hi = np.nanmin(ab), np.nanmax(ab)
        col = (ab - lo) / (hi - lo) if hi > lo else np.zeros(n)
        X = sparse.hstack([X, sparse.csc_matrix(col.reshape(-1, 1))], format="csc")
        meta.append((ABUNDANCE_TERM, "abundance", n, ""))
    terms = pd.DataFrame(meta, columns=["term", "term_type", "n_genes", "duplicate_of"])
    return Design(X, terms)


@dataclass
class OLSResult:
    """Coefficients of one fit: ``term, term_type, n_genes, beta, ci_low, ci_high, pvalue, significant``."""

    coefs: pd.DataFrame
    n_genes: int
    r2: float
    df_resid: float


def fit_ols(design: Design, y: np.ndarray, alpha: float = 0.05, method: str = "gram") -> OLSResult:
    """OLS of ``y`` on a constant and the design; 95% intervals (``alpha``) and two-sided p-values.

    ``method="statsmodels"`` fits ``statsmodels.api.OLS`` on the dense design (the reference;
    minutes at the paper's scale, measured 268 s for 26,317 genes x 1,552 terms). ``method="gram"``
    (default) computes the same estimator from the sparse design's Gram matrix ``X'X``: ``beta =
    (X'X)^-1 X'y`` by Cholesky, or ``pinv(X'X) X'y`` (the minimum-norm least-squares solution, as
    statsmodels' default ``pinv`` fit) when terms are collinear, residual variance ``RSS / (n - rank)``,
    covariance ``s² pinv(X'X)``, Student-t intervals and p-values with ``n - rank`` degrees of
    freedom (Greene, *Econometric Analysis*, ch. 4); the tests check it against statsmodels.
    Rows with a non-finite ``y`` or design value are left out.
    """
    from scipy import linalg, stats

    y = np.asarray(y, np.float64)
    X = design.X.tocsr()
    finite_x = np.isfinite(X.data)
    bad_rows = np.unique(X.nonzero()[0][~finite_x]) if not finite_x.all() else np.zeros(0, int)
    ok = np.isfinite(y)
    ok[bad_rows] = False
    X, y = X[ok], y[ok]
    n = len(y)
    Xc = sparse.hstack([sparse.csr_matrix(np.ones((n, 1))), X], format="csr")
    names = ["const"] + design.columns
    if method == "statsmodels":
        import statsmodels.api as sm

        res = sm.OLS(y, Xc.toarray()).fit()
        ci = res.conf_int(alpha)
        beta, lo, hi, p = res.params, ci[:, 0], ci[:, 1], res.pvalues
        r2, df_resid = float(res.rsquared), float(res.df_resid)
    elif method == "gram":
        G = (Xc.T @ Xc).toarray()
        try:  # full rank (the usual case once duplicate columns are gone): Cholesky, fast
            c, low = linalg.cho_factor(G, lower=True, check_finite=False)
            d = np.abs(np.diag(c))
            if d.min() ** 2 < 1e-10 * d.max() ** 2:
                raise linalg.LinAlgError("nearly singular")
            Ginv, rank = linalg.cho_solve((c, low), np.eye(len(G)), check_finite=False), len(G)
        except linalg.LinAlgError:  # collinear terms: the pseudo-inverse, as statsmodels' pinv
            Ginv, rank = linalg.pinvh(G, return_rank=True)
        beta = Ginv @ (Xc.T @ y)
        resid = y - Xc @ beta
        df_resid = float(n - rank)
        s2 = float(resid @ resid) / df_resid if df_resid > 0 else np.nan  # no residual degrees of freedom
        se = np.sqrt(np.maximum(np.diag(Ginv), 0) * s2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = beta / se
        p = 2 * stats.t.sf(np.abs(t), df_resid)
        q = stats.t.ppf(1 - alpha / 2, df_resid)
        lo, hi = beta - q * se, beta + q * se
        tss = float(((y - y.mean()) ** 2).sum())
        r2 = 1 - float(resid @ resid) / tss if tss > 0 else np.nan
    else:
        raise ValueError(f"method must be 'gram' or 'statsmodels', got {method!r}")
    coefs = pd.DataFrame({"term": names, "beta": beta, "ci_low": lo, "ci_high": hi, "pvalue": p})
    coefs["significant"] = coefs["pvalue"] <= alpha
    kept = design.terms[design.terms["duplicate_of"] == ""][["term", "term_type", "n_genes"]]
    coefs = coefs.merge(kept, on="term", how="left")
    coefs.loc[coefs["term"] == "const", "term_type"] = "constant"
    return OLSResult(coefs, n, r2, df_resid)


def regress_predictability(table: pd.DataFrame, gene_sets: pd.DataFrame, y: str = "r2",
                           min_pathway_size: int = 10, method: str = "gram") -> pd.DataFrame:
    """:func:`fit_ols` of ``y`` for every (omics, stimulus) of ``table``, concatenated
    (columns ``omics, stimulus`` added, plus ``n_fit`` and ``model_r2``)."""
    out = []
    for (omics, stim), d in table.groupby(["omics", "stimulus"], sort=False):
        if len(d) < 3:
            continue
        res = fit_ols(design_matrix(d, gene_sets, min_pathway_size=min_pathway_size), d[y].to_numpy(),
                      method=method)
        out.append(res.coefs.assign(omics=omics, stimulus=stim, n_fit=res.n_genes, model_r2=res.r2))
    if not out:
        return pd.DataFrame(columns=COEF_COLUMNS)
    df = pd.concat(out, ignore_index=True)
    order = {k: i for i, k in enumerate((o, s) for o in OMICS for s in STIMULI)}
    df["_o"] = [order.get(k, 99) for k in zip(df["omics"], df["stimulus"])]
    return df.sort_values("_o", kind="mergesort").drop(columns="_o").reset_index(drop=True)


def forest_terms(coefs: pd.DataFrame, n_top: int = 5) -> pd.DataFrame:
    """Fig 5's rows for one (omics, stimulus): the top and bottom ``n_top`` significant pathway
    terms (by beta), the significant location terms, and the abundance term (always), in that
    order, with a ``section`` column."""
    sig = coefs[coefs["significant"]]
    pw = sig[sig["term_type"] == "pathway"].sort_values("beta", ascending=False)
    pw = pd.concat([pw.head(n_top), pw.tail(n_top)]).drop_duplicates("term")
    loc = sig[sig["term_type"] == "location"].sort_values("beta", ascending=False)
    ab = coefs[coefs["term_type"] == "abundance"]
    return pd.concat([pw.assign(section="pathway"), loc.assign(section="location"),
                      ab.assign(section="abundance")], ignore_index=True)


def planted_vs_recovered(measured: pd.DataFrame, expected: pd.DataFrame, planted: pd.DataFrame) -> pd.DataFrame:
    """Planted effects beside the recovered ones, per (omics, stimulus) and planted term.

    Parameters
    ----------
    measured
        :func:`regress_predictability` of the measured r².
    expected
        The same regression of the simulator's ``r2_expected`` (the planted effect in r² units).
    planted
        ``simulation/truth_annotation_effects.csv``: ``term_type, term, propensity``.

    Returns
    -------
    pandas.DataFrame
        ``omics, stimulus, term_type, term, propensity, beta_planted, beta_recovered, ci_low,
        ci_high, pvalue, covered`` (the planted beta inside the recovered 95% interval),
        ``same_sign``; a planted term absent from the design (too few genes) has NaN betas.
    """
    keys = ["omics", "stimulus", "term"]
    e = expected[keys + ["beta"]].rename(columns={"beta": "beta_planted"})
    m = measured[keys + ["beta", "ci_low", "ci_high", "pvalue"]].rename(columns={"beta": "beta_recovered"})
    rows = []
    for (omics, stim) in measured[["omics", "stimulus"]].drop_duplicates().itertuples(index=False):
        rows.append(planted[["term_type", "term", "propensity"]].assign(omics=omics, stimulus=stim))
    if not rows:
        return pd.DataFrame(columns=["omics", "stimulus", "term_type", "term", "propensity", "beta_planted",
                                     "beta_recovered", "ci_low", "ci_high", "pvalue", "covered", "same_sign"])
    out = pd.concat(rows, ignore_index=True).merge(e, on=keys, how="left").merge(m, on=keys, how="left")
    out["covered"] = (out["ci_low"] <= out["beta_planted"]) & (out["beta_planted"] <= out["ci_high"])
    out["same_sign"] = np.sign(out["beta_planted"]) == np.sign(out["beta_recovered"])
    return out[["omics", "stimulus", "term_type", "term", "propensity", "beta_planted", "beta_recovered",
                "ci_low", "ci_high", "pvalue", "covered", "same_sign"]]


# --------------------------------------------------------------------------------------------
# notebook 60 in a few calls
# --------------------------------------------------------------------------------------------
@dataclass
class LocalisationInputs:
    """What notebook 60 reads: notebook 50's per-gene and per-split tables, the train-fold means of
    split 0, the annotations and, on a simulated screen, the truth."""

    per_gene: pd.DataFrame
    per_split: pd.DataFrame | None
    train_means: dict[tuple[str, str], pd.Series]
    annotations: Annotations
    truth_genes: pd.DataFrame | None
    planted: pd.DataFrame | None
    notes: list[str]


def load_localisation_inputs(results_root: str | os.PathLike | None = None,
                             data_root: str | os.PathLike | None = None,
                             source: str = "auto") -> LocalisationInputs:
    """Read notebook 50's results (``50_evaluate/per_gene.parquet``, ``per_split.parquet``), the
    train-fold means of split 0 (notebook 40's predictions), the annotations
    (:func:`~i2o_utils.analysis.annotations.load_annotations`) and the simulator's truth if any."""
    from i2o_utils.analysis.annotations import load_annotations
    from i2o_utils.evaluation.predictions import predictions_dir
    from i2o_utils.paths import bucket_paths, results_dir

    ev_dir = Path(results_root) / "50_evaluate" if results_root is not None else results_dir("50_evaluate")
    pg_path = ev_dir / "per_gene.parquet"
    if not pg_path.exists():
        raise FileNotFoundError(f"{pg_path}: run notebook 50 first (it writes the per-gene results)")
    per_gene = pd.read_parquet(pg_path)
    ps_path = ev_dir / "per_split.parquet"
    per_split = pd.read_parquet(ps_path, columns=["omics", "stimulus", "split", "gene", "r2"]) \
        if ps_path.exists() else None
    notes = []
    folder = predictions_dir(results_root)
    train_means = {}
    for omics, stim in per_gene[["omics", "stimulus"]].drop_duplicates().itertuples(index=False):
        first = int(per_split.loc[(per_split["omics"] == omics) & (per_split["stimulus"] == stim), "split"].min()) \
            if per_split is not None else 0
        try:
            train_means[(omics, stim)] = read_train_means(omics, stim, first, folder)
        except FileNotFoundError as e:
            notes.append(f"{omics} {stim}: no train-fold means ({e}); the abundance term is left out")
    bp = bucket_paths(Path(data_root) if data_root is not None else None)
    planted = None
    truth = read_truth_genes(truth_path(bp["root"]))
    if truth is not None:
        f = bp["simulation"] / "truth_annotation_effects.csv"
        planted = pd.read_csv(f) if f.exists() else None
        if planted is None:
            notes.append(f"{f}: absent (a screen simulated before planted effects existed)")
    return LocalisationInputs(per_gene, per_split, train_means,
                              load_annotations(data_root, source=source), truth, planted, notes)


def expected_table(table: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``r2`` replaced by the simulator's ``r2_expected_<stimulus>`` of each gene
    (the r² a perfect image model would reach): the planted truth in r² units."""
    if table.empty:
        return table.copy()
    parts = []
    for (omics, stim), d in table.groupby(["omics", "stimulus"], sort=False):
        col = f"r2_expected_{stim}"
        t = truth[truth["omics"] == omics].set_index("gene")
        if col not in t.columns:
            raise ValueError(f"the truth table has no column {col!r}")
        parts.append(d.assign(r2=d["gene"].map(t[col]).to_numpy(float)))
    return pd.concat(parts, ignore_index=True)


def recovery_summary(comparison: pd.DataFrame, measured: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """Per (omics, stimulus): how well the measured regression recovers the planted one.

    ``planted_terms`` (in the design), ``same_sign`` and ``covered`` among them, and over every
    location term the Pearson correlation of recovered with planted betas (``r_locations``).
    """
    rows = []
    for (omics, stim), c in comparison.groupby(["omics", "stimulus"], sort=False):
        c = c[c["beta_planted"].notna() & c["beta_recovered"].notna()]
        m = measured[(measured["omics"] == omics) & (measured["stimulus"] == stim) & (measured["term_type"] == "location")]
        e = expected[(expected["omics"] == omics) & (expected["stimulus"] == stim)]
        j = m.merge(e[["term", "beta"]], on="term", suffixes=("", "_planted"))
        r = float(np.corrcoef(j["beta"], j["beta_planted"])[0, 1]) if len(j) > 2 else np.nan
        rows.append({"omics": omics, "stimulus": stim, "planted terms in design": len(c),
                     "same sign": int(c["same_sign"].sum()), "planted beta inside 95% CI": int(c["covered"].sum()),
                     "r (location betas, recovered vs planted)": r})
    return pd.DataFrame(rows)


@dataclass
class TruthCheck:
    """The regression on a simulated screen's truth beside the measured one."""

    expected: pd.DataFrame
    comparison: pd.DataFrame
    summary: pd.DataFrame


def check_against_truth(inputs: LocalisationInputs, table: pd.DataFrame, measured: pd.DataFrame,
                        min_pathway_size: int = 10) -> TruthCheck | None:
    """On a simulated screen: the same regression fitted to the simulator's expected r²
    (:func:`expected_table`), :func:`planted_vs_recovered` and :func:`recovery_summary`.
    ``None`` on real data (no truth table) or a screen without planted effects."""
    if inputs.truth_genes is None or inputs.planted is None:
        return None
    expected = regress_predictability(expected_table(table, inputs.truth_genes), inputs.annotations.gene_sets,
                                      min_pathway_size=min_pathway_size)
    comparison = planted_vs_recovered(measured, expected, inputs.planted)
    return TruthCheck(expected, comparison, recovery_summary(comparison, measured, expected))


def save_localisation(out_dir: str | os.PathLike, *, table: pd.DataFrame, top_locations: pd.DataFrame,
                      coefficients: pd.DataFrame, truth_check: TruthCheck | None = None) -> list[Path]:
    """Write notebook 60's tables atomically: ``per_gene_annotated.parquet``, ``fig4_top_locations.csv``,
    ``ols_coefficients.csv`` and, with a truth check, ``ols_coefficients_planted.csv``,
    ``planted_vs_recovered.csv`` and ``truth_recovery.csv``."""
    from i2o_utils.data import layout

    out_dir = Path(out_dir)
    written = []
    with layout.atomic_path(out_dir / "per_gene_annotated.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    written.append(out_dir / "per_gene_annotated.parquet")
    written.append(layout.write_csv_atomic(top_locations, out_dir / "fig4_top_locations.csv"))
    written.append(layout.write_csv_atomic(coefficients, out_dir / "ols_coefficients.csv"))
    if truth_check is not None:
        written.append(layout.write_csv_atomic(truth_check.expected, out_dir / "ols_coefficients_planted.csv"))
        written.append(layout.write_csv_atomic(truth_check.comparison, out_dir / "planted_vs_recovered.csv"))
        written.append(layout.write_csv_atomic(truth_check.summary, out_dir / "truth_recovery.csv"))
    return written


def coverage_note(table: pd.DataFrame, per_gene: pd.DataFrame) -> str:
    """A sentence for the notebook: how many evaluated genes entered the analysis, and why none did."""
    if not table.empty:
        located = (table["location"].ne("") & table["location"].ne("other")).sum()
        return (f"{len(table):,} gene-stimulus rows with a defined r² enter the analysis; "
                f"{located:,} of them have a known location.")
    kept = int(per_gene["kept"].astype(bool).sum()) if "kept" in per_gene else 0
    return (f"**No gene has a defined r² in this run** ({kept:,} gene-stimulus rows passed the filter, but r² "
            "is undefined for all of them, e.g. because the predictions are constant over the test wells of a "
            "tiny profile). The figures below are empty: this profile checks that the notebook runs, not what "
            "it finds.")
