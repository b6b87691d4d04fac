"""Tables 1-4 and the evaluation figures (built from small per-gene tables)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from i2o_utils.evaluation.predictions import SplitPredictions  # noqa: E402
from i2o_utils.evaluation.summaries import headline_table, predictability_fractions  # noqa: E402
from i2o_utils.evaluation.tables import (  # noqa: E402
    display_table,
    format_interval,
    paper_tables,
    table_caption,
    top_bottom_table,
)
from i2o_utils.plotting.evaluation import (  # noqa: E402
    fig2_r2_violins,
    fig3_predictability_bars,
    fig12_measured_vs_predicted,
    headline_plot,
    save_figure,
)


def per_gene_table(n=30, omics="transcriptomics", stimulus="m1", n_sig=25, seed=0):
    rng = np.random.default_rng(seed)
    r2 = np.round(rng.uniform(0, 1, n), 3)
    sig = np.zeros(n, bool)
    sig[:n_sig] = True
    return pd.DataFrame({
        "omics": omics, "stimulus": stimulus, "gene": [f"G{i}" for i in range(n)],
        "symbol": [f"S{i}" for i in range(n)], "kept": True, "reason": "",
        "category": np.where(sig, "significant", "not significant"), "significant": sig,
        "significant_bh": sig, "r2": r2, "r2_lo": r2 - 0.1, "r2_hi": r2 + 0.05,
        "smape": 10 + r2, "smape_lo": 9 + r2, "smape_hi": 11 + r2, "smape_mean_predictor": 20.0,
        "p_median": np.where(sig, 0.001, 0.5), "p_q025": np.where(sig, 0.0001, 0.3),
        "p_q975": np.where(sig, 0.01, 0.9), "q": np.where(sig, 0.01, 0.6), "n_splits": 10,
        "n_splits_tested": 10, "n_test_wells": 50.0, "n_test_wells_min": 48.0,
        "test": "mannwhitney", "alpha": 0.05, "flags": ""})


def test_format_interval_as_in_the_paper():
    assert format_interval(0.912, 0.83, 0.9449) == "0.91 (95% CI: 0.83, 0.94)"
    assert format_interval(11.234, 9.891, 11.94, percent=True) == "11.23% (95% CI: 9.89%, 11.94%)"
    assert format_interval(np.nan, 0, 1) == "n/a"


def test_top_bottom_only_significant_sorted_and_disjoint():
    pg = per_gene_table()
    t = top_bottom_table(pg, "transcriptomics", "m1", n=10)
    assert len(t) == 20 and t["gene"].is_unique
    assert set(t["gene"]) <= set(pg.loc[pg["significant"], "gene"])
    top, bottom = t[t["part"] == "top"], t[t["part"] == "bottom"]
    sig_r2 = np.sort(pg.loc[pg["significant"], "r2"])[::-1]
    np.testing.assert_allclose(top["r2"], sig_r2[:10])
    np.testing.assert_allclose(bottom["r2"], sig_r2[-10:])
    assert top["rank"].tolist() == list(range(1, 11)) and bottom["rank"].tolist() == list(range(16, 26))
    assert (t["table"] == 1).all()
    d = display_table(t)
    assert list(d.columns) == ["part", "Gene symbol", "r² (95% CI)", "SMAPE (95% CI)", "median p"]
    assert d["Gene symbol"].iloc[0].startswith("S")


def test_few_significant_genes_give_a_short_table():
    pg = per_gene_table(n_sig=13)
    t = top_bottom_table(pg, "transcriptomics", "m1", n=10)
    assert len(t) == 13 and t["gene"].is_unique
    assert (t["part"] == "bottom").sum() == 3
    assert top_bottom_table(per_gene_table(n_sig=0), "transcriptomics", "m1").empty


def test_caption_and_paper_tables_name_the_test():
    cap = table_caption("proteomics", "m2", test="wilcoxon", alpha=0.05, n_significant=7, n_splits=10)
    assert cap.startswith("Table 4") and "Wilcoxon" in cap and "10 splits" in cap
    pg = pd.concat([per_gene_table(), per_gene_table(omics="proteomics", stimulus="m2")])
    assert set(paper_tables(pg)) == {("transcriptomics", "m1"), ("proteomics", "m2")}


def _splits(pg):
    rng = np.random.default_rng(0)
    genes = pd.Index(pg["gene"].unique())
    m = rng.normal(5, 1, (12, len(genes)))
    wells = pd.DataFrame({"plate_barcode": "P", "well_id": [f"A{i + 1}" for i in range(12)],
                          "target": "NT", "fold": "test"})
    return [SplitPredictions("transcriptomics", "m1", k, wells, genes, m, m + rng.normal(0, 0.3, m.shape),
                             m.mean(0)) for k in range(2)]


def test_figures_render_and_name_the_test(tmp_path):
    pg = pd.concat([per_gene_table(), per_gene_table(omics="proteomics", stimulus="m2", seed=1)],
                   ignore_index=True)
    fr = predictability_fractions(pg)
    figs = {
        "fig2": fig2_r2_violins(pg),
        "fig3": fig3_predictability_bars(fr),
        "fig12": fig12_measured_vs_predicted(pg, {("transcriptomics", "m1"): _splits(pg)}),
        "headline": headline_plot(headline_table(fr, profile="smoke", source="simulated")),
    }
    for name, fig in figs.items():
        title = fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title()
        assert "Mann–Whitney" in title, name
        paths = save_figure(fig, tmp_path / name, formats=("png",))
        assert paths[0].stat().st_size > 1000
    # a panel without significant genes says so instead of failing
    none = per_gene_table(n_sig=0)
    fig = fig12_measured_vs_predicted(none, {("transcriptomics", "m1"): _splits(none)})
    assert "none significant" in fig.axes[0].get_title()
