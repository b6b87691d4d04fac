"""Reference gene table, GO -> location mapping, planted effects, and the annotation readers."""

from __future__ import annotations

import gzip
import zipfile

import numpy as np
import pandas as pd
import pytest

from i2o_utils.analysis import annotations as ann
from i2o_utils.data import genes as G
from i2o_utils.data import planted
from i2o_utils.data.layout import LayoutError
from tests.support.tools import load_tool

D = load_tool("derive_gene_table")  # the GO -> HPA location rule of the regeneration script

HPA_HEADER = ("Gene\tGene name\tReliability\tMain location\tAdditional location\tExtracellular location\t"
              "Enhanced\tSupported\tApproved\tUncertain\tSingle-cell variation intensity\t"
              "Single-cell variation spatial\tCell cycle dependency\tGO id\n")
HPA_ROWS = [
    "ENSG00000000003\tTSPAN6\tApproved\tCell Junctions;Cytosol\t\t\t\t\tCell Junctions;Cytosol\t\t\t\t\tCytosol (GO:0005829)\n",
    "ENSG00000000457\tSCYL3\tSupported\tGolgi apparatus\t\t\t\tGolgi apparatus\t\t\t\t\t\tGolgi apparatus (GO:0005794)\n",
    "ENSG00000001036\tFUCA2\tApproved\tVesicles\t\t\t\t\tVesicles\t\t\t\t\tVesicles (GO:0043231)\n",
    "ENSG00000001084\tGCLC\tApproved\tPlasma membrane;Nucleoplasm\t\t\t\t\t\t\t\t\t\t\n",
]


def _hpa(tmp_path, rows=HPA_ROWS, zipped=False, name="subcellular_location.tsv"):
    text = HPA_HEADER + "".join(rows)
    if not zipped:
        p = tmp_path / name
        p.write_text(text)
        return p
    p = tmp_path / (name + ".zip")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr(name, text)
    return p


# --------------------------------------------------------------------------------------------
# the shipped reference table
# --------------------------------------------------------------------------------------------
def test_reference_table_is_complete_and_unique():
    t = G.load_gene_table()
    assert len(t) >= 26_317, "the paper's transcript count must fit the table"
    assert t["ensembl_gene_id"].str.match(r"^ENSG\d{11}$").all()
    assert not t["symbol"].duplicated().any() and not t["ensembl_gene_id"].duplicated().any()
    assert set(G.KNOCKOUT_POOL) <= set(t["symbol"])
    assert (G.REFERENCE_DIR / "SOURCE.md").read_text().count("CC BY 4.0") >= 1


def test_go_to_location_mapping_is_total_on_the_shipped_table():
    t = G.load_gene_table()
    has_cc = t["n_go_cc"] > 0
    # every gene with a GO CC term has a location or the explicit "other"; none without has one
    assert (t.loc[has_cc, "location"] != "").all()
    assert (t.loc[~has_cc, "location"] == "").all()
    names = set(D.HPA_LOCATION_GO) | {G.OTHER_LOCATION}
    used = {x for s in t.loc[has_cc, "location"] for x in s.split(";")}
    assert used <= names
    assert {"Plasma membrane", "Cytosol", "Nucleoplasm", "Mitochondria", "Vesicles"} <= used
    n_loc = t.loc[has_cc, "location"].str.count(";") + 1
    assert n_loc.max() <= D.MAX_MAIN_LOCATIONS
    # spot checks of well-known genes
    loc = t.set_index("symbol")["location"]
    assert "Mitochondria" in loc["SDHA"]
    assert "Plasma membrane" in loc["ITGB2"]
    assert "Nucleoplasm" in loc["STAT1"] or "Cytosol" in loc["STAT1"]


