"""Regenerate the compact human gene table shipped in ``i2o_utils/data/reference/``.

Run once, offline, from the SQLite files of two Bioconductor annotation packages as Debian
ships them (``apt-get download r-bioc-org.hs.eg.db r-bioc-go.db`` then ``dpkg-deb -x`` each,
or ``apt-get install`` them)::

    python tools/derive_gene_table.py \\
        --orgdb /usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite \\
        --godb /usr/lib/R/site-library/GO.db/extdata/GO.sqlite

It writes, atomically:

* ``genes.csv.gz``: one row per gene with an Ensembl id (pseudogenes and "biological-region"
  records left out): ``entrez_id, symbol, ensembl_gene_id, gene_type, location, n_go_cc``;
  ``location`` is the gene's main subcellular location(s) under the Human Protein Atlas's
  names, derived from its GO cellular-component annotations (see
  :func:`assign_locations`), ``other`` when its GO CC terms map to none of
  them, empty when it has no GO CC term;
* ``go_bp.gmt.gz``: GO biological-process gene sets in GMT form (name, GO id, symbols), the
  pathway stand-in when the authors' Reactome file is not at hand;
* ``go_cc_locations.csv``: the GO term behind every HPA location name;
* ``SOURCE.md``: sources, versions, licences and counts.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sqlite3
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from i2o_utils.data.genes import OTHER_LOCATION, REFERENCE_DIR
from i2o_utils.data.layout import atomic_path


HPA_LOCATION_GO: dict[str, tuple[str, ...]] = {
    "Actin filaments": ("GO:0015629",),            # actin cytoskeleton
    "Cell Junctions": ("GO:0030054",),             # cell junction
    "Centriolar satellite": ("GO:0034451",),       # centriolar satellite
    "Centrosome": ("GO:0005813",),                 # centrosome
    "Cytokinetic bridge": ("GO:0045171",),         # intercellular bridge
    "Cytosol": ("GO:0005829", "GO:0005737"),       # cytosol; cytoplasm not placed more finely
    "Endoplasmic reticulum": ("GO:0005783",),      # endoplasmic reticulum
    "Focal adhesion sites": ("GO:0005925",),       # focal adhesion
    "Golgi apparatus": ("GO:0005794",),            # Golgi apparatus
    "Intermediate filaments": ("GO:0045111",),     # intermediate filament cytoskeleton
    "Microtubules": ("GO:0015630",),               # microtubule cytoskeleton
    "Mitochondria": ("GO:0005739",),               # mitochondrion
    "Nuclear bodies": ("GO:0016604",),             # nuclear body
    "Nuclear membrane": ("GO:0005635",),           # nuclear envelope
    "Nuclear speckles": ("GO:0016607",),           # nuclear speck
    "Nucleoli": ("GO:0005730",),                   # nucleolus
    "Nucleoli fibrillar center": ("GO:0001650",),  # fibrillar center
    "Nucleoplasm": ("GO:0005654", "GO:0005634"),   # nucleoplasm; nucleus not placed more finely
    "Plasma membrane": ("GO:0005886",),            # plasma membrane
    "Vesicles": ("GO:0031410", "GO:0005768", "GO:0005764", "GO:0005811", "GO:0005777"),
    # cytoplasmic vesicle, endosome, lysosome, lipid droplet, peroxisome (HPA's "Vesicles")
}
"""HPA main-location names and the GO cellular-component terms (with everything under them)
that stand for each. HPA's "Nucleoli rim" has no GO counterpart and is not produced."""

EVIDENCE_TIERS: tuple[frozenset[str], ...] = (
    frozenset({"EXP", "IDA", "IPI", "IMP", "IGI", "IEP", "HTP", "HDA", "HMP", "HGI", "HEP"}),
    frozenset({"IBA", "IBD", "IKR", "IRD", "ISS", "ISO", "ISA", "ISM", "IGC", "RCA", "TAS", "NAS", "IC"}),
    frozenset({"IEA"}),
)
"""GO evidence codes from strongest (experimental) to weakest (electronic)."""

MAX_MAIN_LOCATIONS = 3


