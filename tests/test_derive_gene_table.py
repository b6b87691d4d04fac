"""The regeneration script of the reference table, on miniature org.Hs.eg.db / GO.db SQLite files."""

from __future__ import annotations

import sqlite3

import pandas as pd

from i2o_utils.data.genes import OTHER_LOCATION, read_gmt
from tests.support.tools import load_tool

D = load_tool("derive_gene_table")


def _orgdb(path):
    c = sqlite3.connect(path)
    c.executescript("""
        create table metadata (name text, value text);
        insert into metadata values ('EGSOURCEDATE', '2022-Sep12'), ('ENSOURCEDATE', '2022-Jun28'),
                                    ('GOEGSOURCEDATE', '2022-Sep12');
        create table genes (_id integer, gene_id text);
        create table gene_info (_id integer, gene_name text, symbol text);
        create table genetype (_id integer, gene_type text);
        create table ensembl (_id integer, ensembl_id text);
        create table go_cc (_id integer, go_id text, evidence text);
        create table go_bp_all (_id integer, go_id text, evidence text);
    """)
    genes = [(1, "6772", "STAT1", "protein-coding", "ENSG00000115415"),
             (2, "6470", "SDHA", "protein-coding", "ENSG00000073578"),
             (3, "100", "PSEUDO1", "pseudo", "ENSG00000000001"),
             (4, "200", "TWOENS", "protein-coding", "ENSG00000000003"),
             (5, "300", "NOCC", "ncRNA", "ENSG00000000005")]
    for i, eg, sym, typ, ens in genes:
        c.execute("insert into genes values (?, ?)", (i, eg))
        c.execute("insert into gene_info values (?, ?, ?)", (i, sym, sym))
        c.execute("insert into genetype values (?, ?)", (i, typ))
        c.execute("insert into ensembl values (?, ?)", (i, ens))
    c.execute("insert into ensembl values (4, 'ENSG00000000009')")  # a second id: the lowest is kept
    c.executemany("insert into go_cc values (?, ?, ?)", [
        (1, "GO:0005829", "IDA"), (1, "GO:0005654", "IDA"), (1, "GO:0005886", "IEA"),
        (2, "GO:X_MATRIX", "IDA"), (4, "GO:X_ELSEWHERE", "TAS"), (3, "GO:0005829", "IDA")])
    # a BP set big enough to keep only with the thresholds lowered below
    c.executemany("insert into go_bp_all values (?, ?, ?)",
                  [(1, "GO:BP1", "IDA"), (2, "GO:BP1", "IEA"), (4, "GO:BP1", "IDA"),
                   (1, "GO:BP2", "IDA"), (2, "GO:BP2", "IDA"), (4, "GO:BP2", "IDA"), (5, "GO:BP2", "ND")])
    c.commit()
    return c


def _godb(path):
    c = sqlite3.connect(path)
    c.executescript("""
        create table metadata (name text, value text);
        insert into metadata values ('GOSOURCEDATE', '2022-07-01');
        create table go_term (_id integer, go_id text, term text, ontology text);
        create table go_cc_offspring (_id integer, _offspring_id integer);
    """)
    terms = [(1, "GO:0005829", "cytosol", "CC"), (2, "GO:0005654", "nucleoplasm", "CC"),
             (3, "GO:0005886", "plasma membrane", "CC"), (4, "GO:0005739", "mitochondrion", "CC"),
             (5, "GO:X_MATRIX", "mitochondrial matrix", "CC"), (6, "GO:0005737", "cytoplasm", "CC"),
             (7, "GO:X_ELSEWHERE", "somewhere", "CC"), (8, "GO:BP1", "process one", "BP"),
             (9, "GO:BP2", "process two", "BP")]
    c.executemany("insert into go_term values (?, ?, ?, ?)", terms)
    # cytoplasm above mitochondrion above matrix, and above cytosol
    c.executemany("insert into go_cc_offspring values (?, ?)", [(6, 4), (6, 5), (6, 1), (4, 5)])
    c.commit()
    return c


def test_derivation_on_a_miniature_database(tmp_path, monkeypatch):
    org, go = _orgdb(tmp_path / "org.sqlite"), _godb(tmp_path / "go.sqlite")
    genes = D.read_genes(org)
    assert genes["symbol"].tolist() == ["STAT1", "SDHA", "TWOENS", "NOCC"]  # pseudogene left out
    assert genes.set_index("symbol").loc["TWOENS", "ensembl_gene_id"] == "ENSG00000000003"
    loc = genes.merge(D.derive_locations(org, go, genes), on="_id").set_index("symbol")
    assert loc.loc["STAT1", "location"] == "Cytosol;Nucleoplasm"  # IDA beats the IEA plasma membrane
    assert loc.loc["SDHA", "location"] == "Mitochondria"           # matrix -> most specific: mitochondrion
    assert loc.loc["TWOENS", "location"] == OTHER_LOCATION
    assert loc.loc["NOCC", "location"] == "" and loc.loc["NOCC", "n_go_cc"] == 0
    monkeypatch.setattr(D, "BP_MIN", 3)
    bp = D.derive_bp_sets(org, go, genes.merge(D.derive_locations(org, go, genes), on="_id"))
    # BP1 and BP2 have the same three genes (NOCC's ND annotation does not count): one is kept
    assert len(bp) == 1 and sorted(bp["members"].iloc[0]) == ["SDHA", "STAT1", "TWOENS"]
    out = tmp_path / "ref"
    assert D.main(["--orgdb", str(tmp_path / "org.sqlite"), "--godb", str(tmp_path / "go.sqlite"),
                   "--out", str(out)]) == 0
    table = pd.read_csv(out / "genes.csv.gz", keep_default_na=False)
    assert table["symbol"].tolist() == ["TWOENS", "NOCC", "SDHA", "STAT1"]  # sorted by Ensembl id
    assert read_gmt(out / "go_bp.gmt.gz")["term_id"].str.startswith("GO:BP").all()
    assert "CC BY 4.0" in (out / "SOURCE.md").read_text()
    first = (out / "genes.csv.gz").read_bytes()
    D.main(["--orgdb", str(tmp_path / "org.sqlite"), "--godb", str(tmp_path / "go.sqlite"), "--out", str(out)])
    assert (out / "genes.csv.gz").read_bytes() == first  # byte-identical on regeneration
