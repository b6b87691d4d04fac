"""From per-split predictions to per-gene results and the paper's fractions (DESIGN.md section 7).

Per split and gene: r², SMAPE, the mean predictor's SMAPE and the one-sided test against the
mean predictor (:func:`evaluate_split`). Over the splits, per gene (:func:`summarise_genes`):

* r², SMAPE: median over splits, and the 2.5% / 97.5% quantiles as the 95% interval;
* significant when the **median p over the splits is < alpha** (the paper's rule, for its two
  tests); for the perturbation-level test, when the p-value of the **pooled test** over the
  splits' out-of-fold perturbation means is < alpha
  (:func:`~i2o_utils.evaluation.perturbation.pooled_perturbation_test`; twice the median of the
  split p-values, always valid but less powerful, is reported beside it as ``p_twice_median``);
  the paper's interval of the fraction counts the genes whose 97.5% quantile of p is < alpha (lower end) and whose 2.5%
  quantile of p is < alpha (upper end);
* beyond the paper, Benjamini–Hochberg q-values of the gene's p-value (``p_gene``: the median
  under the paper's rule, the pooled test's p-value for the perturbation-level test) over the tested genes;
  counts at 5% FDR are reported beside the raw ones;
* beyond the paper, the out-of-sample R² against the mean predictor on the perturbation means
  (``r2_oos``), median and interval over splits.

Denominators are every gene measured (the rows of ``genes_{omics}_{stimulus}.csv``): genes the
expression filter removed count as "filtered (low/no expression)"; kept genes without any
usable p-value count as "not evaluated" (never significant); both stay in the denominator.
A split in which a gene has no p-value (missing from that file, no usable wells) counts as
p = 1 for that gene's median and quantiles, and is reported in the gene's ``flags``.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from i2o_utils.evaluation.metrics import is_constant, r2, smape_per_well
from i2o_utils.evaluation.perturbation import (
    PERTURBATION_TEST,
    combine_splits,
    group_indicator,
    group_means,
    kendall_greater,
    oos_r2,
    pooled_perturbation_test,
)
from i2o_utils.evaluation.predictions import SplitPredictions
from i2o_utils.evaluation.significance import (
    TEST_LABELS,
    benjamini_hochberg,
    check_test,
    min_attainable_pvalue,
    test_smapes,
)

__all__ = [
    "CATEGORIES",
    "PAPER_RESULTS",
    "paper_fraction",
    "row_nanquantile",
    "evaluate_split",
    "evaluate_splits",
    "summarise_genes",
    "evaluate_predictions",
    "predictability_fractions",
    "headline_table",
    "null_by_shuffling",
    "evidence_statement",
]

CATEGORIES = ("significant", "not significant", "not evaluated", "filtered (low/no expression)")
"""Per-gene outcome; the first, second and fourth are the bars of the paper's Fig 3."""

PAPER_RESULTS = {
    ("transcriptomics", "m1"): {"n_significant": 4927, "n_genes": 26_317, "pct": 18.72,
                                "pct_lo": 6.52, "pct_hi": 35.52},
    ("transcriptomics", "m2"): {"n_significant": 3521, "n_genes": 26_317, "pct": 13.38,
                                "pct_lo": 4.10, "pct_hi": 32.21},
    ("proteomics", "m1"): {"n_significant": 422, "n_genes": 4_986, "pct": 8.46,
                           "pct_lo": 0.58, "pct_hi": 25.83},
    ("proteomics", "m2"): {"n_significant": 697, "n_genes": 4_986, "pct": 13.98,
                           "pct_lo": 2.41, "pct_hi": 32.83},
}
"""The paper's fractions (abstract, Results, Fig 3). Transcript denominator 26,317: the
abstract's 26,137 is a typo (4927 / 26317 = 18.72%)."""


def paper_fraction(omics: str, stimulus: str) -> float:
    """The paper's percentage recomputed from its counts (e.g. 100 * 4927 / 26317)."""
    r = PAPER_RESULTS[(omics, stimulus)]
    return 100.0 * r["n_significant"] / r["n_genes"]


# --------------------------------------------------------------------------------------------
# one split
# --------------------------------------------------------------------------------------------
def _flag(flags: np.ndarray, cond: np.ndarray, text) -> np.ndarray:
    text = np.asarray(text, dtype=object)
    add = np.where(flags == "", text, flags + "; " + text)
    return np.where(cond, add, flags)


