"""Localisation and pathway regression (Figs 4 and 5): design, OLS against statsmodels, tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from i2o_utils.analysis import localisation as L


def _fixture(n=600, seed=0):
    """Genes with known location and pathway effects on r2."""
    rng = np.random.default_rng(seed)
    locs = rng.choice(["Plasma membrane", "Cytosol", "Nucleoplasm", "Mitochondria", "Cytosol;Nucleoplasm", ""],
                      n, p=[.2, .25, .2, .1, .15, .1])
    sym = [f"G{i}" for i in range(n)]
    sets = pd.DataFrame({"name": ["up set", "down set", "tiny set", "copy of up"], "term_id": ["a", "b", "c", "d"],
                         "members": [sym[:150], sym[100:300], sym[:5], sym[:150]]})
    ab = rng.normal(8, 2, n)
    sc = (ab - ab.min()) / (ab.max() - ab.min())
    truth = {"const": 0.1, "Plasma membrane": 0.2, "Cytosol": -0.05, "Nucleoplasm": 0.0, "Mitochondria": 0.1,
             "up set": 0.15, "down set": -0.1, L.ABUNDANCE_TERM: 0.3}
    y = (truth["const"] + sum(truth[k] * np.array([k in l.split(";") for l in locs]) for k in
                              ("Plasma membrane", "Cytosol", "Nucleoplasm", "Mitochondria"))
         + truth["up set"] * (np.arange(n) < 150) + truth["down set"] * ((np.arange(n) >= 100) & (np.arange(n) < 300))
         + truth[L.ABUNDANCE_TERM] * sc + rng.normal(0, 0.005, n))
    table = pd.DataFrame({"omics": "proteomics", "stimulus": "m1", "gene": sym, "symbol": sym, "r2": y,
                          "mean_abundance": ab, "location": locs})
    return table, sets, truth


def test_design_has_multi_hot_locations_pathways_and_scaled_abundance():
    table, sets, _ = _fixture()
    d = L.design_matrix(table, sets)
    X = d.to_frame()
    assert list(X.columns) == ["Cytosol", "Mitochondria", "Nucleoplasm", "Plasma membrane", "up set", "down set",
                               L.ABUNDANCE_TERM]
    both = (table["location"] == "Cytosol;Nucleoplasm").to_numpy()
    assert (X.loc[both, ["Cytosol", "Nucleoplasm"]] == 1).all().all()
    assert X[L.ABUNDANCE_TERM].min() == 0 and X[L.ABUNDANCE_TERM].max() == 1
    dup = d.terms.set_index("term")["duplicate_of"]
    assert dup["copy of up"] == "up set" and "tiny set" not in dup.index  # 5 members: not > 10


@pytest.mark.parametrize("method", ["gram", "statsmodels"])
def test_ols_recovers_known_coefficients(method):
    table, sets, truth = _fixture()
    res = L.fit_ols(L.design_matrix(table, sets), table["r2"].to_numpy(), method=method)
    beta = res.coefs.set_index("term")["beta"]
    for k, v in truth.items():
        assert beta[k] == pytest.approx(v, abs=0.01), k
    c = res.coefs.set_index("term")
    assert c.loc["Plasma membrane", "significant"] and not c.loc["Nucleoplasm", "significant"]
    assert (c["ci_low"] <= c["beta"]).all() and (c["beta"] <= c["ci_high"]).all()


def test_gram_fit_equals_statsmodels_including_collinear_terms():
    table, sets, _ = _fixture(n=300, seed=3)
    # a pathway equal to the union of two disjoint ones makes the design rank-deficient
    sets = pd.concat([sets, pd.DataFrame({"name": ["A", "B", "A or B"], "term_id": ["x", "y", "z"],
                                          "members": [list(table["symbol"][200:230]), list(table["symbol"][230:260]),
                                                      list(table["symbol"][200:260])]})], ignore_index=True)
    table.loc[5, "r2"] = np.nan  # left out by both
    for s in (sets.iloc[:4], sets):
        d = L.design_matrix(table, s)
        a = L.fit_ols(d, table["r2"].to_numpy(), method="gram").coefs.set_index("term")
        b = L.fit_ols(d, table["r2"].to_numpy(), method="statsmodels").coefs.set_index("term")
        for col in ("beta", "ci_low", "ci_high", "pvalue"):
            np.testing.assert_allclose(a[col], b[col], rtol=1e-6, atol=1e-9, err_msg=col)
    with pytest.raises(ValueError, match="method"):
        L.fit_ols(d, table["r2"].to_numpy(), method="lstsq")


def test_forest_terms_and_top_locations():
    table, sets, _ = _fixture()
    coefs = L.regress_predictability(table, sets)
    f = L.forest_terms(coefs[(coefs["omics"] == "proteomics")])
    assert f["section"].tolist()[-1] == "abundance"
    pw = f[f["section"] == "pathway"]
    assert pw["term"].tolist() == ["up set", "down set"]
    assert set(f.loc[f["section"] == "location", "term"]) == {"Plasma membrane", "Cytosol", "Mitochondria"}
    top = L.top_locations(table, k=3)
    assert len(top) == 3 and top["mean_r2"].is_monotonic_increasing
    assert top["location"].iloc[-1] == "Plasma membrane"
    # a gene with two locations counts in both
    long = L.location_long(table)
    assert (long["gene"] == table.loc[table["location"] == "Cytosol;Nucleoplasm", "gene"].iloc[0]).sum() == 2


def test_planted_vs_recovered():
    table, sets, truth = _fixture()
    rng = np.random.default_rng(5)
    measured = table.assign(r2=table["r2"] + rng.normal(0, 0.05, len(table)))
    planted = pd.DataFrame({"term_type": ["location", "pathway", "pathway"],
                            "term": ["Plasma membrane", "up set", "absent set"], "propensity": [1.5, 1.5, -1.5]})
    out = L.planted_vs_recovered(L.regress_predictability(measured, sets), L.regress_predictability(table, sets),
                                 planted)
    o = out.set_index("term")
    assert o.loc["Plasma membrane", "beta_planted"] == pytest.approx(truth["Plasma membrane"], abs=0.01)
    assert o.loc["Plasma membrane", "covered"] and o.loc["up set", "same_sign"]
    assert np.isnan(o.loc["absent set", "beta_recovered"])


def test_predictability_table_uses_split0_and_matches_locations():
    per_gene = pd.DataFrame({"omics": "transcriptomics", "stimulus": "m1", "gene": ["ENSG00000115415", "ENSG1"],
                             "symbol": ["STAT1", None], "kept": True, "r2": [0.9, 0.1]})
    per_split = pd.DataFrame({"omics": "transcriptomics", "stimulus": "m1", "split": [0, 0, 1, 1],
                              "gene": ["ENSG00000115415", "ENSG1"] * 2, "r2": [0.5, 0.2, 0.7, 0.0]})

    class A:
        @staticmethod
        def location_of(genes, by):
            assert by == "ensembl_gene_id"
            return genes.map({"ENSG00000115415": "Cytosol;Nucleoplasm"}).fillna("")

    tm = {("transcriptomics", "m1"): pd.Series({"ENSG00000115415": 7.0, "ENSG1": 3.0})}
    t = L.predictability_table(per_gene, per_split, A, tm)
    assert t["r2"].tolist() == [0.5, 0.2] and t["location"].tolist() == ["Cytosol;Nucleoplasm", ""]
    assert t["symbol"].tolist() == ["STAT1", "ENSG1"] and t["mean_abundance"].tolist() == [7.0, 3.0]
    assert L.predictability_table(per_gene, None, A, tm, r2_from="median")["r2"].tolist() == [0.9, 0.1]
    with pytest.raises(ValueError, match="split0"):
        L.predictability_table(per_gene, None, A, tm)
