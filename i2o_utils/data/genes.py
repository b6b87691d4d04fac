"""Gene identifiers for the simulated screen that look like the real ones.

Transcripts carry Ensembl-style gene ids (``ENSG`` + 11 digits) and a symbol; proteins carry
symbols. The knock-out targets are real macrophage-biology gene symbols (STAT1 and STAT6 first,
the paper's M1- and M2-reverting controls); the rest of the symbols are composed from real gene
family prefixes, so they read like symbols without claiming any real gene's biology.
"""

from __future__ import annotations

import numpy as np

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

_PREFIXES = (
    "SLC", "ZNF", "KRT", "RPL", "RPS", "TMEM", "CCDC", "FAM", "ANKRD", "LRRC", "WDR", "TRIM",
    "CD", "IL", "CXCL", "CCL", "PPP", "DNAJ", "HSPA", "KLHL", "ARHGEF", "RAB", "MRPL", "NDUF",
    "ATP", "CYP", "ABC", "GPR", "KCN", "OR", "UBE", "USP", "ZBTB", "SEC", "COX", "PSM", "EIF",
    "POLR", "SNX", "TBC1D",
)


def make_symbols(n: int, rng: np.random.Generator, include: tuple[str, ...] = ()) -> list[str]:
    """``n`` unique gene-like symbols, starting with ``include`` (e.g. the knock-out targets)."""
    out = list(dict.fromkeys(include))[:n]
    seen = set(out)
    while len(out) < n:
        p = _PREFIXES[rng.integers(len(_PREFIXES))]
        s = f"{p}{rng.integers(1, 99)}"
        if rng.random() < 0.3:
            s += "ABCDEFGH"[rng.integers(8)]
            if rng.random() < 0.5:
                s += str(rng.integers(1, 20))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def make_ensembl_ids(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` unique Ensembl-style human gene ids (``ENSG00000xxxxxx``), sorted as Ensembl lists them."""
    nums = rng.choice(np.arange(100_000, 300_000), size=n, replace=False)
    return [f"ENSG{v:011d}" for v in np.sort(nums)]
