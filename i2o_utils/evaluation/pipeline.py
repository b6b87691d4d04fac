"""Notebook 50 in a few calls: load every input, evaluate, check, save.

:func:`load_evaluation_inputs` gathers the predictions of every (omics, stimulus) that the
fine-tuning step wrote, the gene tables of the omics step (denominators), the gene symbols,
the screen's description and, on a simulated screen, the truth table.
:func:`evaluate_screen` runs the per-gene evaluation and the aggregation over splits;
:func:`save_evaluation` writes every table. The functions that turn results into sentences
(:func:`evidence_markdown`, :func:`null_markdown`) keep the notebook free of logic.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from i2o_utils.config import OMICS, STIMULI
from i2o_utils.data import layout
from i2o_utils.data.splits import folds_of
from i2o_utils.evaluation.predictions import (
    PredictionsMissing,
    SplitPredictions,
    attach_gt,
    gene_table_path,
    load_predictions,
    predictions_dir,
    gene_symbols,
    read_gene_table,
    read_screen_info,
)
from i2o_utils.evaluation.significance import TEST_LABELS, TESTS, benjamini_hochberg, check_test
from i2o_utils.evaluation.summaries import (
    evaluate_splits,
    null_by_shuffling,
    pooled_pvalues,
    predictability_fractions,
    summarise_genes,
)
from i2o_utils.evaluation.truth import (OracleTooSmall, label_oracle, read_truth_genes, simulated_state, stack_oracle,
                                        truth_path, truth_recovery)

__all__ = ["EvaluationInputs", "EvaluationResult", "load_evaluation_inputs", "evaluate_screen",
           "null_check", "evaluate_all_tests", "tests_compared", "compare_tests", "pvalues_by_test",
           "null_calibration", "load_null_screen", "null_screen_evidence", "save_parquet", "save_evaluation", "evidence_markdown", "null_markdown",
           "screen_label"]

Key = tuple[str, str]


def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


@dataclass
class EvaluationInputs:
    """Everything the evaluation reads, per (omics, stimulus)."""

    predictions: dict[Key, list[SplitPredictions]]
    gene_tables: dict[Key, pd.DataFrame | None]
    symbols: dict[str, pd.Series]
    truth: pd.DataFrame | None
    screen: dict
    missing: list[Key] = field(default_factory=list)
    gt_reports: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    oracle: pd.DataFrame | None = None
    """Simulated screens: which genes' processed labels the visible state predicts
    (:func:`~i2o_utils.evaluation.truth.label_oracle`)."""

    def overview(self) -> pd.DataFrame:
        """One row per (omics, stimulus): splits, test wells per split, genes predicted and measured."""
        rows = []
        for (omics, stim), splits in self.predictions.items():
            table = self.gene_tables.get((omics, stim))
            wells = [s.n_wells for s in splits]
            rows.append({
                "omics": omics, "stimulus": stim, "splits": len(splits),
                "test wells per split": _span(wells),
                "test perturbations per split": _span([s.wells["target"].nunique() for s in splits]),
                "genes predicted": splits[0].n_genes,
                "genes measured (gene table)": len(table) if table is not None else np.nan,
                "genes filtered": int((~table["kept"]).sum()) if table is not None else np.nan,
            })
        for omics, stim in self.missing:
            rows.append({"omics": omics, "stimulus": stim, "splits": 0})
        return pd.DataFrame(rows)

    def truth_check(self) -> pd.DataFrame | None:
        """Per split: predicted wells and genes missing from data/GT, and disagreements (None if unchecked)."""
        if not self.gt_reports:
            return None
        return pd.DataFrame([{
            "omics": r["omics"], "stimulus": r["stimulus"], "split": r["split"],
            "wells missing from truth": len(r["wells_missing"]),
            "genes missing from truth": len(r["genes_missing"]),
            "values missing": r["n_cells_missing"], "values disagreeing": r["n_disagree"],
            "examples": ", ".join((r["wells_missing"] + r["genes_missing"])[:3]),
        } for r in self.gt_reports])

    def truth_check_summary(self) -> pd.DataFrame | None:
        """:meth:`truth_check` summed over the splits: one row per (omics, stimulus)."""
        check = self.truth_check()
        if check is None:
            return None
        counts = ["wells missing from truth", "genes missing from truth", "values missing", "values disagreeing"]
        out = check.groupby(["omics", "stimulus"], sort=False).agg(
            splits=("split", "nunique"), **{c: (c, "sum") for c in counts},
            examples=("examples", lambda e: ", ".join(x for x in e if x)[:80]))
        return out.reset_index()


def load_evaluation_inputs(n_splits: int | None = None, *, check_gt: bool = False,
                           predictions_folder: str | os.PathLike | None = None,
                           genes_folder: str | os.PathLike | None = None,
                           data_root: str | os.PathLike | None = None,
                           split_table: pd.DataFrame | None = None) -> EvaluationInputs:
    """Read the predictions, gene tables, symbols, screen description and truth.

    Parameters
    ----------
    n_splits
        Splits expected per (omics, stimulus); fewer found is noted (not an error), so a
        partial run can still be evaluated and says so.
    check_gt
        Take the measured values from ``data/GT`` (the truth) and report predicted wells or
        genes missing from it (:func:`~i2o_utils.evaluation.predictions.attach_gt`).
    split_table
        Notebook 10's splits (:func:`i2o_utils.data.splits.load_split_table`): every test well of
        a prediction file must belong to a test perturbation of its split, else
        :class:`~i2o_utils.data.layout.LayoutError` names the file and the perturbation.

    Raises
    ------
    PredictionsMissing
        When no (omics, stimulus) has any prediction file.
    """
    folder = Path(predictions_folder) if predictions_folder is not None else predictions_dir()
    preds: dict[Key, list[SplitPredictions]] = {}
    tables: dict[Key, pd.DataFrame | None] = {}
    missing: list[Key] = []
    notes: list[str] = []
    gt_reports: list[dict] = []
    truth = read_truth_genes(truth_path(data_root))
    state = simulated_state(data_root) if truth is not None else None  # for the label oracle
    oracle_parts: dict[Key, pd.DataFrame] = {}
    for omics in OMICS:
        for stim in STIMULI:
            try:
                splits = load_predictions(omics, stim, folder)
            except PredictionsMissing:
                missing.append((omics, stim))
                continue
            if split_table is not None:
                for sp in splits:
                    fold = folds_of(split_table, sp.split, sp.wells["target"], sp.path)
                    if (fold != "test").any():
                        t = sp.wells["target"].to_numpy()[fold != "test"][0]
                        raise layout.LayoutError(f"{sp.path}: perturbation {t} is predicted as a test perturbation, "
                                                 f"but split {sp.split} of the split table puts it in "
                                                 f"{fold[fold != 'test'][0]!r} (predictions of other splits?)")
            if n_splits is not None and len(splits) < n_splits:
                notes.append(f"{omics} {stim.upper()}: {len(splits)} of {n_splits} splits found")
            path = gene_table_path(omics, stim, genes_folder)
            if path.exists():
                tables[(omics, stim)] = read_gene_table(path)
            else:
                tables[(omics, stim)] = None
                notes.append(f"{omics} {stim.upper()}: no gene table ({path.name}); the denominator is "
                             "the predicted genes only, filtered genes are not counted")
            gt_file = layout.gt_path(omics, stim, data_root)
            gt = layout.read_gt_matrix(gt_file) if (check_gt or state) and gt_file.exists() else None  # once
            if check_gt:
                if gt is not None:
                    checked = []
                    for s in splits:
                        s2, report = attach_gt(s, gt)
                        report.update(omics=omics, stimulus=stim)
                        gt_reports.append(report)
                        checked.append(s2)
                    splits = checked
                else:
                    notes.append(f"{omics} {stim.upper()}: no GT table {gt_file}; measured values "
                                 "taken from the prediction files")
            if state is not None and gt is not None and oracle_parts is not None:
                try:
                    oracle_parts[(omics, stim)] = label_oracle(gt, *state)
                except OracleTooSmall as e:
                    notes.append(f"label oracle not computed: {e}; precision against the processed labels "
                                 "is left empty")
                    oracle_parts = None
            del gt
            preds[(omics, stim)] = splits
    if not preds:
        raise PredictionsMissing(f"{folder}: no prediction file at all; run the fine-tuning notebook first")
    from i2o_utils.imaging.tilestore import stored_wells_note

    if predictions_folder is None:
        _refuse_stale_predictions(folder)
    wells_note = stored_wells_note()
    if wells_note:
        notes.append(f"imaging: {wells_note}")
    symbols = {o: gene_symbols(t for (o2, _), t in tables.items() if o2 == o) for o in {k[0] for k in preds}}
    oracle = stack_oracle(oracle_parts) if oracle_parts is not None else None
    return EvaluationInputs(predictions=preds, gene_tables=tables, symbols=symbols, truth=truth, oracle=oracle,
                            screen=read_screen_info(data_root), missing=missing, gt_reports=gt_reports,
                            notes=notes)


@dataclass
class EvaluationResult:
    """Per-split and per-gene results of every (omics, stimulus), and the fractions."""

    test: str
    alpha: float
    fdr: float
    per_split: pd.DataFrame
    per_gene: pd.DataFrame
    fractions: pd.DataFrame

    @property
    def test_label(self) -> str:
        return TEST_LABELS[self.test]


def evaluate_screen(inputs: EvaluationInputs, *, test: str = "mannwhitney", alpha: float = 0.05,
                    fdr: float = 0.05, n_jobs: int = 1, progress: bool = True) -> EvaluationResult:
    """Evaluate every (omics, stimulus) of ``inputs`` (per split, then over splits)."""
    test = check_test(test)
    per_split, per_gene = [], []
    for key, splits in inputs.predictions.items():
        ps = evaluate_splits(splits, test, n_jobs=n_jobs, progress=progress)
        pooled = pooled_pvalues(splits) if test == "perturbation" else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pg = summarise_genes(ps, inputs.gene_tables.get(key), alpha=alpha, fdr=fdr,
                                 symbols=inputs.symbols.get(key[0]), pooled=pooled)
        inputs.notes.extend(m for m in (str(w.message) for w in caught) if m not in inputs.notes)
        per_split.append(ps)
        per_gene.append(pg)
    pg = pd.concat(per_gene, ignore_index=True)
    return EvaluationResult(test=test, alpha=alpha, fdr=fdr, per_split=pd.concat(per_split, ignore_index=True),
                            per_gene=pg, fractions=predictability_fractions(pg, fdr=fdr))


def null_check(inputs: EvaluationInputs, *, test: str = "mannwhitney", alpha: float = 0.05,
               fdr: float = 0.05, seed: int = 0, n_jobs: int = 1) -> pd.DataFrame:
    """Fractions after shuffling the predictions across test wells (every (omics, stimulus))."""
    parts = []
    for key, splits in inputs.predictions.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, fr = null_by_shuffling(splits, inputs.gene_tables.get(key), test=test, alpha=alpha,
                                      fdr=fdr, seed=seed, n_jobs=n_jobs)
        parts.append(fr)
    return pd.concat(parts, ignore_index=True)


def evaluate_all_tests(inputs: EvaluationInputs, *, alpha: float = 0.05, fdr: float = 0.05,
                       n_jobs: int = 1, done: EvaluationResult | None = None) -> dict[str, EvaluationResult]:
    """Every test of :data:`~i2o_utils.evaluation.significance.TESTS` on the same predictions.

    ``done``: a result already computed (its test is not run again).
    """
    out: dict[str, EvaluationResult] = {}
    for test in TESTS:
        if done is not None and done.test == test:
            out[test] = done
        else:
            out[test] = evaluate_screen(inputs, test=test, alpha=alpha, fdr=fdr, n_jobs=n_jobs, progress=False)
    return out


TESTS_COMPARED_COLUMNS = ("omics", "stimulus", "test", "n_genes", "n_significant", "n_significant_bh",
                          "pct_significant", "precision", "recall", "split_tests_false_positive_rate",
                          "precision_labels")


def _order_rows(out: pd.DataFrame) -> pd.DataFrame:
    order = {k: i for i, k in enumerate((o, s) for o in OMICS for s in STIMULI)}
    torder = {t: i for i, t in enumerate(TESTS)}
    out = out.assign(_o=[order.get(k, len(order)) for k in zip(out["omics"], out["stimulus"])],
                     _t=[torder.get(t, len(torder)) for t in out["test"]])
    return out.sort_values(["_o", "_t"], kind="mergesort", ignore_index=True).drop(columns=["_o", "_t"])


def tests_compared(results: dict[str, EvaluationResult], truth: pd.DataFrame | None,
                   oracle: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (omics, stimulus, test): the contract table ``tests_compared.csv``.

    Columns :data:`TESTS_COMPARED_COLUMNS`; ``precision`` and ``recall`` are those of the
    Benjamini–Hochberg call (q < FDR) against the simulator's planted genes, and
    ``split_tests_false_positive_rate`` the share of single (split, gene) tests with p < alpha
    among genes that are not planted; all three empty without a truth table (real data).
    ``precision_labels`` is the precision against the planted genes and those whose processed
    labels the visible state predicts (``oracle``, :func:`~i2o_utils.evaluation.truth.label_oracle`;
    empty without it).
    """
    rows = []
    for test, res in results.items():
        fr = res.fractions[["omics", "stimulus", "test", "n_genes", "n_significant", "n_significant_bh",
                            "pct_significant"]].copy()
        if truth is not None:
            rec = truth_recovery(res.per_gene, truth, res.per_split, oracle=oracle)
            if "precision_labels" not in rec:
                rec["precision_labels"] = np.nan
            rec = rec[rec["call"] == "BH"][["omics", "stimulus", "precision", "recall",
                                            "split_tests_false_positive_rate", "precision_labels"]]
            fr = fr.merge(rec, on=["omics", "stimulus"], how="left")
        else:
            fr["precision"] = fr["recall"] = fr["split_tests_false_positive_rate"] = np.nan
            fr["precision_labels"] = np.nan
        rows.append(fr)
    return _order_rows(pd.concat(rows, ignore_index=True))[list(TESTS_COMPARED_COLUMNS)]