def test_assign_locations_takes_the_most_specific_and_strongest_evidence():
    under = {gid: {gid} for gids in D.HPA_LOCATION_GO.values() for gid in gids}
    under["GO:0005737"] |= {"GO:0005739", "GO:0005829", "GO:X_MITO_MATRIX"}  # cytoplasm above mito, cytosol
    under["GO:0005739"] |= {"GO:X_MITO_MATRIX"}
    # mitochondrial matrix lies under cytoplasm and mitochondrion: the more specific one wins
    assert D.assign_locations([("GO:X_MITO_MATRIX", "IDA")], under) == "Mitochondria"
    # experimental evidence beats electronic
    assert D.assign_locations([("GO:0005886", "IEA"), ("GO:0005739", "IDA")], under) == "Mitochondria"
    # same tier: all kept up to the cap, sorted
    assert D.assign_locations([("GO:0005886", "IDA"), ("GO:0005739", "IDA")], under) == "Mitochondria;Plasma membrane"
    assert D.assign_locations([("GO:9999999", "IDA")], under) == G.OTHER_LOCATION


def test_draw_screen_genes_includes_targets_and_falls_back_to_synthetic():
    rng = np.random.default_rng(0)
    small = G.load_gene_table().iloc[:50]
    inc = tuple(small["symbol"].iloc[:3])
    out = G.draw_screen_genes(60, rng, include=inc, table=small)
    assert len(out) == 60 and set(inc) <= set(out["symbol"])
    assert (out["gene_type"] == "synthetic").sum() == 10
    assert out["ensembl_gene_id"].is_unique and out["symbol"].is_unique
    with pytest.raises(ValueError, match="NOTAGENE"):
        G.draw_screen_genes(10, rng, include=("NOTAGENE",), table=small)


# --------------------------------------------------------------------------------------------
# planted effects
# --------------------------------------------------------------------------------------------
def test_planting_keeps_the_programmes_and_favours_high_propensity_genes():
    rng = np.random.default_rng(1)
    n = 4000
    prog = pd.DataFrame({"kind": rng.choice(["visible", "hidden", "noise", "low"], n, p=[.25, .15, .5, .1]),
                         "strength": rng.uniform(0.15, 0.7, n)})
    prog["w_visible_0"] = np.where(prog["kind"] == "visible", prog["strength"], 0.0)
    prop = np.zeros(n)
    prop[:1000] = 1.5  # a "location" with a positive effect
    prop[1000:2000] = -1.0
    out = planted.plant_annotation_effects(prog, prop, rng)
    # the same multiset of rows
    pd.testing.assert_frame_equal(out.sort_values(["kind", "strength"], ignore_index=True),
                                  prog.sort_values(["kind", "strength"], ignore_index=True))
    vis = out["kind"].to_numpy() == "visible"
    assert vis[:1000].mean() > 0.4 and vis[1000:2000].mean() < 0.2  # overall visible fraction 0.25
    # with no propensity the visible genes fall anywhere
    flat = planted.plant_annotation_effects(prog, np.zeros(n), np.random.default_rng(2))
    v = flat["kind"].to_numpy() == "visible"
    assert abs(v[:1000].mean() - v[1000:2000].mean()) < 0.06
    with pytest.raises(ValueError, match="propensity"):
        planted.plant_annotation_effects(prog, np.zeros(3), rng)


def test_planted_terms_and_propensity():
    genes = G.load_gene_table().iloc[:3000]
    sets = G.read_gmt(G.GO_BP_GMT)
    terms = planted.planted_terms(genes, sets, np.random.default_rng(0))
    assert set(terms["term_type"]) == {"location", "pathway"}
    pw = terms[terms["term_type"] == "pathway"]
    assert len(pw) == 2 * planted.N_PATHWAYS_EACH_WAY and (pw["n_genes"] >= planted.MIN_PATHWAY_GENES).all()
    p = planted.gene_propensity(genes, terms, sets)
    is_pm = genes["location"].str.contains("Plasma membrane").to_numpy()
    in_up = planted.membership(genes["symbol"], sets[sets["name"] == pw["term"].iloc[0]])[pw["term"].iloc[0]]
    expected = is_pm * 1.5 + in_up * pw["propensity"].iloc[0]
    only = ~genes["location"].str.contains("Vesicles|Cytosol|Nucleoplasm").to_numpy()
    others = planted.membership(genes["symbol"], sets[sets["name"].isin(pw["term"].iloc[1:])])
    for m in others.values():
        only &= ~m
    np.testing.assert_allclose(p[only], expected[only])


