"""Gene annotations for the analyses of notebook 60: subcellular location and pathway membership.

Two sources, one interface (:class:`Annotations`, from :func:`load_annotations`):

* the authors' third-party files, when a data root holds them (``third-party/`` of their bucket):
  the Human Protein Atlas's ``subcellular_location.tsv(.zip)`` (rows with Reliability
  "Approved", column "Main location", as their code keeps), Reactome's ``ReactomePathways*.gmt(.zip)``
  and the HGNC table ``hgnc_mapping.tsv`` (Ensembl id -> current symbol, outdated symbols renamed);
* otherwise the reference table shipped with the package (:mod:`i2o_utils.data.genes`): locations
  under HPA's names derived from GO cellular component, and GO biological-process gene sets as the
  pathway stand-in (sources, versions and licences in ``i2o_utils/data/reference/SOURCE.md``).

Every reader names the file and the column (or line) at fault when a file does not have the
expected form.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from i2o_utils.data.genes import GO_BP_GMT, GENE_TABLE, _open_text, load_gene_table, read_gmt
from i2o_utils.data.layout import LayoutError

__all__ = ["HPA_COLUMNS", "HGNC_COLUMNS", "Annotations", "read_hpa_locations", "read_gmt",
           "read_hgnc_mapping", "update_symbols", "find_third_party", "load_annotations",
           "split_locations"]

HPA_COLUMNS = ("Gene", "Gene name", "Reliability", "Main location")
HGNC_COLUMNS = ("symbol", "ensembl_gene_id")
HPA_RELIABILITY = ("Enhanced", "Supported", "Approved", "Uncertain")


def _read_table(path: Path, required: tuple[str, ...], what: str, sep: str = "\t") -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with _open_text(path) as f:
            df = pd.read_csv(f, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise LayoutError(f"{path}: not a readable {what} table ({e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise LayoutError(f"{path}: missing column(s) {missing} of the {what} table; "
                          f"found {list(df.columns)[:12]}")
    return df


def read_hpa_locations(path: str | os.PathLike, reliability: tuple[str, ...] = ("Approved",)) -> pd.DataFrame:
    """The Human Protein Atlas's ``subcellular_location.tsv`` (plain or ``.zip``).

    Parameters
    ----------
    path
        The file as the HPA distributes it (tab-separated, columns "Gene" = Ensembl gene id,
        "Gene name", "Reliability", "Main location" = locations joined by ``;``, ...).
    reliability
        Reliability levels kept (the authors kept "Approved" only; ``()`` keeps all).

    Returns
    -------
    pandas.DataFrame
        ``ensembl_gene_id, symbol, reliability, location`` (``location`` as "Main location").

    Raises
    ------
    LayoutError
        Missing column, a "Gene" value that is not an Ensembl gene id, an unknown reliability
        level, or a gene listed twice; the message names the file, column and data line.
    """
    path = Path(path)
    df = _read_table(path, HPA_COLUMNS, "HPA subcellular location")
    bad = ~df["Gene"].str.match(r"^ENSG\d{11}$")
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise LayoutError(f"{path}: column 'Gene', data line {i + 1}: {df['Gene'].iloc[i]!r} is not an "
                          "Ensembl gene id (ENSG + 11 digits)")
    unknown = sorted(set(df["Reliability"]) - set(HPA_RELIABILITY))
    if unknown:
        raise LayoutError(f"{path}: column 'Reliability' has unknown value(s) {unknown}; "
                          f"expected {HPA_RELIABILITY}")
    dup = df["Gene"].duplicated()
    if dup.any():
        i = int(dup.to_numpy().argmax())
        raise LayoutError(f"{path}: column 'Gene', data line {i + 1}: {df['Gene'].iloc[i]} is listed twice")
    if reliability:
        df = df[df["Reliability"].isin(reliability)]
    out = pd.DataFrame({"ensembl_gene_id": df["Gene"], "symbol": df["Gene name"],
                        "reliability": df["Reliability"],
                        "location": df["Main location"].str.strip()})
    return out[out["location"] != ""].reset_index(drop=True)


def read_hgnc_mapping(path: str | os.PathLike) -> pd.DataFrame:
    """HGNC's gene table (``hgnc_mapping.tsv``: tab-separated, at least ``symbol`` and
    ``ensembl_gene_id``; ``prev_symbol`` and ``alias_symbol`` (``|``-joined) used when present).

    Raises
    ------
    LayoutError
        Missing column or a symbol listed twice (file and line named).
    """
    path = Path(path)
    df = _read_table(path, HGNC_COLUMNS, "HGNC")
    dup = df["symbol"].duplicated() & (df["symbol"] != "")
    if dup.any():
        i = int(dup.to_numpy().argmax())
        raise LayoutError(f"{path}: column 'symbol', data line {i + 1}: {df['symbol'].iloc[i]!r} is listed twice")
    keep = [c for c in ("symbol", "ensembl_gene_id", "prev_symbol", "alias_symbol") if c in df.columns]
    return df[keep].reset_index(drop=True)


def update_symbols(symbols: list[str], hgnc: pd.DataFrame) -> list[str]:
    """Current HGNC symbols for possibly outdated ones (the authors' rule): a current symbol stays;
    else the symbol whose ``prev_symbol`` lists it; else the one whose ``alias_symbol`` lists it
    (the first, if several); else unchanged."""
    current = set(hgnc["symbol"])
    renames: dict[str, str] = {}
    for col in ("alias_symbol", "prev_symbol"):  # prev_symbol last: it wins over an alias
        if col not in hgnc.columns:
            continue
        lookup: dict[str, str] = {}
        for sym, olds in zip(hgnc["symbol"], hgnc[col]):
            for old in filter(None, (o.strip() for o in str(olds).split("|"))):
                lookup.setdefault(old, sym)
        renames.update(lookup)
    return [s if s in current else renames.get(s, s) for s in symbols]


def split_locations(location: pd.Series) -> pd.Series:
    """``"A;B"`` -> ``["A", "B"]`` (empty or missing -> ``[]``)."""
    return location.fillna("").map(lambda s: [x.strip() for x in s.split(";") if x.strip()])


@dataclass
class Annotations:
    """Locations and gene sets keyed by gene symbol, with where they came from.

    ``locations``: ``symbol, ensembl_gene_id, location`` (HPA names joined by ``;``).
    ``gene_sets``: ``name, term_id, members`` (symbols). ``source``: one line per file read,
    with version and licence.
    """

    locations: pd.DataFrame
    gene_sets: pd.DataFrame
    pathway_kind: str
    source: list[str]

    def location_of(self, genes: pd.Series, by: str = "symbol") -> pd.Series:
        """Location string of each gene (by ``symbol`` or ``ensembl_gene_id``); ``""`` if unknown."""
        m = self.locations.drop_duplicates(by).set_index(by)["location"]
        return genes.map(m).fillna("")


def find_third_party(root: str | os.PathLike | None = None) -> dict[str, Path | None]:
    """The authors' annotation files under ``<root>/third-party`` (``None`` for each one absent)."""
    from i2o_utils.paths import bucket_paths

    tp = bucket_paths(Path(root) if root is not None else None)["third_party"]

    def first(patterns):
        for pat in patterns:
            hits = sorted(tp.glob(pat)) if tp.exists() else []
            if hits:
                return hits[-1]
        return None

    return {
        "hpa": first(["SubcellularLocation/subcellular_location.tsv.zip", "SubcellularLocation/subcellular_location.tsv",
                      "subcellular_location.tsv.zip", "subcellular_location.tsv"]),
        "reactome": first(["ReactomePathwayEmbedding/ReactomePathways*.gmt.zip",
                           "ReactomePathwayEmbedding/ReactomePathways*.gmt", "ReactomePathways*.gmt*"]),
        "hgnc": first(["HGNCNames/hgnc_mapping.tsv", "hgnc_mapping.tsv"]),
    }


def load_annotations(root: str | os.PathLike | None = None, source: str = "auto") -> Annotations:
    """Locations and pathways for the analyses.

    Parameters
    ----------
    root
        Data root to look for the authors' ``third-party/`` files in (default: the data root).
    source
        ``"auto"``: the authors' files where present (HPA for locations, Reactome for pathways),
        the shipped GO-derived table for what is missing; ``"reference"``: the shipped table only;
        ``"third-party"``: the authors' files, an error if one is missing.
    """
    if source not in ("auto", "reference", "third-party"):
        raise ValueError(f"source must be 'auto', 'reference' or 'third-party', got {source!r}")
    found = find_third_party(root) if source != "reference" else {"hpa": None, "reactome": None, "hgnc": None}
    if source == "third-party":
        missing = [k for k, v in found.items() if v is None]
        if missing:
            raise FileNotFoundError(f"third-party file(s) {missing} not found under the data root's third-party/")
    ref = load_gene_table()
    lines = []
    hgnc = read_hgnc_mapping(found["hgnc"]) if found["hgnc"] else None
    if hgnc is not None:
        lines.append(f"HGNC symbols: {found['hgnc']} (HGNC, free to use)")
    if found["hpa"]:
        hpa = read_hpa_locations(found["hpa"])
        if hgnc is not None:
            sym = hgnc[hgnc["ensembl_gene_id"] != ""].drop_duplicates("ensembl_gene_id").set_index("ensembl_gene_id")["symbol"]
            hpa["symbol"] = hpa["ensembl_gene_id"].map(sym).fillna(hpa["symbol"])
        locations = hpa[["symbol", "ensembl_gene_id", "location"]]
        lines.append(f"locations: Human Protein Atlas {found['hpa'].name}, Reliability 'Approved', "
                     "'Main location' (CC BY-SA 4.0)")
    else:
        locations = ref[["symbol", "ensembl_gene_id", "location"]]
        locations = locations[locations["location"] != ""]
        lines.append(f"locations: GO cellular component mapped onto HPA main-location names "
                     f"({GENE_TABLE.name}; GO 2022-07-01, annotations 2022-Sep12, CC BY 4.0)")
    if found["reactome"]:
        sets = read_gmt(found["reactome"])
        if hgnc is not None:
            sets["members"] = [list(dict.fromkeys(update_symbols(m, hgnc))) for m in sets["members"]]
        kind = "Reactome pathways"
        lines.append(f"pathways: Reactome {found['reactome'].name} (CC BY 4.0)")
    else:
        sets = read_gmt(GO_BP_GMT)
        kind = "GO biological-process sets"
        lines.append(f"pathways: GO biological-process sets ({GO_BP_GMT.name}, {len(sets):,} sets of "
                     "20-300 genes; GO 2022-07-01, CC BY 4.0)")
    return Annotations(locations.reset_index(drop=True), sets, kind, lines)