def _evaluate_chunk(yt: np.ndarray, yp: np.ndarray, tm: np.ndarray, test: str,
                    indicator: np.ndarray | None = None) -> dict:
    """Metrics and test for a block of genes in gene-major layout: (genes, wells).

    ``indicator`` (wells, perturbations) groups the wells by perturbation for the out-of-sample
    R² and the perturbation-level test.
    """
    tm_ok = np.isfinite(tm)
    usable = np.isfinite(yt) & np.isfinite(yp) & tm_ok[:, None]
    if not usable.all():
        yt = np.where(usable, yt, np.nan)
        yp = np.where(usable, yp, np.nan)
    model = smape_per_well(yt, yp)
    mean = smape_per_well(yt, tm[:, None])
    n_used = usable.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        smape_model = np.where(n_used > 0, np.nansum(model, axis=1) / n_used, np.nan)
        smape_mean = np.where(n_used > 0, np.nansum(mean, axis=1) / n_used, np.nan)
    if indicator is None:
        indicator = np.eye(yt.shape[1])
    pm_true = group_means(yt, indicator, usable)
    pm_pred = group_means(yp, indicator, usable)
    if test == PERTURBATION_TEST:
        p, stat, method, _ = kendall_greater(pm_pred, pm_true)
    else:
        p, stat, method, _ = test_smapes(model, mean, test)
    return {"n_wells": n_used, "n_perturbations": np.isfinite(pm_true).sum(axis=1),
            "r2": r2(yt, yp, axis=1), "r2_oos": oos_r2(pm_true, pm_pred, tm),
            "smape": smape_model,
            "smape_mean_predictor": smape_mean, "pvalue": p, "statistic": stat, "method": method,
            "tm_ok": tm_ok, "const_measured": (n_used > 1) & is_constant(yt, usable, axis=1),
            "const_predicted": (n_used > 1) & is_constant(yp, usable, axis=1)}


def evaluate_split(split: SplitPredictions, test: str = "mannwhitney", *, chunk_size: int = 2048,
                   n_jobs: int = 1, progress: bool = False) -> pd.DataFrame:
    """Per-gene metrics and test of one split's test wells.

    Genes are processed in blocks of ``chunk_size`` (gene-major copies, so each block is
    cache-friendly), on ``n_jobs`` threads.

    Returns
    -------
    pandas.DataFrame
        One row per gene: ``omics, stimulus, split, gene, n_test_wells`` (wells in the file's
        test fold), ``n_test_perturbations`` (distinct targets among them), ``n_wells`` (wells
        used: measured, predicted and train mean finite), ``n_perturbations`` (perturbations
        with a usable well), ``r2`` (well level, the paper's), ``r2_oos`` (out-of-sample R²
        against the train-fold mean on the perturbation means), ``smape, smape_mean_predictor,
        pvalue, statistic`` (U, T+ or Kendall's tau), ``method, test, flags``.
    """
    test = check_test(test)
    yt_t, yp_t = split.measured.T, split.predicted.T
    tm = np.asarray(split.train_mean, dtype=np.float64)
    starts = list(range(0, split.n_genes, max(1, int(chunk_size))))
    if "target" in split.wells:
        _, indicator = group_indicator(split.wells["target"])
    elif test == PERTURBATION_TEST:
        raise ValueError(f"{split.path or 'split'}: the perturbation-level test needs the wells' "
                         "'target' column")
    else:
        indicator = None

    def run(start: int) -> dict:
        sl = slice(start, start + chunk_size)
        return _evaluate_chunk(np.ascontiguousarray(yt_t[sl], dtype=np.float64),
                               np.ascontiguousarray(yp_t[sl], dtype=np.float64), tm[sl], test,
                               indicator)

    it = starts
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(starts, desc=f"split {split.split}: gene blocks", leave=False)
    if n_jobs > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            parts = list(pool.map(run, it))
    else:
        parts = [run(s) for s in it]
    if parts:
        res = {k: np.concatenate([d[k] for d in parts]) for k in parts[0]}
    else:
        res = {k: np.zeros(0) for k in ("n_wells", "n_perturbations", "r2", "r2_oos", "smape",
                                        "smape_mean_predictor", "pvalue",
                                        "statistic", "method", "tm_ok", "const_measured", "const_predicted")}
    n_used = res["n_wells"].astype(np.int64)
    tm_ok = res["tm_ok"].astype(bool)
    flags = np.full(split.n_genes, "", dtype=object)
    flags = _flag(flags, ~tm_ok, "no train mean")
    n_missing = split.n_wells - n_used
    flags = _flag(flags, tm_ok & (n_missing > 0) & (n_used > 0),
                  np.char.add(n_missing.astype(str), " test well(s) without a finite value"))
    flags = _flag(flags, n_used == 0, "no usable test well")
    flags = _flag(flags, res["const_measured"].astype(bool), "constant measured (r² undefined)")
    flags = _flag(flags, res["const_predicted"].astype(bool), "constant predicted (r² undefined)")
    n_pert = int(split.wells["target"].nunique()) if "target" in split.wells else -1
    return pd.DataFrame({
        "omics": split.omics, "stimulus": split.stimulus, "split": split.split,
        "gene": np.asarray(split.genes, dtype=object), "n_test_wells": split.n_wells,
        "n_test_perturbations": n_pert, "n_wells": n_used,
        "n_perturbations": res["n_perturbations"].astype(np.int64), "r2": res["r2"],
        "r2_oos": res["r2_oos"], "smape": res["smape"],
        "smape_mean_predictor": res["smape_mean_predictor"], "pvalue": res["pvalue"],
        "statistic": res["statistic"], "method": res["method"], "test": test, "flags": flags,
    })