def compare_tests(inputs: EvaluationInputs, *, alpha: float = 0.05, fdr: float = 0.05,
                  n_jobs: int = 1) -> pd.DataFrame:
    """Every test side by side on the same predictions (:func:`tests_compared` of :func:`evaluate_all_tests`)."""
    return tests_compared(evaluate_all_tests(inputs, alpha=alpha, fdr=fdr, n_jobs=n_jobs), inputs.truth,
                          inputs.oracle)


def pvalues_by_test(results: dict[str, EvaluationResult]) -> pd.DataFrame:
    """Long table of every p-value: ``omics, stimulus, test, level, split, gene, pvalue``.

    ``level`` is ``split`` (one split's test; ``split`` its number) or ``gene`` (the gene's
    p-value over the splits, ``p_gene``; ``split`` = -1). Read back by :func:`null_calibration`.
    """
    parts = []
    for test, res in results.items():
        ps = res.per_split[["omics", "stimulus", "split", "gene", "pvalue"]].assign(test=test, level="split")
        pg = res.per_gene[res.per_gene["p_gene"].notna()]
        pg = pg[["omics", "stimulus", "gene", "p_gene"]].rename(columns={"p_gene": "pvalue"})
        parts += [ps, pg.assign(test=test, level="gene", split=-1)]
    out = pd.concat(parts, ignore_index=True)
    out = out[np.isfinite(out["pvalue"].to_numpy(np.float64))]
    return out[["omics", "stimulus", "test", "level", "split", "gene", "pvalue"]].reset_index(drop=True)


