"""Human genes for the simulated screen, with real identifiers and annotations.

The simulated screen measures real human genes, drawn from a compact reference table shipped in
``i2o_utils/data/reference/`` (derived once from Bioconductor's org.Hs.eg.db and GO.db as Debian
packages them; ``tools/derive_gene_table.py`` regenerates it and ``SOURCE.md`` there
states sources, versions and licences). Each gene carries its NCBI Entrez id, symbol, Ensembl
gene id, gene type, a subcellular location under the Human Protein Atlas's main-location names
(derived from GO cellular component by the regeneration script) and its GO biological-process
gene sets (``go_bp.gmt.gz``), so that the analyses of localisation and pathways have real
groupings to work on with no network.

Transcripts are identified by Ensembl gene id, proteins by symbol, as in the authors' tables.
The knock-out targets are real macrophage-biology genes (STAT1 and STAT6 first, the paper's M1-
and M2-reverting controls). A screen asking for more genes than the table holds (27,396 genes;
the paper's 26,317 transcripts fit) gets the rest as clearly synthetic genes (symbols ``SIMG*``,
no annotation), see :func:`draw_screen_genes`.
"""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from i2o_utils.data.layout import require_columns

KNOCKOUT_POOL: tuple[str, ...] = (
    "STAT1", "STAT6", "IRF1", "IRF5", "IRF8", "NFKB1", "RELA", "TLR4", "MYD88", "TNF", "IL6",
    "IL10", "JAK1", "JAK2", "TYK2", "SOCS1", "SOCS3", "CEBPB", "PPARG", "KLF4", "SPI1", "MAFB",
    "IFNGR1", "IFNGR2", "IL4R", "IL13RA1", "STAT3", "STAT5A", "STAT2", "IRF4", "IRF3", "IRF7",
    "TRAF6", "IRAK4", "IKBKB", "CHUK", "MAP3K7", "MAPK14", "MAPK1", "MAPK3", "NOS2", "ARG1",
    "MRC1", "CD163", "CD86", "CD80", "CD14", "FCGR1A", "CSF1R", "CSF2RA", "TGFBR1", "TGFBR2",
    "SMAD3", "HIF1A", "MTOR", "RPTOR", "RICTOR", "AKT1", "PIK3CD", "PTEN", "NLRP3", "CASP1",
    "PYCARD", "GSDMD", "IL1B", "IL18", "CCL2", "CXCL10", "PTGS2", "HMOX1", "NFE2L2", "KEAP1",
    "SQSTM1", "ATG5", "ATG7", "BECN1", "ULK1", "TFEB", "LAMP1", "CTSB", "CTSD", "SREBF1",
    "SREBF2", "LDLR", "ABCA1", "NR1H3", "NR1H2", "PPARD", "CPT1A", "ACACA", "FASN", "HK2",
    "PKM", "LDHA", "SLC2A1", "PFKFB3", "IDH1", "IDH2", "ACOD1", "SDHA", "SDHB", "OPA1", "MFN1",
    "MFN2", "DNM1L", "FIS1", "PINK1", "PRKN", "PPARGC1A", "TFAM", "ACTB", "ACTG1", "RAC1",
    "RAC2", "CDC42", "RHOA", "ROCK1", "ROCK2", "WASF2", "ARPC2", "CFL1", "MYH9", "VIM", "TUBB",
    "ITGB2", "ITGAM", "ITGB1", "PTK2", "PXN", "TLN1", "VCL", "LMNA", "LMNB1", "SUN2", "NUP98",
    "H2AX", "BRD4", "EP300", "CREBBP", "HDAC3", "KDM6B", "EZH2", "DNMT3A", "TET2", "CTCF",
    "SMARCA4", "ARID1A", "NCOA3", "NCOR1", "BCL6", "PRDM1", "MYC", "CDKN1A", "TP53", "MDM2",
    "CCND1", "CDK4", "RB1", "E2F1", "SYK", "BTK", "PLCG2", "LYN", "HCK", "TREM2", "TYROBP",
)


# --------------------------------------------------------------------------------------------
# the reference table
# --------------------------------------------------------------------------------------------
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
GENE_TABLE = REFERENCE_DIR / "genes.csv.gz"
GO_BP_GMT = REFERENCE_DIR / "go_bp.gmt.gz"
GENE_TABLE_COLUMNS = ("entrez_id", "symbol", "ensembl_gene_id", "gene_type", "location", "n_go_cc")

OTHER_LOCATION = "other"
"""Location of a gene whose GO cellular-component terms map to none of the HPA names."""

