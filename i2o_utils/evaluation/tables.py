"""The paper's Tables 1-4: top and bottom gene products by r² among the significant ones.

Table 1: transcriptomics M1, Table 2: transcriptomics M2, Table 3: proteomics M1, Table 4:
proteomics M2. Each lists the 10 significant genes with the highest median r² over the splits
and the 10 with the lowest, with r² and SMAPE and their 95% intervals over the splits (2.5% and
97.5% quantiles), formatted as in the paper: ``0.91 (95% CI: 0.83, 0.94)`` and
``11.23% (95% CI: 9.89%, 11.94%)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from i2o_utils.evaluation.significance import TEST_LABELS

__all__ = ["PAPER_TABLE_NUMBERS", "top_bottom_table", "display_table", "table_caption",
           "paper_tables", "format_interval", "tables_html", "table_files"]

PAPER_TABLE_NUMBERS = {
    ("transcriptomics", "m1"): 1,
    ("transcriptomics", "m2"): 2,
    ("proteomics", "m1"): 3,
    ("proteomics", "m2"): 4,
}

_COLUMNS = ["table", "omics", "stimulus", "part", "rank", "gene", "symbol", "r2", "r2_lo", "r2_hi",
            "smape", "smape_lo", "smape_hi", "smape_mean_predictor", "r2_oos", "p_median", "p_gene", "q",
            "n_test_wells", "test"]


def format_interval(value: float, lo: float, hi: float, *, percent: bool = False) -> str:
    """``0.91 (95% CI: 0.83, 0.94)``, or with ``percent`` ``11.23% (95% CI: 9.89%, 11.94%)``."""
    if not np.isfinite(value):
        return "n/a"
    u = "%" if percent else ""
    return f"{value:.2f}{u} (95% CI: {lo:.2f}{u}, {hi:.2f}{u})"


def top_bottom_table(per_gene: pd.DataFrame, omics: str, stimulus: str, n: int = 10) -> pd.DataFrame:
    """Top and bottom ``n`` significant genes of one (omics, stimulus) by median r².

    Only significant genes with a defined r² are ranked (as in the paper: "all significant at
    alpha"). With fewer than ``2 n`` such genes the top takes the first ``n`` (or all) and the
    bottom the rest, so that no gene appears twice; the table may then be short or empty.

    Returns
    -------
    pandas.DataFrame
        Columns ``table, omics, stimulus, part ('top'/'bottom'), rank, gene, symbol, r2,
        r2_lo, r2_hi, smape, smape_lo, smape_hi, smape_mean_predictor, p_median, q,
        n_test_wells, test`` (numeric), ordered by r² from high to low within each part.
    """
    g = per_gene[(per_gene["omics"] == omics) & (per_gene["stimulus"] == stimulus)
                 & per_gene["significant"] & per_gene["r2"].notna()]
    g = g.sort_values(["r2", "gene"], ascending=[False, True], kind="mergesort")
    k = len(g)
    top = g.iloc[:min(n, k)].assign(part="top")
    bottom = g.iloc[max(min(n, k), k - n):].assign(part="bottom")
    out = pd.concat([top, bottom], ignore_index=True)
    out["rank"] = np.concatenate([np.arange(1, len(top) + 1), np.arange(k - len(bottom) + 1, k + 1)])
    out["table"] = PAPER_TABLE_NUMBERS.get((omics, stimulus), np.nan)
    for c in _COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    return out[_COLUMNS]


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: ``part, Gene symbol, r² (95% CI), SMAPE (95% CI), p``, and beyond the
    paper the out-of-sample R² against the mean predictor (perturbation level) when present."""
    out = pd.DataFrame({
        "part": table["part"].map({"top": "Top", "bottom": "Bottom"}),
        "Gene symbol": table["symbol"].fillna(table["gene"]),
        "r² (95% CI)": [format_interval(*v) for v in table[["r2", "r2_lo", "r2_hi"]].to_numpy()],
        "SMAPE (95% CI)": [format_interval(*v, percent=True)
                           for v in table[["smape", "smape_lo", "smape_hi"]].to_numpy()],
        "median p": [f"{p:.2g}" for p in table["p_median"]],
    })
    if "p_gene" in table and (table["test"] == "perturbation").any():
        out = out.drop(columns="median p").assign(**{"p (pooled)": [f"{p:.2g}" for p in table["p_gene"]]})
    if "r2_oos" in table and table["r2_oos"].notna().any():
        out.insert(3, "OOS R²", [f"{v:.2f}" if np.isfinite(v) else "n/a" for v in table["r2_oos"]])
    return out


def table_caption(omics: str, stimulus: str, *, test: str, alpha: float, n_significant: int,
                  n_splits: int, n: int = 10) -> str:
    """The caption of Table 1-4 for this run, naming the test, alpha and the number of splits."""
    number = PAPER_TABLE_NUMBERS.get((omics, stimulus), "?")
    return (f"Table {number}: {omics}, {stimulus.upper()}: the top and bottom {n} of the "
            f"{n_significant} significant gene products (p < {alpha} over {n_splits} "
            f"splits, {TEST_LABELS[test]}) by median r² on the test wells; intervals are the "
            f"2.5% and 97.5% quantiles over the {n_splits} splits; OOS R²: median over splits of "
            "1 - SSE(model) / SSE(train-fold mean) on the perturbation means.")


def paper_tables(per_gene: pd.DataFrame, n: int = 10) -> dict[tuple[str, str], pd.DataFrame]:
    """:func:`top_bottom_table` for every (omics, stimulus) present, keyed like the paper's tables."""
    out = {}
    for key in PAPER_TABLE_NUMBERS:
        if ((per_gene["omics"] == key[0]) & (per_gene["stimulus"] == key[1])).any():
            out[key] = top_bottom_table(per_gene, *key, n=n)
    return out


def tables_html(tabs: dict[tuple[str, str], pd.DataFrame], per_gene: pd.DataFrame, n: int = 10) -> str:
    """Tables 1-4 as one HTML block (caption above each table), for the book.

    A table with fewer rows than ``2 n`` says how many significant genes there were.
    """
    parts = []
    for (omics, stim), t in tabs.items():
        g = per_gene[(per_gene["omics"] == omics) & (per_gene["stimulus"] == stim)]
        n_sig = int(g["significant"].sum())
        cap = table_caption(omics, stim, test=g["test"].iloc[0], alpha=float(g["alpha"].iloc[0]),
                            n_significant=n_sig, n_splits=int(g["n_splits"].max()), n=n)
        parts.append(f"<p><b>{cap}</b></p>")
        if t.empty:
            parts.append("<p><i>No significant gene with a defined r²: the table is empty.</i></p>")
            continue
        if len(t) < 2 * n:
            parts.append(f"<p><i>Only {len(t)} significant gene(s) with a defined r²: top and bottom "
                         "share them without repeating any.</i></p>")
        parts.append(display_table(t).to_html(index=False, border=0))
    return "\n".join(parts)


def table_files(tabs: dict[tuple[str, str], pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``{"table1_transcriptomics_m1": table, ...}``: file stems for saving Tables 1-4 as CSV.

    The CSV keeps the numeric columns and adds the formatted ``r2_ci`` and ``smape_ci`` strings.
    """
    out = {}
    for (omics, stim), t in tabs.items():
        number = PAPER_TABLE_NUMBERS.get((omics, stim), 0)
        d = t.copy()
        d["r2_ci"] = [format_interval(*v) for v in t[["r2", "r2_lo", "r2_hi"]].to_numpy()]
        d["smape_ci"] = [format_interval(*v, percent=True) for v in t[["smape", "smape_lo", "smape_hi"]].to_numpy()]
        out[f"table{number}_{omics}_{stim}"] = d
    return out