NULL_CALIBRATION_COLUMNS = ("omics", "stimulus", "test", "n_genes", "pct_p_below_alpha", "pct_significant_bh",
                            "split_tests_false_positive_rate")


def null_calibration(pvalues: pd.DataFrame, *, alpha: float = 0.05, fdr: float = 0.05) -> pd.DataFrame:
    """Calibration on a null screen, one row per (omics, stimulus, test).

    From :func:`pvalues_by_test` of a null screen's evaluation: ``n_genes`` (tested),
    ``pct_p_below_alpha`` (percent of genes whose p-value over splits is < alpha: the raw
    fraction significant), ``pct_significant_bh`` (percent with BH q < ``fdr``) and
    ``split_tests_false_positive_rate`` (share of single split tests with p < alpha). On a
    screen without signal a calibrated test gives at most alpha, about 0 and about alpha.
    """
    rows = []
    for (omics, stim, test), g in pvalues.groupby(["omics", "stimulus", "test"], sort=False):
        pg = g.loc[g["level"] == "gene", "pvalue"].to_numpy(np.float64)
        ps = g.loc[g["level"] == "split", "pvalue"].to_numpy(np.float64)
        q = benjamini_hochberg(pg)
        rows.append({"omics": omics, "stimulus": stim, "test": test, "n_genes": len(pg),
                     "pct_p_below_alpha": 100.0 * float(np.mean(pg < alpha)) if len(pg) else np.nan,
                     "pct_significant_bh": 100.0 * float(np.mean(q < fdr)) if len(pg) else np.nan,
                     "split_tests_false_positive_rate": float(np.mean(ps < alpha)) if len(ps) else np.nan})
    return _order_rows(pd.DataFrame(rows))[list(NULL_CALIBRATION_COLUMNS)]