# --------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("zipped", [False, True])
def test_read_hpa_locations_keeps_approved_main_location(tmp_path, zipped):
    df = ann.read_hpa_locations(_hpa(tmp_path, zipped=zipped))
    assert df["symbol"].tolist() == ["TSPAN6", "FUCA2", "GCLC"]
    assert df["location"].tolist() == ["Cell Junctions;Cytosol", "Vesicles", "Plasma membrane;Nucleoplasm"]
    assert len(ann.read_hpa_locations(_hpa(tmp_path, zipped=zipped), reliability=())) == 4


def test_read_hpa_errors_name_file_and_column(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("Gene\tGene name\tMain location\nENSG00000000003\tTSPAN6\tCytosol\n")
    with pytest.raises(LayoutError, match=r"bad.tsv: missing column\(s\) \['Reliability'\]"):
        ann.read_hpa_locations(p)
    with pytest.raises(LayoutError, match=r"column 'Gene', data line 2: 'TSPAN6'"):
        ann.read_hpa_locations(_hpa(tmp_path, rows=[HPA_ROWS[0], "TSPAN6\tX\tApproved\tCytosol\n"]))
    with pytest.raises(LayoutError, match="listed twice"):
        ann.read_hpa_locations(_hpa(tmp_path, rows=[HPA_ROWS[0], HPA_ROWS[0]]))
    with pytest.raises(LayoutError, match="'Reliability' has unknown"):
        ann.read_hpa_locations(_hpa(tmp_path, rows=[HPA_ROWS[0].replace("Approved", "Great")]))
    z = tmp_path / "two.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.tsv", "x")
        zf.writestr("b.tsv", "y")
    with pytest.raises(ValueError, match="two.zip: expected one file"):
        ann.read_hpa_locations(z)


GMT = ("2-LTR circle formation\tR-HSA-164843\tBANF1\tHMGA1\tLIG4\tPSIP1\tXRCC4\tXRCC5\tXRCC6\n"
       "ABC transporter disorders\tR-HSA-5619084\tABCA1\tABCA12\tABCA3\tABCB4\n")


@pytest.mark.parametrize("form", ["plain", "zip", "gz"])
def test_read_gmt_forms(tmp_path, form):
    if form == "plain":
        p = tmp_path / "ReactomePathways.gmt"
        p.write_text(GMT)
    elif form == "zip":
        p = tmp_path / "ReactomePathways.gmt.zip"
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("ReactomePathways.gmt", GMT)
    else:
        p = tmp_path / "sets.gmt.gz"
        with gzip.open(p, "wt") as f:
            f.write(GMT)
    df = G.read_gmt(p)
    assert df["name"].tolist() == ["2-LTR circle formation", "ABC transporter disorders"]
    assert df["term_id"].tolist() == ["R-HSA-164843", "R-HSA-5619084"]
    assert df["members"].iloc[1] == ["ABCA1", "ABCA12", "ABCA3", "ABCB4"]
    assert len(G.read_gmt(p, min_size=5)) == 1


def test_read_gmt_errors_name_the_line(tmp_path):
    p = tmp_path / "bad.gmt"
    p.write_text(GMT + "lonely set\n")
    with pytest.raises(ValueError, match=r"bad.gmt, line 3: a GMT line needs"):
        G.read_gmt(p)
    p.write_text(GMT + GMT.splitlines()[0] + "\n")
    with pytest.raises(ValueError, match=r"line 3: set '2-LTR circle formation' already defined on line 1"):
        G.read_gmt(p)