@lru_cache(maxsize=2)
def _load_gene_table(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: the reference gene table is missing; regenerate it with "
                                "`python tools/derive_gene_table.py`")
    df = pd.read_csv(p, dtype={"entrez_id": str, "symbol": str, "ensembl_gene_id": str, "gene_type": str,
                               "location": str}, keep_default_na=False)
    require_columns(df, GENE_TABLE_COLUMNS, p, error=ValueError)
    for col in ("symbol", "ensembl_gene_id"):
        dup = df[col].duplicated()
        if dup.any():
            raise ValueError(f"{p}: column {col!r} repeats {df.loc[dup, col].iloc[0]!r}")
    return df


def load_gene_table(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The reference gene table (a copy): ``entrez_id, symbol, ensembl_gene_id, gene_type,
    location, n_go_cc`` (``location`` empty for a gene without GO CC term)."""
    return _load_gene_table(str(path or GENE_TABLE)).copy()


def _open_text(path: Path):
    """A text handle on a plain, gzip or single-member zip file."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if path.suffix == ".zip":
        zf = zipfile.ZipFile(path)
        names = [n for n in zf.namelist() if not n.endswith("/")]
        if len(names) != 1:
            raise ValueError(f"{path}: expected one file in the zip archive, found {names}")
        return io.TextIOWrapper(zf.open(names[0]), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_gmt(path: str | os.PathLike, min_size: int = 1) -> pd.DataFrame:
    """Gene sets in GMT form (plain, ``.gz`` or ``.zip``): ``name<TAB>id-or-description<TAB>gene...``,
    as Reactome's ``ReactomePathways.gmt(.zip)`` and the shipped ``go_bp.gmt.gz``.

    Returns ``name, term_id, members`` (a list of gene symbols, duplicates removed, order kept),
    sets with fewer than ``min_size`` members dropped. A line with fewer than three tab-separated
    fields or a set named twice raises ``ValueError`` naming the file and the line.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    rows, seen = [], {}
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 3 or not parts[0]:
                raise ValueError(f"{path}, line {lineno}: a GMT line needs a set name, an id or "
                                 f"description and at least one gene, tab-separated; got {line[:80]!r}")
            name = parts[0]
            if name in seen:
                raise ValueError(f"{path}, line {lineno}: set {name!r} already defined on line {seen[name]}")
            seen[name] = lineno
            members = list(dict.fromkeys(g.strip() for g in parts[2:] if g.strip()))
            if len(members) >= min_size:
                rows.append((name, parts[1], members))
    return pd.DataFrame(rows, columns=["name", "term_id", "members"])


def draw_screen_genes(n: int, rng: np.random.Generator, include: tuple[str, ...] = (),
                      table: pd.DataFrame | None = None) -> pd.DataFrame:
    """``n`` genes for a simulated screen: ``include`` (e.g. the knock-out targets) first, the
    rest drawn at random from the reference table, returned sorted by Ensembl id.

    Genes beyond the table's size are synthetic (symbol ``SIMG<k>``, an Ensembl-shaped id
    ``ENSG9<k>`` that no real gene has, type ``synthetic``, no location or gene set), so a
    profile larger than the table still runs and the analyses simply see them as unannotated.
    One row per gene, the columns of :func:`load_gene_table`.
    """
    table = load_gene_table() if table is None else table
    inc = list(dict.fromkeys(include))
    unknown = [s for s in inc if s not in set(table["symbol"])]
    if unknown:
        raise ValueError(f"gene(s) {unknown} are not in the reference table {GENE_TABLE.name}")
    chosen = table.set_index("symbol").loc[inc[:n]].reset_index()
    rest = table[~table["symbol"].isin(inc)]
    k = min(n - len(chosen), len(rest))
    picked = rest.iloc[np.sort(rng.choice(len(rest), size=k, replace=False))] if k > 0 else rest.iloc[:0]
    out = pd.concat([chosen[list(GENE_TABLE_COLUMNS)], picked[list(GENE_TABLE_COLUMNS)]], ignore_index=True)
    extra = n - len(out)
    if extra > 0:
        out = pd.concat([out, pd.DataFrame({
            "entrez_id": "", "symbol": [f"SIMG{i:05d}" for i in range(1, extra + 1)],
            "ensembl_gene_id": [f"ENSG9{i:010d}" for i in range(1, extra + 1)],
            "gene_type": "synthetic", "location": "", "n_go_cc": 0})], ignore_index=True)
    return out.sort_values("ensembl_gene_id", ignore_index=True)