def assign_locations(annotations: Iterable[tuple[str, str]], under: dict[str, set[str]],
                     max_locations: int = MAX_MAIN_LOCATIONS) -> str:
    """A gene's main location(s), HPA names joined by ``;``, from its GO CC annotations.

    Rule: every annotated term goes to the most specific HPA location whose GO term is the term
    itself or one of its ancestors (``under[go_id]`` is the set of terms under ``go_id``, itself
    included); a location is kept only from the strongest evidence tier the gene has
    (:data:`EVIDENCE_TIERS`), at most ``max_locations`` of them, the best supported first (ties
    alphabetical, the output sorted alphabetically as HPA lists them). A gene whose terms map to
    no location gets :data:`OTHER_LOCATION`, so the mapping is total.

    Parameters
    ----------
    annotations
        ``(go_id, evidence_code)`` pairs of one gene (ND excluded by the caller).
    under
        For each GO id of :data:`HPA_LOCATION_GO`, the terms under it.
    """
    roots = [(loc, r) for loc, rs in HPA_LOCATION_GO.items() for r in rs]
    tier_of = {c: i for i, codes in enumerate(EVIDENCE_TIERS) for c in codes}
    best: dict[str, tuple[int, int]] = {}
    for term, evidence in annotations:
        hits = [(loc, r) for loc, r in roots if term in under.get(r, ())]
        # most specific: drop a hit whose GO term lies above another hit's
        hits = [(loc, r) for loc, r in hits
                if not any(r2 != r and r2 in under.get(r, ()) for _, r2 in hits)]
        tier = tier_of.get(evidence, len(EVIDENCE_TIERS))
        for loc in {loc for loc, _ in hits}:
            t, n = best.get(loc, (tier + 1, 0))
            if tier < t:
                best[loc] = (tier, 1)
            elif tier == t:
                best[loc] = (tier, n + 1)
    if not best:
        return OTHER_LOCATION
    top = min(t for t, _ in best.values())
    chosen = sorted((loc for loc, (t, _) in best.items() if t == top), key=lambda l: (-best[l][1], l))
    return ";".join(sorted(chosen[:max_locations]))

GENE_TYPES_KEPT = ("protein-coding", "ncRNA", "snoRNA", "snRNA", "rRNA", "scRNA", "other", "unknown")
BP_MIN, BP_MAX = 20, 300
"""Gene-set sizes kept (within the table's genes)."""
BP_MAX_JACCARD = 0.3
"""A set overlapping an already kept (smaller) set more than this is dropped as redundant."""


def _metadata(con: sqlite3.Connection) -> dict[str, str]:
    return dict(con.execute("select name, value from metadata").fetchall())


def read_genes(org: sqlite3.Connection) -> pd.DataFrame:
    """Entrez gene, symbol, type and one Ensembl id (the lowest, when several)."""
    df = pd.read_sql_query(
        "select g._id, g.gene_id as entrez_id, i.symbol, t.gene_type, e.ensembl_id "
        "from genes g join gene_info i using(_id) join genetype t using(_id) join ensembl e using(_id)", org)
    df = df[df["gene_type"].isin(GENE_TYPES_KEPT)]
    df = df.sort_values(["_id", "ensembl_id"]).drop_duplicates("_id")
    # an Ensembl id shared by several Entrez genes identifies none of them
    df = df[~df["ensembl_id"].duplicated(keep=False)]
    return df.rename(columns={"ensembl_id": "ensembl_gene_id"}).reset_index(drop=True)


def offspring(go: sqlite3.Connection, go_ids: list[str], ontology: str = "cc") -> dict[str, set[str]]:
    """Every GO term under each of ``go_ids`` (the term itself included)."""
    out = {}
    for gid in go_ids:
        rows = go.execute(
            f"select o.go_id from go_term t join go_{ontology}_offspring x on x._id = t._id "
            f"join go_term o on o._id = x._offspring_id where t.go_id = ?", (gid,)).fetchall()
        out[gid] = {gid} | {r[0] for r in rows}
    return out


def derive_locations(org: sqlite3.Connection, go: sqlite3.Connection, genes: pd.DataFrame) -> pd.DataFrame:
    """``_id, location, n_go_cc`` from the direct GO CC annotations of each gene."""
    roots = sorted({g for gids in HPA_LOCATION_GO.values() for g in gids})
    under = offspring(go, roots)
    ann = pd.read_sql_query("select _id, go_id, evidence from go_cc where evidence != 'ND'", org)
    ann = ann[ann["_id"].isin(set(genes["_id"]))]
    rows = []
    for gid, g in ann.groupby("_id", sort=False):
        rows.append((gid, assign_locations(zip(g["go_id"], g["evidence"]), under), g["go_id"].nunique()))
    loc = pd.DataFrame(rows, columns=["_id", "location", "n_go_cc"])
    return genes[["_id"]].merge(loc, on="_id", how="left").fillna({"location": "", "n_go_cc": 0})