def test_hgnc_mapping_and_symbol_updates(tmp_path):
    p = tmp_path / "hgnc_mapping.tsv"
    p.write_text("hgnc_id\tsymbol\tname\talias_symbol\tprev_symbol\tensembl_gene_id\n"
                 "HGNC:1\tH2AX\tH2A.X variant histone\tH2A.X\tH2AFX\tENSG00000188486\n"
                 "HGNC:2\tPRKN\tparkin\tPDJ\tPARK2\tENSG00000185345\n"
                 "HGNC:3\tSTAT1\tSTAT1\t\t\tENSG00000115415\n")
    h = ann.read_hgnc_mapping(p)
    assert ann.update_symbols(["H2AFX", "PARK2", "STAT1", "PDJ", "UNKNOWN"], h) == \
        ["H2AX", "PRKN", "STAT1", "PRKN", "UNKNOWN"]
    p.write_text("symbol\tname\nA\tx\n")
    with pytest.raises(LayoutError, match=r"hgnc_mapping.tsv: missing column\(s\) \['ensembl_gene_id'\]"):
        ann.read_hgnc_mapping(p)


def test_load_annotations_prefers_third_party_files(tmp_path):
    ref = ann.load_annotations(tmp_path / "empty")
    assert ref.pathway_kind == "GO biological-process sets" and len(ref.gene_sets) > 500
    assert "GO cellular component" in ref.source[0]
    tp = tmp_path / "root" / "third-party"
    (tp / "SubcellularLocation").mkdir(parents=True)
    (tp / "ReactomePathwayEmbedding").mkdir()
    _hpa(tp / "SubcellularLocation", zipped=True)
    with zipfile.ZipFile(tp / "ReactomePathwayEmbedding" / "ReactomePathways_23Nov2022.gmt.zip", "w") as z:
        z.writestr("ReactomePathways.gmt", GMT)
    a = ann.load_annotations(tmp_path / "root")
    assert a.pathway_kind == "Reactome pathways" and len(a.gene_sets) == 2
    assert a.location_of(pd.Series(["GCLC", "NOPE"])).tolist() == ["Plasma membrane;Nucleoplasm", ""]
    with pytest.raises(FileNotFoundError, match="hgnc"):
        ann.load_annotations(tmp_path / "root", source="third-party")


def test_simulated_screen_measures_real_genes_with_planted_effects(smoke_screen):
    import anndata as ad

    from i2o_utils.data.simulate import knockout_targets
    from i2o_utils.paths import bucket_paths

    bp = bucket_paths(smoke_screen)
    ref = G.load_gene_table().set_index("ensembl_gene_id")
    rna = ad.read_h5ad(bp["omics_raw"] / "transcriptomics.h5ad", backed="r")
    genes = pd.Index(rna.var_names)
    assert genes.isin(ref.index).all()
    assert (rna.var["symbol"].to_numpy() == ref.loc[genes, "symbol"].to_numpy()).all()
    assert set(knockout_targets(6)) <= set(rna.var["symbol"])
    prot = ad.read_h5ad(bp["omics_raw"] / "proteomics.h5ad", backed="r")
    assert set(prot.var_names) <= set(rna.var["symbol"])
    truth = pd.read_csv(bp["simulation"] / "truth_genes.csv", keep_default_na=False)
    assert {"location", "planted_propensity"} <= set(truth.columns)
    t = truth[truth["omics"] == "transcriptomics"].set_index("gene")
    assert (t.loc[genes, "location"].to_numpy() == ref.loc[genes, "location"].to_numpy()).all()
    eff = pd.read_csv(bp["simulation"] / "truth_annotation_effects.csv")
    pm = eff.set_index("term").loc["Plasma membrane", "propensity"]
    only_pm = t["location"] == "Plasma membrane"
    assert only_pm.sum() >= 3 and t.loc[only_pm, "planted_propensity"].median() == pytest.approx(pm)
    assert t.loc[t["location"] == "", "planted_propensity"].median() == 0