NULL_PVALUES_FILE = "pvalues_by_test.parquet"


def load_null_screen(results_root: str | os.PathLike | None = None) -> tuple[dict, pd.DataFrame] | None:
    """The null screen's evaluation that ``i2o book`` runs beside the main one, or None if absent.

    Reads ``<null results>/50_evaluate/pvalues_by_test.parquet`` and the null screen's
    SCREEN.json (:func:`i2o_utils.paths.null_screen_dirs`). Raises when the folder holds a
    screen that is not a null screen.
    """
    from i2o_utils.paths import null_screen_dirs

    dirs = null_screen_dirs(results_root)
    path = dirs["results"] / "50_evaluate" / NULL_PVALUES_FILE
    if not path.exists():
        return None
    info = read_screen_info(dirs["data"])
    if not info.get("null"):
        raise layout.LayoutError(f"{dirs['data']}: the screen there is not a null screen ({info.get('path')})")
    pv = pd.read_parquet(path)
    missing = [c for c in ("omics", "stimulus", "test", "level", "split", "gene", "pvalue") if c not in pv]
    if missing:
        raise layout.LayoutError(f"{path}: missing column(s) {missing}")
    return info, pv


def null_screen_evidence(screen: dict, results: dict[str, EvaluationResult],
                         results_root: str | os.PathLike | None = None) -> tuple[str, pd.DataFrame | None]:
    """The p-values of a screen without signal, and where they come from, for the null section.

    On a null screen, this run's own p-values; otherwise the null screen that ``i2o book`` runs
    beside the main one (:func:`load_null_screen`). Returns ``(description, pvalues)``, with
    ``pvalues`` None (and the description saying so) when no null screen was run.
    """
    if screen.get("null"):
        return f"this run itself ({screen_label(screen)})", pvalues_by_test(results)
    found = load_null_screen(results_root)
    if found is None:
        return ("no null screen was run beside this one (`i2o book` runs one; `i2o run` does not), "
                "so calibration is not shown for this run"), None
    info, pv = found
    return f"the {screen_label(info)} run beside this one", pv