def evaluate_splits(splits: Iterable[SplitPredictions], test: str = "mannwhitney", *,
                    chunk_size: int = 2048, n_jobs: int = 1, progress: bool = True) -> pd.DataFrame:
    """:func:`evaluate_split` over splits, concatenated (progress bar over splits)."""
    splits = list(splits)
    it = splits
    # a bar only where it helps: many splits of a large gene set
    if progress and len(splits) > 1 and sum(s.n_genes * s.n_wells for s in splits) > 5_000_000:
        from tqdm.auto import tqdm

        it = tqdm(splits, desc="splits", leave=False)
    parts = [evaluate_split(s, test, chunk_size=chunk_size, n_jobs=n_jobs) for s in it]
    if not parts:
        raise ValueError("no split to evaluate")
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------
# over splits
# --------------------------------------------------------------------------------------------
def pooled_pvalues(splits: Sequence[SplitPredictions]) -> pd.Series:
    """gene -> p-value of :func:`~i2o_utils.evaluation.perturbation.pooled_perturbation_test`."""
    genes, p, _, _ = pooled_perturbation_test(splits)
    return pd.Series(p, index=genes, name="p_pooled")


def row_nanquantile(a: np.ndarray, q: float) -> np.ndarray:
    """``np.nanquantile(a, q, axis=1)`` (linear interpolation) without its per-row Python loop.

    Rows without a finite value give NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.shape[1] == 0:
        return np.full(a.shape[0], np.nan)
    s = np.sort(np.where(np.isfinite(a), a, np.nan), axis=1)  # NaN sorts last
    n = np.isfinite(s).sum(axis=1)
    h = (np.maximum(n, 1) - 1) * float(q)
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    v_lo = np.take_along_axis(s, lo[:, None], axis=1)[:, 0]
    v_hi = np.take_along_axis(s, hi[:, None], axis=1)[:, 0]
    frac = h - lo
    # numpy's form of the linear interpolation (exact when v_lo == v_hi)
    out = np.where(frac >= 0.5, v_hi - (v_hi - v_lo) * (1 - frac), v_lo + (v_hi - v_lo) * frac)
    return np.where(n > 0, out, np.nan)


def _quantiles(a: np.ndarray, qs: Sequence[float]) -> list[np.ndarray]:
    return [row_nanquantile(a, q) for q in qs]


def summarise_genes(per_split: pd.DataFrame, gene_table: pd.DataFrame | None = None, *,
                    alpha: float = 0.05, fdr: float = 0.05,
                    symbols: pd.Series | None = None, pooled: pd.Series | None = None) -> pd.DataFrame:
    """Aggregate one (omics, stimulus) over splits into the per-gene results table.

    Parameters
    ----------
    per_split
        Output of :func:`evaluate_splits` for one (omics, stimulus).
    gene_table
        ``gene, kept, reason`` of every gene measured (the denominators); ``None``: the genes
        of the predictions, all counted as kept. Predicted genes absent from the table are
        added (flagged ``not in gene table``); kept genes absent from the predictions stay
        (category ``not evaluated``, flagged ``not predicted``).
    alpha
        Significance level for the median p over splits (paper: 0.05).
    fdr
        Benjamini–Hochberg level for ``significant_bh``.
    symbols
        Optional gene -> symbol map for the tables.
    pooled
        For the perturbation-level test: gene -> p-value of the pooled test over splits
        (:func:`~i2o_utils.evaluation.perturbation.pooled_perturbation_test`), used as the gene's
        p-value; without it, twice the median of the split p-values (valid, less powerful).

    Returns
    -------
    pandas.DataFrame
        One row per gene: ``omics, stimulus, gene, symbol, kept, reason, category,
        significant, significant_bh, r2, r2_lo, r2_hi, smape, smape_lo, smape_hi,
        smape_mean_predictor(_lo, _hi), r2_oos(_lo, _hi), p_median, p_q025, p_q975, q, p_gene
        (the p-value BH is applied to), n_splits,
        n_splits_tested, n_test_wells (median over splits), n_test_wells_min, test, alpha,
        flags``.
    """
    if per_split.empty:
        raise ValueError("per_split is empty")
    keys = per_split[["omics", "stimulus", "test"]].drop_duplicates()
    if len(keys) != 1:
        raise ValueError(f"summarise_genes takes one (omics, stimulus, test); got {len(keys)}: "
                         f"{keys.to_dict('records')}")
    omics, stimulus, test = keys.iloc[0]
    splits = sorted(per_split["split"].unique())
    pred_genes = pd.Index(pd.unique(per_split["gene"]), name="gene")

    if gene_table is None:
        table = pd.DataFrame({"gene": pred_genes, "kept": True, "reason": ""})
    else:
        table = gene_table[["gene", "kept", "reason"]].copy()
        table["gene"] = table["gene"].astype(str)
    table["in_gene_table"] = True
    extra = pred_genes.difference(pd.Index(table["gene"]), sort=False)
    if len(extra):
        warnings.warn(f"{omics} {stimulus}: {len(extra)} predicted gene(s) are not in the gene "
                      f"table (e.g. {list(extra[:3])}); they are added to the denominator and flagged")
        table = pd.concat([table, pd.DataFrame({"gene": extra, "kept": True, "reason": "",
                                                "in_gene_table": False})], ignore_index=True)
    genes = pd.Index(table["gene"], name="gene")
    kept = table["kept"].to_numpy(bool)

    def wide(col: str) -> np.ndarray:
        w = per_split.pivot(index="gene", columns="split", values=col)
        return w.reindex(index=genes, columns=splits).to_numpy(np.float64)

    P = wide("pvalue")
    n_tested = np.isfinite(P).sum(axis=1)
    predicted = genes.isin(pred_genes)
    tested = kept & (n_tested > 0)
    P1 = np.where(np.isfinite(P), P, 1.0)
    p_med, p_lo, p_hi = (np.where(tested, v, np.nan) for v in
                         (np.median(P1, axis=1), *_quantiles(P1, (0.025, 0.975))))
    # the gene's p-value: the paper's median over splits, or for the calibrated test the valid
    # pooled test, or twice the median (Meinshausen et al. 2009) without it
    p_twice_median = np.where(tested, combine_splits(P), np.nan)
    if test == PERTURBATION_TEST and pooled is not None:
        p_gene = np.where(tested, pd.Series(pooled, dtype=float).reindex(genes).to_numpy(np.float64), np.nan)
    elif test == PERTURBATION_TEST:
        p_gene = p_twice_median
    else:
        p_gene = p_med
    significant = tested & (p_gene < alpha)  # NaN (no pooled p) is never significant
    q = benjamini_hochberg(p_gene)

    out = pd.DataFrame({"omics": omics, "stimulus": stimulus, "gene": genes.to_numpy(object)})
    sym = pd.Series(genes, index=genes)
    if symbols is not None and len(symbols):
        sym = pd.Series(symbols, dtype=object).reindex(genes).fillna(sym)
    out["symbol"] = sym.to_numpy(object)
    out["kept"] = kept
    out["reason"] = table["reason"].fillna("").astype(str).to_numpy(object)
    out["category"] = np.select(
        [~kept, ~tested, significant], ["filtered (low/no expression)", "not evaluated", "significant"],
        "not significant")
    out["significant"] = significant
    out["significant_bh"] = tested & (q < fdr)
    cols = [("r2", "r2"), ("smape", "smape"), ("smape_mean_predictor", "smape_mean_predictor")]
    if "r2_oos" in per_split:
        cols.append(("r2_oos", "r2_oos"))
    for col, name in cols:
        W = wide(col)
        med, lo, hi = _quantiles(W, (0.5, 0.025, 0.975))
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = med, lo, hi
    out["p_median"], out["p_q025"], out["p_q975"], out["q"] = p_med, p_lo, p_hi, q
    out["p_gene"] = p_gene
    if test == PERTURBATION_TEST:
        out["p_twice_median"] = p_twice_median
    out["n_splits"] = len(splits)
    out["n_splits_tested"] = n_tested
    N = wide("n_wells")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["n_test_wells"] = row_nanquantile(N, 0.5)
        out["n_test_wells_min"] = np.nanmin(np.where(np.isfinite(N), N, np.inf), axis=1)
    out.loc[~np.isfinite(out["n_test_wells_min"]), "n_test_wells_min"] = np.nan
    if "n_test_perturbations" in per_split:
        out["n_test_perturbations_min"] = int(per_split["n_test_perturbations"].min())
    out["test"] = test
    out["alpha"] = alpha

    flags = pd.Series("", index=genes, dtype=object)
    has = per_split.loc[per_split["flags"] != "", ["gene", "split", "flags"]]
    if len(has):
        text = "split " + has["split"].astype(str) + ": " + has["flags"]
        joined = text.groupby(has["gene"], sort=False).agg("; ".join)
        flags.loc[joined.index] = joined.to_numpy(object)
    f = flags.to_numpy(object)
    f = _flag(f, ~table["in_gene_table"].to_numpy(bool), "not in gene table")
    f = _flag(f, kept & ~predicted, "not predicted")
    f = _flag(f, ~kept & predicted, "filtered but predicted")
    partial = tested & (n_tested < len(splits))
    f = _flag(f, partial, np.char.add(np.char.add("no p-value in ", (len(splits) - n_tested).astype(str)),
                                      f" of {len(splits)} splits (counted as p = 1)"))
    out["flags"] = f
    return out


def evaluate_predictions(splits: Sequence[SplitPredictions], gene_table: pd.DataFrame | None = None,
                         *, test: str = "mannwhitney", alpha: float = 0.05, fdr: float = 0.05,
                         symbols: pd.Series | None = None, chunk_size: int = 2048, n_jobs: int = 1,
                         progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`evaluate_splits` then :func:`summarise_genes` for one (omics, stimulus).

    Returns ``(per_split, per_gene)``.
    """
    if symbols is None:
        found = [s.symbols for s in splits if s.symbols is not None]
        symbols = found[0] if found else None
    per_split = evaluate_splits(splits, test, chunk_size=chunk_size, n_jobs=n_jobs, progress=progress)
    per_gene = summarise_genes(per_split, gene_table, alpha=alpha, fdr=fdr, symbols=symbols,
                               pooled=pooled_pvalues(splits) if check_test(test) == PERTURBATION_TEST else None)
    return per_split, per_gene


