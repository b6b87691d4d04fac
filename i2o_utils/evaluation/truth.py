"""Recovery of the simulated screen's truth (beyond the paper).

The simulator writes ``simulation/truth_genes.csv`` (``omics, gene, kind, r2_expected``):
``kind`` is ``visible`` for genes driven by the latent state the images show, ``hidden``
(driven by a state the images do not show), ``noise`` or ``low`` (lowly expressed, for the
filter). A good evaluation calls the visible genes significant and little else; on a null
screen (images without signal) it calls about ``alpha`` of the genes or fewer.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from scipy import stats

from i2o_utils.data.layout import TRUTH_KINDS, LayoutError, read_screen_info, read_truth_genes, truth_path

__all__ = ["TRUTH_KINDS", "truth_path", "read_truth_genes", "truth_recovery", "signal_summary",
           "label_oracle", "label_oracle_summary", "OracleTooSmall",
           "simulated_state", "stack_oracle"]


class OracleTooSmall(ValueError):
    """Too few perturbations for the label oracle's regression."""




def label_oracle(labels: pd.DataFrame, latent: pd.DataFrame, d_visible: int, fdr: float = 0.05) -> pd.DataFrame:
    """Which genes' **processed labels** depend on the state the images show (simulated screens).

    The simulator plants ``visible`` genes, but preprocessing can pass part of their signal to
    other genes: vsn's per-sample calibration, for instance, is fitted to every protein of a
    sample, so when many proteins move with the cell state the calibration does too, and so does
    every protein it is applied to. A calibrated test then rightly finds such genes predictable
    from the images. This oracle measures it with the simulator's own latent state, at the
    perturbation level: per gene, the labels averaged over each perturbation's wells are
    regressed on the perturbation's mean visible state of the imaging wells, and a Wald F-test of
    the state's coefficients with the heteroscedasticity-consistent HC3 covariance gives a
    p-value (the labels of strong perturbations spread more than those of weak ones, which a plain
    F-test takes for signal: on the quick screens it flags up to a third of the genes driven
    only by the hidden state);
    BH over the genes at ``fdr``.

    Parameters
    ----------
    labels
        Wells x genes of one (omics, stimulus), indexed by ``(plate_barcode, well_id)`` of the
        imaging wells (as :func:`~i2o_utils.data.layout.read_gt_matrix` returns the GT table).
    latent
        The simulator's ``simulation/latent.parquet``: ``plate, well_id, target, kind, z0...``.
    d_visible
        Number of latent dimensions the images show (``z0 .. z{d_visible-1}``).

    Returns
    -------
    pandas.DataFrame
        ``gene, oracle_r2, oracle_p, oracle_q, oracle_predictable``.

    Raises
    ------
    OracleTooSmall
        Fewer than two perturbations per coefficient.
    """
    img = latent[latent["kind"] == "imaging"].set_index(["plate", "well_id"])
    zcols = [f"z{i}" for i in range(d_visible)]
    missing = [c for c in zcols + ["target"] if c not in img.columns]
    if missing:
        raise LayoutError(f"latent state: missing column(s) {missing}")
    idx = labels.index.intersection(img.index)
    if len(idx) < len(labels):
        raise LayoutError(f"latent state: {len(labels) - len(idx)} labelled well(s) have no latent state, "
                          f"e.g. {labels.index.difference(img.index)[0]}")
    target = img.loc[labels.index, "target"].to_numpy()
    y = labels.groupby(target).mean()
    z = img.loc[labels.index, zcols].groupby(target).mean().loc[y.index].to_numpy()
    x = np.column_stack([np.ones(len(z)), z])
    n, k = x.shape
    if n < 2 * k:
        raise OracleTooSmall(f"{n} perturbations, fewer than two per coefficient of a regression on "
                             f"{d_visible} visible dimensions ({k} coefficients)")
    yv = y.to_numpy(np.float64)
    ok = np.isfinite(yv)
    yv = np.where(ok, yv, np.nanmean(yv, axis=0))  # a perturbation without a value: the gene's mean
    yc = yv - yv.mean(axis=0)
    xtx_inv = np.linalg.pinv(x.T @ x)
    beta = xtx_inv @ x.T @ yv
    resid = yv - x @ beta
    sse = (resid**2).sum(axis=0)
    sst = (yc**2).sum(axis=0)
    # HC3 sandwich covariance of the coefficients (MacKinnon & White 1985), per gene
    lev = np.einsum("ij,jk,ik->i", x, xtx_inv, x)
    w = resid**2 / (1 - np.minimum(lev, 1 - 1e-12))[:, None] ** 2
    bread = x @ xtx_inv  # n x k
    cov = np.einsum("ia,ig,ib->gab", bread, w, bread)  # genes x k x k
    b = beta[1:].T  # genes x (k-1): every coefficient but the intercept
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1 - sse / sst, np.nan)
        wald = np.einsum("ga,gab,gb->g", b, np.linalg.pinv(cov[:, 1:, 1:]), b)
        f = wald / (k - 1)
    p = np.where(sst > 0, stats.f.sf(f, k - 1, n - k), np.nan)
    q = stats.false_discovery_control(np.where(np.isfinite(p), p, 1.0), method="bh")
    return pd.DataFrame({"gene": y.columns.astype(str), "oracle_r2": r2, "oracle_p": p, "oracle_q": q,
                         "oracle_predictable": q < fdr})