def save_parquet(path: str | os.PathLike, df: pd.DataFrame) -> list[Path]:
    """Write ``df`` to ``path`` as Parquet, atomically; returns ``[path]``."""
    path = Path(path)
    with layout.atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return [path]


def save_evaluation(out_dir: str | os.PathLike, result: EvaluationResult, **tables: pd.DataFrame | None) -> list[Path]:
    """Write the per-gene (Parquet), per-split (Parquet) and fraction tables, and any ``tables``.

    ``tables`` maps a file stem to a DataFrame (``None`` is skipped), written as CSV.
    Every file is written atomically.
    """
    out_dir = Path(out_dir)
    written = []
    for name, df in (("per_gene", result.per_gene), ("per_split", result.per_split)):
        path = out_dir / f"{name}.parquet"
        with layout.atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False)
        written.append(path)
    written.append(layout.write_csv_atomic(result.fractions, out_dir / "fractions.csv"))
    for stem, df in tables.items():
        if df is not None:
            written.append(layout.write_csv_atomic(df, out_dir / f"{stem}.csv"))
    return written


def _refuse_stale_predictions(folder: Path) -> None:
    """Predictions made from another tile store than today's (notebook 20 re-ran since) stop the evaluation."""
    from i2o_utils import cache
    from i2o_utils.imaging.tilestore import TileStore, TileStoreError
    from i2o_utils.paths import results_dir

    record = cache.read_record(folder.parent)
    if record is None or "store" not in record:
        return
    try:
        now = TileStore(results_dir() / "20_preprocess_images" / "tilestore").content_key()
    except (TileStoreError, OSError, ValueError):
        return
    if record["store"] != now:
        raise PredictionsMissing(f"{folder}: these predictions were made from another tile store than the current "
                                 "one (the image preprocessing ran again since); re-run the fine-tuning notebook")


def evidence_markdown(conclusive: bool, messages: list[str], notes: list[str] | None = None) -> str:
    """A short Markdown verdict: can this run's numbers be read as results, and why not."""
    lines = []
    if conclusive:
        lines.append("**These numbers can be read as results** (enough test wells, genes and splits).")
    else:
        lines.append("**The data are too small to conclude.** The figures and tables below show that the "
                     "evaluation runs; do not read the fractions as findings:")
    lines += [f"- {m}" for m in messages]
    if notes:
        lines.append("")
        lines.append("Input notes:")
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