def derive_bp_sets(org: sqlite3.Connection, go: sqlite3.Connection, genes: pd.DataFrame) -> pd.DataFrame:
    """GO BP sets (propagated to ancestors) of 15-500 table genes, pruned of near-duplicates."""
    ann = pd.read_sql_query("select distinct _id, go_id from go_bp_all where evidence != 'ND'", org)
    ann = ann[ann["_id"].isin(set(genes["_id"]))]
    size = ann.groupby("go_id").size()
    keep = size[(size >= BP_MIN) & (size <= BP_MAX)].index
    ann = ann[ann["go_id"].isin(keep)]
    terms = np.array(sorted(keep, key=lambda t: (size[t], t)))  # smallest (most specific) first
    t_idx = {t: i for i, t in enumerate(terms)}
    g_ids = np.array(sorted(genes["_id"]))
    g_idx = {g: i for i, g in enumerate(g_ids)}
    m = sparse.csr_matrix((np.ones(len(ann), np.float32),
                           ([t_idx[t] for t in ann["go_id"]], [g_idx[g] for g in ann["_id"]])),
                          shape=(len(terms), len(g_ids)))
    inter = (m @ m.T).tocsr()
    sizes = np.asarray(m.sum(axis=1)).ravel()
    kept: list[int] = []
    kept_mask = np.zeros(len(terms), bool)
    for i in range(len(terms)):
        row = inter.getrow(i)
        j, v = row.indices, row.data
        sel = kept_mask[j]
        if sel.any():
            jac = v[sel] / (sizes[i] + sizes[j[sel]] - v[sel])
            if jac.max() > BP_MAX_JACCARD:
                continue
        kept.append(i)
        kept_mask[i] = True
    names = dict(go.execute("select go_id, term from go_term where ontology = 'BP'").fetchall())
    sym = genes.set_index("_id")["symbol"]
    ann = ann[ann["go_id"].isin(set(terms[kept]))]
    members = ann.groupby("go_id")["_id"].apply(lambda s: sorted(sym[s].tolist()))
    out = pd.DataFrame({"go_id": terms[kept]})
    out["name"] = [names.get(t, t) for t in out["go_id"]]
    out["members"] = [members[t] for t in out["go_id"]]
    return out.sort_values("name", ignore_index=True)