# --------------------------------------------------------------------------------------------
# fractions, headline
# --------------------------------------------------------------------------------------------
def predictability_fractions(per_gene: pd.DataFrame, fdr: float = 0.05) -> pd.DataFrame:
    """The paper's fractions per (omics, stimulus), with intervals and BH counts beside them.

    Returns
    -------
    pandas.DataFrame
        One row per (omics, stimulus): ``n_genes`` (denominator: all genes measured),
        ``n_filtered, n_not_evaluated, n_tested, n_significant, n_significant_lo,
        n_significant_hi, n_not_significant, n_significant_bh`` and the matching ``pct_*``
        (percent of ``n_genes``), ``n_splits, test, alpha, fdr``, ``n_r2_undefined`` (tested
        genes whose r² is undefined), ``min_test_wells`` and ``min_test_perturbations`` (the
        smallest test fold over splits).
    """
    rows = []
    for (omics, stimulus), g in per_gene.groupby(["omics", "stimulus"], sort=False):
        alpha = float(g["alpha"].iloc[0])
        tested = (g["category"].isin(["significant", "not significant"])).to_numpy()
        n = len(g)
        row = {
            "omics": omics, "stimulus": stimulus, "test": g["test"].iloc[0], "alpha": alpha,
            "fdr": fdr, "n_splits": int(g["n_splits"].max()), "n_genes": n,
            "n_filtered": int((g["category"] == "filtered (low/no expression)").sum()),
            "n_not_evaluated": int((g["category"] == "not evaluated").sum()),
            "n_tested": int(tested.sum()),
            "n_significant": int(g["significant"].sum()),
            "n_significant_lo": int((tested & (g["p_q975"] < alpha)).sum()),
            "n_significant_hi": int((tested & (g["p_q025"] < alpha)).sum()),
            "n_significant_bh": int(g["significant_bh"].sum()),
            "n_r2_undefined": int((tested & g["r2"].isna().to_numpy()).sum()),
            "min_test_wells": float(np.nanmin(g.loc[tested, "n_test_wells_min"])) if tested.any() else np.nan,
            "min_test_perturbations": int(g["n_test_perturbations_min"].iloc[0])
            if "n_test_perturbations_min" in g else -1,
        }
        row["n_not_significant"] = row["n_tested"] - row["n_significant"]
        for k in ("significant", "significant_lo", "significant_hi", "significant_bh",
                  "not_significant", "filtered", "not_evaluated"):
            row[f"pct_{k}"] = 100.0 * row[f"n_{k}"] / n if n else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def headline_table(fractions: pd.DataFrame, profile: str, source: str) -> pd.DataFrame:
    """This run's fractions next to the paper's, with the profile and data source named.

    Returns one row per (omics, stimulus) with numeric columns and the formatted
    ``this run`` and ``paper`` strings ("18.72% (95% CI: 6.52%, 35.52%); 4927 / 26317").
    """
    rows = []
    for _, r in fractions.iterrows():
        paper = PAPER_RESULTS.get((r["omics"], r["stimulus"]))
        rows.append({
            "omics": r["omics"], "stimulus": r["stimulus"].upper(),
            "this run": (f"{r['pct_significant']:.2f}% (95% CI: {r['pct_significant_lo']:.2f}%, "
                         f"{r['pct_significant_hi']:.2f}%); {r['n_significant']} / {r['n_genes']}"),
            "this run, BH 5% FDR": f"{r['pct_significant_bh']:.2f}%; {r['n_significant_bh']} / {r['n_genes']}",
            "paper": (f"{paper['pct']:.2f}% (95% CI: {paper['pct_lo']:.2f}%, {paper['pct_hi']:.2f}%); "
                      f"{paper['n_significant']} / {paper['n_genes']}") if paper else "",
            "pct_significant": r["pct_significant"], "pct_significant_lo": r["pct_significant_lo"],
            "pct_significant_hi": r["pct_significant_hi"], "pct_significant_bh": r["pct_significant_bh"],
            "n_significant": r["n_significant"], "n_genes": r["n_genes"],
            "paper_pct": paper["pct"] if paper else np.nan,
            "paper_pct_lo": paper["pct_lo"] if paper else np.nan,
            "paper_pct_hi": paper["pct_hi"] if paper else np.nan,
            "paper_n_significant": paper["n_significant"] if paper else np.nan,
            "paper_n_genes": paper["n_genes"] if paper else np.nan,
            "n_splits": r["n_splits"], "test": TEST_LABELS[r["test"]], "alpha": r["alpha"],
            "profile": profile, "data source": source,
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# calibration and adequacy
# --------------------------------------------------------------------------------------------
def null_by_shuffling(splits: Sequence[SplitPredictions], gene_table: pd.DataFrame | None = None,
                      *, test: str = "mannwhitney", alpha: float = 0.05, fdr: float = 0.05,
                      seed: int = 0, n_jobs: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate copies whose predictions are permuted between test perturbations (a null with no signal).

    Each split gets its own permutation of whole perturbation blocks
    (:meth:`~i2o_utils.evaluation.predictions.SplitPredictions.block_shuffled`, seeded by
    ``seed`` and the split number), shared by all genes. Returns ``(per_gene, fractions)`` of the shuffled evaluation; its significant
    fraction should be at or below ``alpha`` and its BH count near 0. The fractions also carry
    ``pct_split_tests_below_alpha``: the percent of single (split, gene) tests with p < alpha,
    the calibration of one split's test before the median over splits.
    """
    shuffled = [s.block_shuffled(np.random.default_rng([seed, int(s.split)])) for s in splits]
    per_split, per_gene = evaluate_predictions(shuffled, gene_table, test=test, alpha=alpha, fdr=fdr,
                                               n_jobs=n_jobs, progress=False)
    fractions = predictability_fractions(per_gene, fdr=fdr)
    p = per_split["pvalue"].to_numpy()
    fractions["pct_split_tests_below_alpha"] = 100.0 * float(np.mean(p[np.isfinite(p)] < alpha)) \
        if np.isfinite(p).any() else np.nan
    return per_gene, fractions


def _sample_size_limit(where: str, n: int, unit: str, test: str, p_min: float, alpha: float,
                       n_for_power: int) -> str | None:
    """The sentence for a test that cannot reach ``alpha`` with ``n`` test ``unit`` per split, or
    has little power with them; ``None`` when neither."""
    if not p_min < alpha:
        return (f"{where}: with {n} test {unit} the smallest p-value {test} can give is {p_min:.3g} >= "
                f"alpha = {alpha}: no gene can be significant; the data are too small to conclude.")
    if n < n_for_power:
        return (f"{where}: only {n} test {unit} per split; {test} has little power, so a low fraction "
                "says little about the images.")
    return None


def evidence_statement(fractions: pd.DataFrame, per_gene: pd.DataFrame, *, profile: str,
                       n_splits_expected: int, min_wells_for_power: int = 20,
                       min_tested_genes: int = 50, min_test_perturbations: int = 5,
                       min_perturbations_for_power: int = 20) -> tuple[bool, list[str]]:
    """Can this run's numbers be read as results? Plain statements of what limits them.

    Checked per (omics, stimulus): the smoke profile; whether the test can reach p < alpha at
    all with the smallest test fold; few test wells (little power); few test perturbations
    (wells of one perturbation share their label, so the wells are not independent samples);
    r² undefined for most genes; few genes; fewer splits than planned or than the paper's 10.

    Returns
    -------
    conclusive
        False when any limitation makes the fractions uninformative.
    messages
        One sentence per limitation (empty when none).
    """
    msgs: list[str] = []
    conclusive = True
    if profile == "smoke":
        conclusive = False
        msgs.append("The smoke profile only checks that the pipeline runs; its numbers mean nothing.")
    for _, r in fractions.iterrows():
        where = f"{r['omics']} {r['stimulus'].upper()}"
        n_min = r.get("min_test_wells", np.nan)
        n_pert = int(r.get("min_test_perturbations", -1))
        limit = None
        if r["test"] == PERTURBATION_TEST and n_pert >= 0:
            limit = _sample_size_limit(where, n_pert, "perturbations", "the perturbation-level test",
                                       2 * min_attainable_pvalue(n_pert, r["test"]), r["alpha"],
                                       min_perturbations_for_power)
        elif np.isfinite(n_min):
            limit = _sample_size_limit(where, int(n_min), "wells", "the test",
                                       min_attainable_pvalue(int(n_min), r["test"]), r["alpha"], min_wells_for_power)
        if limit:
            conclusive = False
            msgs.append(limit)
        if r["test"] != PERTURBATION_TEST and 0 <= n_pert < min_test_perturbations:
            conclusive = False
            msgs.append(f"{where}: only {n_pert} test perturbation(s) in a split; wells of one "
                        "perturbation share their label, so the test's wells are far from "
                        "independent samples and a shuffled-prediction null cannot separate them.")
        if r["n_tested"] and r.get("n_r2_undefined", 0) > r["n_tested"] / 2:
            conclusive = False
            msgs.append(f"{where}: r² is undefined for {r['n_r2_undefined']} of {r['n_tested']} tested "
                        "genes (measured or predicted values constant over the test wells).")
        if r["n_tested"] < min_tested_genes:
            conclusive = False
            msgs.append(f"{where}: only {r['n_tested']} genes tested; the fraction is too coarse "
                        "to compare with the paper.")
        if r["n_splits"] < n_splits_expected:
            conclusive = False
            msgs.append(f"{where}: {r['n_splits']} split(s) found, {n_splits_expected} expected; "
                        "the median and the interval over splits are rough.")
        elif r["n_splits"] < 10:
            msgs.append(f"{where}: {r['n_splits']} splits (the paper used 10); the 2.5%/97.5% "
                        "quantiles of so few values are rough.")
    return conclusive, msgs
