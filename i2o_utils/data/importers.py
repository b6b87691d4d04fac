"""Import upstream omics tables into the project's raw omics format (``data/OMICS_RAW/*.h5ad``).

The image bucket (``s3://image2omics``) is already in the project's layout; the omics sources
are not:

* GEO ``GSE237485`` holds the transcriptomics as supplementary files. The importer reads the
  standard form of a GEO count table: genes x samples, tab- or comma-separated, optionally
  gzipped, one gene id column (Ensembl ids), optional symbol and annotation columns
  (featureCounts' ``Chr``/``Start``/``End``/``Strand``/``Length``), one integer column per sample.
* PRIDE ``PXD044522`` holds the proteomics. The importer reads a protein x sample intensity table:
  a generic one (a protein or gene column plus one numeric column per sample) or MaxQuant's
  ``proteinGroups.txt`` (``Gene names``, ``Reporter intensity corrected <channel> <experiment>``
  columns; reverse hits, contaminants and site-only identifications removed).

The exact upstream file names and column headers are not confirmed, so every column
can be named explicitly, and a column that cannot be found raises :class:`OmicsImportError`
naming it and listing the columns the file has.

Samples are described by a sample sheet (CSV/TSV or DataFrame) with one row per sample column of
the table: ``sample`` plus ``plate_barcode``, ``well_id``, ``target``, ``cell_state`` (and
``tmt_batch`` for proteomics). GEO's series matrix (``*_series_matrix.txt.gz``) can be turned into
such a sheet with :func:`samples_from_series_matrix` and a mapping of its characteristics.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from i2o_utils.config import OMICS
from i2o_utils.data.layout import LayoutError, atomic_path, normalise_well_id, require_columns
from i2o_utils.paths import bucket_paths

log = logging.getLogger(__name__)

OBS_COLUMNS: tuple[str, ...] = ("plate_barcode", "well_id", "target", "cell_state")
"""Columns every raw omics table carries per sample (``tmt_batch`` is added for proteomics)."""

GENE_ID_CANDIDATES = ("gene_id", "geneid", "gene", "ensembl_gene_id", "ensembl_id", "ensembl", "id",
                      "gene id", "gene_ids", "feature_id")
SYMBOL_CANDIDATES = ("symbol", "gene_symbol", "gene_name", "genename", "hgnc_symbol", "gene name",
                     "gene names", "external_gene_name")
COUNT_ANNOTATION_COLUMNS = ("chr", "start", "end", "strand", "length", "description", "biotype",
                            "gene_biotype", "gene_type", "entrezid", "entrez_id")
PROTEIN_ID_CANDIDATES = ("protein ids", "majority protein ids", "protein_id", "protein", "accession",
                         "uniprot", "uniprot_id", "protein.group", "protein.ids")
PROTEIN_SYMBOL_CANDIDATES = ("gene names", "gene_names", "genes", "gene", "symbol", "gene_symbol",
                             "gene_name", "gene name")
MAXQUANT_FLAG_COLUMNS = ("reverse", "potential contaminant", "contaminant", "only identified by site")
INTENSITY_PREFIXES = ("Reporter intensity corrected ", "Reporter intensity ", "LFQ intensity ", "Intensity ")
_MQ_REPORTER = re.compile(r"^Reporter intensity(?: corrected)? (\d+) (.+)$")


class OmicsImportError(ValueError):
    """An upstream table or sample sheet cannot be imported; the message names file and column."""


# --------------------------------------------------------------------------------------------
# reading tables
# --------------------------------------------------------------------------------------------
def _read_text(path: str | os.PathLike) -> str:
    """The text of a plain or gzipped file (gzip is detected by its magic bytes, not the name)."""
    path = Path(path)
    if not path.is_file():
        raise OmicsImportError(f"{path}: no such file")
    try:
        data = path.read_bytes()
        return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8", errors="replace")
    except (OSError, EOFError) as e:
        raise OmicsImportError(f"{path}: cannot be read (truncated or corrupt gzip?): {e}") from e


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a delimited table, plain or gzipped; the separator (tab or comma) is sniffed.

    Comment lines starting with ``#`` are skipped (featureCounts writes one). All columns are read
    as text first so identifiers keep their form; numeric columns are converted by the callers.
    """
    lines = [ln for ln in _read_text(path).splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise OmicsImportError(f"{path}: empty table")
    sep = "\t" if lines[0].count("\t") >= max(1, lines[0].count(",")) else ","
    df = pd.read_csv(io.StringIO("\n".join(lines)), sep=sep, dtype=str, keep_default_na=False,
                     na_values=["", "NA", "NaN", "nan"], quoting=csv.QUOTE_MINIMAL)
    return df.rename(columns=lambda c: str(c).strip())


def _table_error(path, df: pd.DataFrame, problem: str) -> OmicsImportError:
    """An error naming the file and the problem, with (the first 30 of) the columns the table has."""
    return OmicsImportError(f"{path}: {problem}; columns are {list(df.columns)[:30]}")


def _find_column(df: pd.DataFrame, wanted: str | None, candidates: Sequence[str], what: str, path) -> str | None:
    """The column named ``wanted`` (exactly; raises if absent), else the first candidate present
    (case-insensitive), else None."""
    if wanted is not None:
        if wanted not in df.columns:
            raise _table_error(path, df, f"column {wanted!r} ({what}) not found")
        return wanted
    lower = {c.lower(): c for c in df.columns}
    return next((lower[c] for c in candidates if c in lower), None)


def _amounts(df: pd.DataFrame, columns: Sequence[str], path, what: str, hint: str = "") -> pd.DataFrame:
    """``columns`` as numbers, missing values 0; a missing column, a non-numeric or a negative value raises."""
    require_columns(df, columns, f"{path} (sample columns)", error=OmicsImportError)
    out = {}
    for c in columns:
        v = pd.to_numeric(df[c], errors="coerce")
        bad = v.isna() & df[c].notna()
        if bad.any():
            raise OmicsImportError(f"{path}: column {c!r} holds non-numeric value {df[c][bad].iloc[0]!r} "
                                   f"(row {int(np.flatnonzero(bad.to_numpy())[0]) + 2}){hint}")
        if (v < 0).any():
            raise OmicsImportError(f"{path}: negative {what} in column {c!r}")
        out[c] = v
    return pd.DataFrame(out, index=df.index).fillna(0.0)


def read_count_matrix(path: str | os.PathLike, *, gene_column: str | None = None, symbol_column: str | None = None,
                      sample_columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """Read a GEO-style gene x sample count table (tab- or comma-separated, optionally gzipped).

    Ensembl version suffixes are dropped (``ENSG00000223972.5`` -> ``ENSG00000223972``); genes that
    then coincide are summed.

    Parameters
    ----------
    gene_column
        Column of gene ids; default: the first of :data:`GENE_ID_CANDIDATES`, else the first column
        when it is not numeric.
    symbol_column
        Column of gene symbols; default: the first of :data:`SYMBOL_CANDIDATES` if present.
    sample_columns
        Count columns; default: every other column, annotation columns excluded (each must be numeric).

    Returns
    -------
    counts, symbols
        ``counts``: genes x samples (float64, non-negative); ``symbols``: per gene (may be empty).

    Raises
    ------
    OmicsImportError
        Naming the file and the column not found, or a non-numeric / negative value.
    """
    df = read_table(path)
    gcol = _find_column(df, gene_column, GENE_ID_CANDIDATES, "gene id", path)
    if gcol is None and pd.to_numeric(df.iloc[:, 0], errors="coerce").isna().all():
        gcol = df.columns[0]  # an id column under another name
    if gcol is None:
        raise _table_error(path, df, f"no gene id column found (looked for {list(GENE_ID_CANDIDATES)} "
                                     "or a non-numeric first column)")
    scol = _find_column(df, symbol_column, SYMBOL_CANDIDATES, "gene symbol", path)
    samples, hint = sample_columns, ""
    if samples is None:
        skip = {gcol, scol} | {c for c in df.columns if c.lower() in COUNT_ANNOTATION_COLUMNS}
        samples = [c for c in df.columns if c not in skip]
        if not samples:
            raise _table_error(path, df, "no sample columns found")
        hint = ": neither a known annotation column nor counts; pass sample_columns="
    genes = df[gcol].fillna("").str.strip()
    if genes.eq("").any():
        raise OmicsImportError(f"{path}: empty gene id in column {gcol!r} (row {int(genes.eq('').argmax()) + 2})")
    genes = genes.str.replace(r"^(ENS[A-Z]*G\d{11})\.\d+$", r"\1", regex=True)
    counts = _amounts(df, samples, path, "count", hint)
    counts.index = pd.Index(genes, name="gene")
    symbols = pd.Series(df[scol].fillna("").to_numpy() if scol else "", index=counts.index)
    dup = counts.index.duplicated()
    if dup.any():
        log.info("%s: %d duplicated gene ids (after version stripping) summed", path, int(dup.sum()))
        counts, symbols = counts.groupby(level=0, sort=False).sum(), symbols[~dup]
    return counts, symbols.rename("symbol")


def read_protein_table(path: str | os.PathLike, *, protein_column: str | None = None,
                       symbol_column: str | None = None, sample_columns: Sequence[str] | None = None,
                       intensity_prefix: str | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """Read a protein x sample intensity table (generic, or MaxQuant's ``proteinGroups.txt``).

    Proteins are indexed by gene symbol (the first of ``;``-separated symbols; the protein id
    where a symbol is missing). Proteins sharing a symbol keep the one with the largest total
    intensity. Missing intensities become 0.

    Parameters
    ----------
    protein_column, symbol_column
        Protein id and gene symbol columns (defaults: :data:`PROTEIN_ID_CANDIDATES`,
        :data:`PROTEIN_SYMBOL_CANDIDATES`); at least one must be found.
    sample_columns
        Intensity columns; default: the columns starting with ``intensity_prefix``, else with the
        first of :data:`INTENSITY_PREFIXES` that matches (MaxQuant's ``Reporter intensity count``
        columns excluded), else every other numeric column.

    Returns
    -------
    intensities, protein_ids
        proteins x samples (float64, >= 0), and the protein id of each row.
    """
    df = read_table(path)
    flags = [c for c in df.columns if c.lower() in MAXQUANT_FLAG_COLUMNS]
    df = df[~df[flags].apply(lambda col: col.str.strip().eq("+")).any(axis=1)]
    pcol = _find_column(df, protein_column, PROTEIN_ID_CANDIDATES, "protein id", path)
    scol = _find_column(df, symbol_column, PROTEIN_SYMBOL_CANDIDATES, "gene symbol", path)
    if pcol is None and scol is None:
        raise _table_error(path, df, f"neither a protein id column ({list(PROTEIN_ID_CANDIDATES)}) nor a "
                                     f"gene symbol column ({list(PROTEIN_SYMBOL_CANDIDATES)}) found")
    samples = sample_columns
    if samples is None:
        prefixed = ([c for c in df.columns if c.startswith(pre) and c != pre.strip()
                     and not c.startswith("Reporter intensity count")]
                    for pre in ([intensity_prefix] if intensity_prefix else INTENSITY_PREFIXES))
        samples = next((cols for cols in prefixed if cols), [])  # those of the first prefix that matches
        if intensity_prefix and not samples:
            raise _table_error(path, df, f"no column starts with {intensity_prefix!r}")
        if not samples:
            samples = [c for c in df.columns if c not in {pcol, scol} and df[c].notna().any()
                       and pd.to_numeric(df[c], errors="coerce").notna().sum() == df[c].notna().sum()]
        if not samples:
            raise _table_error(path, df, "no intensity columns found")
    values = _amounts(df, samples, path, "intensity")
    pid, sym = (df[c].fillna("").astype(str).str.split(";").str[0].str.strip() if c else pd.Series("", index=df.index)
                for c in (pcol, scol))
    key = sym.where(sym != "", pid)
    rows = np.flatnonzero(key.to_numpy() != "")  # the proteins with a name
    if key.iloc[rows].duplicated().any():  # of those sharing a symbol, the most abundant stays
        rows = rows[values.iloc[rows].sum(axis=1).to_numpy().argsort()[::-1]]
        first = ~key.iloc[rows].duplicated().to_numpy()
        log.info("%s: %d proteins share a symbol with a more abundant one; dropped", path, int((~first).sum()))
        rows = rows[first]
    values, pid = values.iloc[rows], pid.iloc[rows]
    values.index = pid.index = pd.Index(key.iloc[rows], name="protein")
    return values, pid.rename("protein_id")


# --------------------------------------------------------------------------------------------
# samples
# --------------------------------------------------------------------------------------------
def read_series_matrix(path: str | os.PathLike) -> pd.DataFrame:
    """The sample table of a GEO series matrix file: one row per sample.

    Columns: ``title``, ``geo_accession``, ``source_name`` (where present) and one column per
    ``key: value`` characteristic of ``!Sample_characteristics_ch1``.
    """
    text = re.split(r"(?m)^!series_matrix_table_begin", _read_text(path))[0]  # the sample lines precede the table
    lines = csv.reader(text.splitlines(), delimiter="\t")
    rows = [(r[0][len("!Sample_"):], [v.strip() for v in r[1:]]) for r in lines if r and r[0].startswith("!Sample_")]
    fields = dict(reversed(rows))  # the first line of each key
    if "geo_accession" not in fields:
        raise OmicsImportError(f"{path}: no '!Sample_geo_accession' line: not a GEO series matrix file")
    n = len(fields["geo_accession"])
    out = pd.DataFrame({k: fields[k] for k in ("title", "geo_accession", "source_name_ch1")
                        if len(fields.get(k, ())) == n})
    samples: list[dict[str, str]] = [{} for _ in range(n)]  # the characteristics of each sample
    keys: dict[str, None] = {}  # in the order they first appear, line by line
    for key, vals in rows:
        if key.startswith("characteristics"):
            for sample, v in zip(samples, vals):
                k, sep, val = v.partition(":")
                if sep:
                    sample[k.strip()] = val.strip()
                    keys.setdefault(k.strip())
    out = out.rename(columns={"source_name_ch1": "source_name"})
    for k in keys:  # None where a sample lacks the characteristic
        out[k] = pd.Series([s.get(k) for s in samples], dtype=object)
    return out


def samples_from_series_matrix(path: str | os.PathLike, column_map: Mapping[str, str],
                               sample_column: str = "title") -> pd.DataFrame:
    """A sample sheet from a series matrix: ``column_map`` maps this project's obs columns
    (``plate_barcode``, ``well_id``, ``target``, ``cell_state``[, ``tmt_batch``]) to the matrix's
    columns; ``sample`` is taken from ``sample_column`` (the header the count table uses)."""
    sm = read_series_matrix(path)
    wanted = {"sample": sample_column, **dict(column_map)}
    require_columns(sm, list(wanted.values()), f"{path} (series matrix)", error=OmicsImportError)
    return pd.DataFrame({dst: sm[src].to_numpy() for dst, src in wanted.items()})


def read_samples(samples: str | os.PathLike | pd.DataFrame, *, omics: str) -> pd.DataFrame:
    """Read and check a sample sheet; returns it indexed by sample with the obs columns.

    A proteomics sheet without ``tmt_batch`` whose samples are MaxQuant's reporter columns
    (``Reporter intensity corrected <channel> <experiment>``) takes the experiment as the batch.

    Raises
    ------
    OmicsImportError
        Naming the sheet and each required column it lacks, a malformed well id, an unknown
        cell state, or a duplicated sample.
    """
    where = str(samples) if not isinstance(samples, pd.DataFrame) else "sample sheet"
    df = read_table(samples) if not isinstance(samples, pd.DataFrame) else samples.copy()
    if omics == "proteomics" and "tmt_batch" not in df.columns and "sample" in df.columns:
        batches = df["sample"].astype(str).str.extract(_MQ_REPORTER)[1]
        if batches.notna().all():
            df["tmt_batch"] = batches
    required = ["sample", *OBS_COLUMNS] + (["tmt_batch"] if omics == "proteomics" else [])
    require_columns(df, required, where, error=OmicsImportError)
    df["sample"] = df["sample"].astype(str).str.strip()
    dup = df["sample"].duplicated()
    if dup.any():
        raise OmicsImportError(f"{where}: sample {df['sample'][dup].iloc[0]!r} appears twice")
    try:
        df["well_id"] = [normalise_well_id(str(w), where=where) for w in df["well_id"]]
    except LayoutError as e:
        raise OmicsImportError(str(e)) from e
    low = df["cell_state"].astype(str).str.lower()  # M1 where "m1" is a word of it, else M2 where "m2" is
    state = low.str.extract(r"\b(m1)\b", expand=False).fillna(low.str.extract(r"\b(m2)\b", expand=False))
    if state.isna().any():
        s, v = df.loc[state.isna(), ["sample", "cell_state"]].iloc[0]
        raise OmicsImportError(f"{where}, sample {s}: cell_state {v!r} is neither M1 nor M2")
    df["cell_state"] = state
    for c in ("plate_barcode", "target") + (("tmt_batch",) if omics == "proteomics" else ()):
        df[c] = df[c].astype(str).str.strip()
        empty = df[c].isin(["", "nan", "None"])
        if empty.any():
            raise OmicsImportError(f"{where}: empty {c!r} for sample {df['sample'][empty].iloc[0]!r}")
    return df.set_index("sample")


# --------------------------------------------------------------------------------------------
# to AnnData
# --------------------------------------------------------------------------------------------
def to_anndata(values: pd.DataFrame, samples: pd.DataFrame, symbols: pd.Series, *, omics: str,
               where: str = "table"):
    """Features x samples table + sample sheet -> AnnData (samples x features) in the raw format.

    Every sample column of the table must have a row in the sheet (matched on the sheet's index,
    else on its ``geo_accession`` or ``title`` column); sheet rows without a table column are
    ignored with a log line.
    """
    import anndata as ad

    cols = [str(c) for c in values.columns]
    index = samples.index.astype(str)
    names = [index] + [pd.Index(samples[a].astype(str)) for a in ("geo_accession", "title") if a in samples.columns]
    key = pd.Series(index, index=max(names, key=lambda n: len(set(cols) & set(n))))  # the best-matching names
    unmatched = [c for c in cols if c not in key.index]
    if unmatched:
        raise OmicsImportError(f"{where}: sample column(s) {unmatched[:10]} have no row in the sample sheet "
                               f"({len(unmatched)} of {len(cols)} unmatched)")
    extra = len(samples) - len(cols)
    if extra > 0:
        log.info("%s: %d sample sheet rows have no column in the table", where, extra)
    obs_cols = list(OBS_COLUMNS) + (["tmt_batch"] if omics == "proteomics" else [])
    obs = samples.loc[key.loc[cols].to_numpy(), obs_cols].astype(str).set_axis(pd.Index(cols, name="sample"))
    dup = obs.duplicated(["plate_barcode", "well_id"])
    if dup.any():
        raise OmicsImportError(f"{where}: plate {obs['plate_barcode'][dup].iloc[0]} well "
                               f"{obs['well_id'][dup].iloc[0]} is given to two samples")
    X = values.to_numpy(dtype=np.float64).T
    if omics == "transcriptomics" and np.allclose(X, np.round(X)):
        X = np.round(X)
    var = pd.DataFrame({"symbol": symbols.reindex(values.index).fillna("").astype(str).to_numpy()},
                       index=pd.Index(values.index.astype(str), name="gene"))
    return ad.AnnData(X=X.astype(np.float32), obs=obs, var=var)


def write_omics_raw(adata, omics: str, root: str | os.PathLike | None = None) -> Path:
    """Write an AnnData to ``data/OMICS_RAW/<omics>.h5ad`` under a data root, atomically."""
    if omics not in OMICS:
        raise ValueError(f"omics must be one of {list(OMICS)}, got {omics!r}")
    path = bucket_paths(root)["omics_raw"] / f"{omics}.h5ad"
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return path


def import_geo_counts(counts_path: str | os.PathLike, samples: str | os.PathLike | pd.DataFrame, *,
                      root: str | os.PathLike | None = None, **read_kwargs) -> Path:
    """GEO count table + sample sheet (see :func:`read_samples`) -> ``data/OMICS_RAW/transcriptomics.h5ad``
    (raw counts); ``read_kwargs`` go to :func:`read_count_matrix` (``gene_column``, ``sample_columns``, ...)."""
    counts, symbols = read_count_matrix(counts_path, **read_kwargs)
    sheet = read_samples(samples, omics="transcriptomics")
    adata = to_anndata(counts, sheet, symbols, omics="transcriptomics", where=str(counts_path))
    return write_omics_raw(adata, "transcriptomics", root)


def import_pride_proteins(table_path: str | os.PathLike, samples: str | os.PathLike | pd.DataFrame | None = None,
                          *, root: str | os.PathLike | None = None, **read_kwargs) -> Path:
    """PRIDE protein table + sample sheet (see :func:`read_samples`) -> ``data/OMICS_RAW/proteomics.h5ad``
    (raw intensities); ``read_kwargs`` go to :func:`read_protein_table`."""
    values, protein_ids = read_protein_table(table_path, **read_kwargs)
    if samples is None:
        raise OmicsImportError(f"{table_path}: a sample sheet is needed (sample, plate_barcode, well_id, "
                               "target, cell_state[, tmt_batch])")
    sheet = read_samples(samples, omics="proteomics")
    adata = to_anndata(values, sheet, values.index.to_series(), omics="proteomics", where=str(table_path))
    adata.var["protein_id"] = protein_ids.reindex(values.index).to_numpy()
    return write_omics_raw(adata, "proteomics", root)