def _write_gz(path: Path, text: str) -> None:
    """Gzip without file name or time stamp in the header: byte-identical on regeneration."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
            f.write(text.encode())


def write_outputs(out_dir: Path, genes: pd.DataFrame, bp: pd.DataFrame, under_terms: pd.DataFrame,
                  org_meta: dict, go_meta: dict, versions: dict[str, str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = genes[["entrez_id", "symbol", "ensembl_gene_id", "gene_type", "location", "n_go_cc"]].copy()
    table["n_go_cc"] = table["n_go_cc"].astype(int)
    table = table.sort_values("ensembl_gene_id", ignore_index=True)
    _write_gz(out_dir / "genes.csv.gz", table.to_csv(index=False))
    buf = io.StringIO()
    for r in bp.itertuples(index=False):
        buf.write("\t".join([r.name, r.go_id, *r.members]) + "\n")
    _write_gz(out_dir / "go_bp.gmt.gz", buf.getvalue())
    with atomic_path(out_dir / "go_cc_locations.csv") as tmp:
        under_terms.to_csv(tmp, index=False)
    loc_counts = Counter(x for s in table["location"] for x in s.split(";") if x)
    types = table["gene_type"].value_counts()
    lines = [
        "# Reference gene table: sources, versions, licences",
        "",
        "Derived once, offline, by `python tools/derive_gene_table.py` (see its docstring)",
        "from the SQLite files of two Bioconductor annotation packages as shipped by Debian 12:",
        "",
        f"* `r-bioc-org.hs.eg.db` {versions.get('orgdb', '?')} (org.Hs.eg.db; package licence Artistic-2.0):",
        f"  NCBI Entrez Gene {org_meta.get('EGSOURCEDATE')} (public domain), Ensembl gene ids",
        f"  {org_meta.get('ENSOURCEDATE')} (no restrictions), GO annotations {org_meta.get('GOEGSOURCEDATE')}.",
        f"* `r-bioc-go.db` {versions.get('godb', '?')} (GO.db; package licence Artistic-2.0): the Gene Ontology",
        f"  {go_meta.get('GOSOURCEDATE')} (go-basic.obo) for term names and the term hierarchy.",
        "",
        "The Gene Ontology and its annotations are licensed CC BY 4.0 (http://geneontology.org/docs/go-licenses/);",
        "cite: Gene Ontology Consortium, Nucleic Acids Res. 2023;51:D1.",
        "KEGG, also in org.Hs.eg.db, is not used (its licence forbids redistribution).",
        "",
        "## Files",
        "",
        f"* `genes.csv.gz`: {len(table):,} genes with an Ensembl id ({', '.join(f'{k} {v:,}' for k, v in types.items())});",
        "  pseudogenes are left out. `location`: HPA main-location names from GO cellular component",
        "  (mapping in `go_cc_locations.csv`, rule in `assign_locations` of `tools/derive_gene_table.py`);",
        f"  {int((table['location'] != '').sum()):,} genes have a GO CC term, "
        f"{int((table['location'] == 'other').sum()):,} of them map to no HPA location (`other`).",
        f"* `go_bp.gmt.gz`: {len(bp):,} GO biological-process sets of {BP_MIN}-{BP_MAX} table genes",
        "  (annotations propagated to ancestor terms; a set overlapping a smaller kept set with",
        f"  Jaccard > {BP_MAX_JACCARD} is dropped as redundant).",
        "",
        "## How GO cellular component becomes an HPA location",
        "",
        "Each HPA main-location name stands for one or more GO CC terms and everything under them",
        "(`go_cc_locations.csv`; e.g. Vesicles = cytoplasmic vesicle, endosome, lysosome, lipid droplet,",
        "peroxisome; Nucleoplasm also takes bare `nucleus`, Cytosol bare `cytoplasm`). Every direct GO CC",
        "annotation of a gene (evidence ND excluded) goes to the most specific location above it; the",
        "gene keeps the locations supported by its strongest evidence tier (experimental > curated /",
        "phylogenetic > electronic), at most three, the best supported first. A gene whose terms reach",
        "no location is `other` (e.g. only extracellular terms); a gene without GO CC term has none.",
        "HPA's 'Nucleoli rim' has no GO counterpart and is never produced.",
        "",
        "## Genes per location",
        "",
        *[f"* {k}: {v:,}" for k, v in sorted(loc_counts.items(), key=lambda kv: -kv[1])],
        "",
    ]
    (out_dir / "SOURCE.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orgdb", required=True, type=Path, help="org.Hs.eg.sqlite")
    ap.add_argument("--godb", required=True, type=Path, help="GO.sqlite")
    ap.add_argument("--out", type=Path, default=REFERENCE_DIR)
    ap.add_argument("--orgdb-version", default="3.16.0-1", help="Debian package version (for SOURCE.md)")
    ap.add_argument("--godb-version", default="3.16.0-1")
    a = ap.parse_args(argv)
    for p in (a.orgdb, a.godb):
        if not p.exists():
            raise SystemExit(f"{p}: no such file")
    org, go = sqlite3.connect(a.orgdb), sqlite3.connect(a.godb)
    genes = read_genes(org)
    genes = genes.merge(derive_locations(org, go, genes), on="_id")
    bp = derive_bp_sets(org, go, genes)
    names = dict(go.execute("select go_id, term from go_term").fetchall())
    under_terms = pd.DataFrame([(loc, gid, names.get(gid, "")) for loc, gids in HPA_LOCATION_GO.items()
                                for gid in gids], columns=["location", "go_id", "go_term"])
    write_outputs(a.out, genes, bp, under_terms, _metadata(org), _metadata(go),
                  {"orgdb": a.orgdb_version, "godb": a.godb_version})
    print(f"wrote {a.out}: {len(genes):,} genes, {len(bp):,} GO BP sets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
