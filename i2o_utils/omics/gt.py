"""GT tables of the label protocol, kept compact until they are written.

Every imaging well of one perturbation and replicate gets the same label vector, so a stimulus's
GT long table (at the paper's scale 1,536 imaging wells x 26,317 transcripts, 40 M rows) holds
only ``seeds x perturbations`` distinct vectors: :class:`WellLabels` keeps those and one row per
imaging well, and writes the bucket's long format (the authors' columns ``plate_barcode, well_id,
gene/protein, train/test/val fold, measured (absolute)``) with Arrow, a slice of wells at a time:
as the authors' CSV, or as Parquet for tables of the paper's size (:func:`gt_file_format`), where
the CSV would be gigabytes of text. :func:`i2o_utils.data.layout.read_gt` reads both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from i2o_utils.data.layout import GT_COLUMNS, GT_FOLD, GT_GENE, GT_MEASURED, GT_PLATE, GT_WELL, atomic_path, require_columns
from i2o_utils.omics._checks import OmicsInputError

GT_CSV_MAX_ROWS = 5_000_000
"""Larger GT tables are written as Parquet (a 5 M-row CSV is about 250 MB of text)."""
_BATCH_ROWS = 1 << 22


def gt_file_format(n_rows: int) -> str:
    """``"csv"`` (the authors' format) up to :data:`GT_CSV_MAX_ROWS` rows, else ``"parquet"``."""
    return "csv" if n_rows <= GT_CSV_MAX_ROWS else "parquet"


@dataclass
class WellLabels:
    """The GT table of one (omics, stimulus) set in compact form.

    Attributes
    ----------
    wells
        One row per imaging well, in output order: ``plate_barcode``, ``well_id``, ``fold``.
    label_index
        Row of ``values`` that is each well's label.
    values
        ``(n_labels, n_genes)`` float32 label vectors.
    genes
        Gene ids (columns of ``values``).
    """

    wells: pd.DataFrame
    label_index: np.ndarray
    values: np.ndarray
    genes: list[str]

    def __post_init__(self):
        self.label_index = np.asarray(self.label_index, dtype=np.int64)
        self.values = np.ascontiguousarray(self.values, dtype=np.float32)
        self.genes = [str(g) for g in self.genes]
        require_columns(self.wells, ("plate_barcode", "well_id", "fold"), "GT wells", error=OmicsInputError)
        if self.values.ndim != 2 or self.values.shape[1] != len(self.genes):
            raise OmicsInputError(f"GT labels: values of shape {self.values.shape} for {len(self.genes)} genes")
        if len(self.label_index) != len(self.wells):
            raise OmicsInputError(f"GT labels: {len(self.label_index)} label indices for {len(self.wells)} wells")
        if ((self.label_index < 0) | (self.label_index >= len(self.values))).any():
            raise OmicsInputError("GT labels: a label index is out of range")
        if np.isnan(self.values).any():
            raise OmicsInputError("GT labels: missing (NaN) label values")

    def __len__(self) -> int:
        return len(self.wells) * len(self.genes)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the long table (rows, columns)."""
        return len(self), len(GT_COLUMNS)

    def frame(self, wells: slice = slice(None)) -> pd.DataFrame:
        """The long table (categorical text columns), for all wells or a slice of them."""
        lab = self.label_index[wells]
        g = len(self.genes)

        def per_well(col: str) -> pd.Categorical:  # categories from all wells: the same in every slice
            c = pd.Categorical(self.wells[col].astype(str).to_numpy())
            return pd.Categorical.from_codes(np.repeat(c.codes[wells], g), categories=c.categories)

        return pd.DataFrame({
            GT_PLATE: per_well("plate_barcode"),
            GT_WELL: per_well("well_id"),
            GT_GENE: pd.Categorical.from_codes(np.tile(np.arange(g, dtype=np.int32), len(lab)),
                                               categories=pd.Index(self.genes, dtype=object)),
            GT_FOLD: per_well("fold"),
            GT_MEASURED: self.values[lab].reshape(-1),
        })

    def head(self, n: int = 5) -> pd.DataFrame:
        """The first ``n`` rows of the long table."""
        return self.frame(slice(0, -(-n // max(len(self.genes), 1)))).head(n)  # the wells that hold them

    def _batches(self, rows_per_batch: int = _BATCH_ROWS):
        """Arrow schema and (wells, record batch) of the long table (dictionary-encoded text columns)."""
        text = pa.dictionary(pa.int32(), pa.string())
        schema = pa.schema([(GT_PLATE, text), (GT_WELL, text), (GT_GENE, text), (GT_FOLD, text),
                            (GT_MEASURED, pa.float32())])
        n_genes = len(self.genes)
        genes = pa.array(self.genes, pa.string())
        gene_codes = np.arange(n_genes, dtype=np.int32)
        coded = []
        for col in ("plate_barcode", "well_id", "fold"):
            levels, codes = np.unique(self.wells[col].astype(str).to_numpy(), return_inverse=True)
            coded.append((pa.array(levels.tolist(), pa.string()), codes.astype(np.int32)))
        step = max(1, rows_per_batch // max(n_genes, 1))

        def batches():
            for w0 in range(0, len(self.wells), step):
                w1 = min(len(self.wells), w0 + step)
                per_well = [pa.DictionaryArray.from_arrays(np.repeat(c[w0:w1], n_genes), d) for d, c in coded]
                yield w1 - w0, pa.RecordBatch.from_arrays(
                    [per_well[0], per_well[1],
                     pa.DictionaryArray.from_arrays(np.tile(gene_codes, w1 - w0), genes), per_well[2],
                     pa.array(self.values[self.label_index[w0:w1]].reshape(-1))], schema=schema)
        return schema, batches()

    def write(self, path: str | os.PathLike, progress: bool = False, label: str | None = None,
              fmt: str | None = None) -> Path:
        """Write the long table atomically (temporary name, then rename): the authors' CSV for a
        ``.csv`` path, Parquet for a ``.parquet`` path (``fmt``, ``"csv"`` or ``"parquet"``,
        overrides the suffix, e.g. for a staging name). ``label``: the progress bar's name."""
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        path = Path(path)
        kind = fmt or path.suffix.lower().lstrip(".")
        if kind not in ("csv", "parquet"):
            raise OmicsInputError(f"{path}: a GT table is written as .csv or .parquet")
        schema, batches = self._batches()
        with atomic_path(path) as tmp, open(tmp, "wb") as f, tqdm(total=len(self.wells), desc=label or path.name,
                                                                 unit="well", disable=not progress) as bar:
            if kind == "parquet":
                # dictionary pages for the text only; random floats do not compress: plain pages,
                # no statistics (5x less CPU than the defaults for the same size)
                writer = pq.ParquetWriter(f, schema, compression="none", write_statistics=False,
                                          use_dictionary=[GT_PLATE, GT_WELL, GT_GENE, GT_FOLD])
            else:
                texts = "".join(map(str, [*self.genes, *self.wells["plate_barcode"], *self.wells["well_id"],
                                          *self.wells["fold"]]))
                f.write((",".join(GT_COLUMNS) + "\n").encode())  # unquoted, as the authors'
                writer = pacsv.CSVWriter(f, schema, write_options=pacsv.WriteOptions(
                    include_header=False, quoting_style="needed" if any(c in texts for c in ',"\n\r') else "none"))
            with writer:
                for n, b in batches:
                    writer.write_batch(b)
                    bar.update(n)
        return path