def simulated_state(data_root: str | os.PathLike | None = None) -> tuple[pd.DataFrame, int] | None:
    """The simulator's latent state (``simulation/latent.parquet``) and its number of visible
    dimensions, the inputs of :func:`label_oracle`; ``None`` on real data."""
    from i2o_utils.paths import bucket_paths

    lat_path = bucket_paths(data_root)["simulation"] / "latent.parquet"
    info = read_screen_info(data_root)
    if not lat_path.exists() or info is None:
        return None
    return pd.read_parquet(lat_path), int(info["screen"]["latent_visible"])


def stack_oracle(parts: dict[tuple[str, str], pd.DataFrame]) -> pd.DataFrame | None:
    """One table of :func:`label_oracle` results per (omics, stimulus), ``omics, stimulus`` first."""
    if not parts:
        return None
    out = pd.concat([o.assign(omics=k[0], stimulus=k[1]) for k, o in parts.items()], ignore_index=True)
    return out[["omics", "stimulus"] + [c for c in out.columns if c not in ("omics", "stimulus")]]


def label_oracle_summary(oracle: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per (omics, stimulus): the share of each planted kind whose processed labels the visible
    state predicts (:func:`label_oracle`), as percent columns ``visible %, hidden %, noise %``."""
    on = ["omics", "stimulus", "gene"] if "stimulus" in truth.columns else ["omics", "gene"]
    m = oracle.merge(truth[on + ["kind"]].astype({"gene": str}), on=on, how="left")
    m = m[m["kind"].isin(["visible", "hidden", "noise"])]
    out = (m.groupby(["omics", "stimulus", "kind"], sort=False)["oracle_predictable"].mean() * 100).unstack("kind")
    out = out.reindex(columns=[k for k in ("visible", "hidden", "noise") if k in out.columns])
    return out.add_suffix(" %").reset_index()


def _ratio(a: float, b: float) -> float:
    return a / b if b else np.nan


def truth_recovery(per_gene: pd.DataFrame, truth: pd.DataFrame,
                   per_split: pd.DataFrame | None = None, oracle: pd.DataFrame | None = None) -> pd.DataFrame:
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
        non-visible genes, i.e. one split's test before the median over splits. With ``oracle``
        (:func:`label_oracle`, per set), ``n_label_predictable`` (genes whose processed labels the
        visible state predicts), ``n_called_label_only`` (called genes not planted but whose labels
        the oracle finds predictable) and ``precision_labels``: the share of called genes that are
        planted or whose processed labels are predictable, i.e. precision against what the labels
        the model was trained on really carry.
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
            visible &= m["predictable"].eq(True).to_numpy()
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
        label_pred = None
        if oracle is not None:
            o = oracle[(oracle["omics"] == omics) & (oracle["stimulus"] == stimulus)]
            label_pred = m["gene"].map(o.set_index("gene")["oracle_predictable"]).eq(True).to_numpy()
        for call, col in (("raw", "significant"), ("BH", "significant_bh")):
            called = m[col].to_numpy(bool)
            tp = int((called & visible).sum())
            fp = int((called & ~visible).sum())
            by_labels = {}
            if label_pred is not None:
                only = int((called & ~visible & label_pred).sum())
                by_labels = {"n_label_predictable": int((label_pred & tested).sum()), "n_called_label_only": only,
                             "precision_labels": _ratio(tp + only, tp + fp)}
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
                **by_labels,
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
            vis &= g["predictable"]  # read_truth_genes gives booleans
        v = g[vis]
        row = {"omics": omics, "genes": len(g), "visible": int(vis.sum())}
        if "strength" in g and len(v):
            row["loading strength"] = f"{v['strength'].min():.2f}-{v['strength'].max():.2f}"
        r2e = v["r2_expected"].to_numpy(np.float64)
        row["expected r² (25/50/75%)"] = (" / ".join(f"{x:.2f}" for x in np.quantile(r2e, [0.25, 0.5, 0.75]))
                                           if len(r2e) else "n/a")
        rows.append(row)
    return pd.DataFrame(rows)