def null_markdown(screen: dict, result: EvaluationResult, null_fractions: pd.DataFrame) -> str:
    """Markdown on calibration: the shuffled-prediction null and, on a null screen, the run itself."""
    def row_text(r) -> str:
        txt = (f"{r['omics']} {r['stimulus'].upper()}: {r['pct_significant']:.2f}% significant "
               f"({r['n_significant']} of {r['n_genes']}), BH 5% FDR: {r['n_significant_bh']}")
        if np.isfinite(r.get("pct_split_tests_below_alpha", np.nan)):
            txt += (f"; single split tests with p < alpha: {r['pct_split_tests_below_alpha']:.1f}% "
                    "(before the median over splits)")
        return txt

    def split_warning(fr: pd.DataFrame) -> list[str]:
        rate = fr["pct_split_tests_below_alpha"] / 100
        bad = fr[rate > 1.5 * result.alpha]
        if bad.empty:
            return []
        return ["", f"**Single split tests reject far more often than alpha** (up to "
                f"{100 * rate.max():.0f}% for alpha = {result.alpha}): the test treats the wells as "
                "independent, but wells of one perturbation share their label; only the median over "
                "splits brings the fraction down. Read fractions near alpha with care, or use the "
                "calibrated perturbation-level test."]

    lines = []
    if screen.get("null"):
        lines.append(f"**This is a null screen** (the images carry no signal about the omics): every "
                     f"significant gene below is a false positive. Expected: at most alpha = {result.alpha} "
                     "raw, and about 0 after Benjamini–Hochberg.")
        fr = result.fractions.copy()
        ps = result.per_split
        fr["pct_split_tests_below_alpha"] = [
            100.0 * float((g["pvalue"].dropna() < result.alpha).mean()) if g["pvalue"].notna().any() else np.nan
            for g in (ps[(ps["omics"] == o) & (ps["stimulus"] == st)] for o, st in zip(fr["omics"], fr["stimulus"]))]
        lines += [f"- {row_text(r)}" for _, r in fr.iterrows()]
        margin = 3 * np.sqrt(result.alpha * (1 - result.alpha) / fr["n_tested"].clip(lower=1))
        if (fr["pct_significant"] / 100 > result.alpha + margin).any():
            lines.append("")
            lines.append("**More genes are significant than alpha allows on a screen without signal:** "
                         "the evaluation is not calibrated here, and its fractions on screens with "
                         "signal overstate predictability.")
        lines += split_warning(fr)
        lines.append("")
    lines.append(f"**Shuffled predictions** (each split's predictions permuted between its test perturbations, "
                 f"whole blocks of wells at once; {result.test_label}): the same evaluation on predictions that "
                 "cannot know which perturbation they belong to. Expected: at most alpha = "
                 f"{result.alpha} raw, and about 0 after BH.")
    lines += [f"- {row_text(r)}" for _, r in null_fractions.iterrows()]
    if "pct_split_tests_below_alpha" in null_fractions:
        lines += split_warning(null_fractions)
    margin = 3 * np.sqrt(result.alpha * (1 - result.alpha) / null_fractions["n_tested"].clip(lower=1))
    above = null_fractions[null_fractions["pct_significant"] / 100 > result.alpha + margin]
    if len(above):
        lines.append("")
        lines.append("**The shuffled predictions are significant too often** in "
                     + ", ".join(f"{o} {s.upper()}" for o, s in zip(above["omics"], above["stimulus"]))
                     + ": the test is not calibrated there (wells of one perturbation share one label and "
                     "are treated as independent), so its fractions above overstate predictability.")
    return "\n".join(lines)


def screen_label(screen: dict) -> str:
    """The data source in words, from SCREEN.json: e.g. 'simulated screen (seed 0, quick scale)'."""
    src = str(screen.get("source", "unknown"))
    if src == "simulated":
        kind = "simulated null screen" if screen.get("null") else "simulated screen"
        extra = [f"seed {screen['seed']}" if "seed" in screen else None,
                 f"{screen['profile']} scale" if "profile" in screen else None]
        extra = [e for e in extra if e]
        return f"{kind} ({', '.join(extra)})" if extra else kind
    return src + (" (null screen)" if screen.get("null") else "")
