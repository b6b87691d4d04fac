"""GT tables of the label protocol, kept compact until they are written.

Every imaging well of one perturbation and replicate gets the same label vector, so a stimulus's
GT long table (at the paper's scale 1,536 imaging wells x 26,317 transcripts, 40 M rows) holds
only ``seeds x perturbations`` distinct vectors. :class:`WellLabels` keeps those vectors and one
row per imaging well; :meth:`WellLabels.frame` expands them to the bucket's long format
(the authors' columns ``plate_barcode, well_id, gene/protein, train/test/val fold, measured (absolute)``) and :meth:`WellLabels.write_csv` writes the CSV
without building the long table: each distinct value is formatted once by a compiled Ryu
conversion, as Arrow formats a float32 (the shortest text that reads back to the same float32;
the file is byte for byte what Arrow's own CSV writer gives), and a compiled kernel assembles
the rows chunk by chunk while the previous chunk is being written.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from i2o_utils.data.layout import GT_COLUMNS, GT_FOLD, GT_GENE, GT_MEASURED, GT_PLATE, GT_WELL, atomic_path
from i2o_utils.omics._checks import OmicsInputError
from i2o_utils.omics._io import ALIGN as _ALIGN
from i2o_utils.omics._io import aligned_empty as _aligned

_CHUNK_BYTES = 16 << 20


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
        missing = [c for c in ("plate_barcode", "well_id", "fold") if c not in self.wells.columns]
        if missing:
            raise OmicsInputError(f"GT wells: missing column(s) {missing}")
        if self.values.ndim != 2 or self.values.shape[1] != len(self.genes):
            raise OmicsInputError(f"GT labels: values of shape {self.values.shape} for {len(self.genes)} genes")
        if len(self.label_index) != len(self.wells):
            raise OmicsInputError(f"GT labels: {len(self.label_index)} label indices for {len(self.wells)} wells")
        if len(self.label_index) and not (0 <= self.label_index.min() and self.label_index.max() < len(self.values)):
            raise OmicsInputError("GT labels: a label index is out of range")
        if np.isnan(self.values).any():
            raise OmicsInputError("GT labels: missing (NaN) label values")

    def __len__(self) -> int:
        return len(self.wells) * len(self.genes)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the long table (rows, columns)."""
        return len(self), len(GT_COLUMNS)

    def frame(self, wells: slice | None = None) -> pd.DataFrame:
        """The long table (categorical text columns), for all wells or a slice of them."""
        w = self.wells.iloc[wells] if wells is not None else self.wells
        lab = self.label_index[wells] if wells is not None else self.label_index
        g = len(self.genes)

        def per_well(values) -> pd.Categorical:
            c = pd.Categorical(np.asarray(values, dtype=str))
            return pd.Categorical.from_codes(np.repeat(c.codes, g), categories=c.categories)

        return pd.DataFrame({
            GT_PLATE: per_well(w["plate_barcode"]),
            GT_WELL: per_well(w["well_id"]),
            GT_GENE: pd.Categorical.from_codes(np.tile(np.arange(g, dtype=np.int32), len(w)),
                                               categories=pd.Index(self.genes, dtype=object)),
            GT_FOLD: per_well(w["fold"]),
            GT_MEASURED: self.values[lab].reshape(-1),
        })

    def head(self, n: int = 5) -> pd.DataFrame:
        """The first ``n`` rows of the long table."""
        g = max(len(self.genes), 1)
        return self.frame(slice(0, -(-n // g))).head(n)

    def write_csv(self, path: str | os.PathLike, chunk_bytes: int = _CHUNK_BYTES, progress: bool = False,
                  direct: bool | None = None, label: str | None = None) -> Path:
        """Write the long table as the bucket's GT CSV, atomically (temporary name, then rename).

        ``direct``: write with ``O_DIRECT`` (past the page cache: less CPU per byte, and a
        multi-gigabyte table does not push everything else out of memory); ``None`` (default)
        does so for tables over 256 MiB where the file system supports it, else writes normally.
        ``label``: the progress bar's name (default: the file name).
        """
        from tqdm.auto import tqdm

        path = Path(path)
        n_genes = len(self.genes)
        pre_data, pre_off = _text_column([f"{p},{w}," for p, w in zip(_csv_fields(self.wells["plate_barcode"]),
                                                                     _csv_fields(self.wells["well_id"]))])
        folds, fold_code = np.unique(self.wells["fold"].astype(str).to_numpy(), return_inverse=True)
        gene_fields = _csv_fields(self.genes)
        gm_data, off = _text_column([f"{g},{f}," for f in _csv_fields(folds) for g in gene_fields])
        gm_off = np.stack([off[k * n_genes:(k + 1) * n_genes + 1] for k in range(len(folds))])  # (folds, genes + 1)
        val_data, val_row, val_len = _format_floats(self.values)
        lab = self.label_index
        per_label = val_len.sum(axis=1, dtype=np.int64)
        row_bytes = n_genes * (np.diff(pre_off) + 1) + (gm_off[:, -1] - gm_off[:, 0])[fold_code] + per_label[lab]
        pad = np.zeros(8, np.uint8)  # the kernel copies in blocks of 8 bytes and may read past a string's end
        pre_data, gm_data = (np.concatenate([d, pad]) for d in (pre_data, gm_data))
        from i2o_utils.omics._kernels import gt_rows as fill

        header = (",".join(_csv_fields(GT_COLUMNS)) + "\n").encode()
        total = len(header) + int(row_bytes.sum())
        use_direct = total > (256 << 20) if direct is None else bool(direct)
        with atomic_path(path) as tmp, _Sink(tmp, direct=use_direct) as sink, \
                tqdm(total=len(lab), desc=label or path.name, unit="well", disable=not progress) as bar:
            sink.put(header)
            for w0, w1 in _chunks(row_bytes, chunk_bytes):
                starts = np.concatenate([[0], np.cumsum(row_bytes[w0:w1])])
                out = sink.reserve(int(starts[-1]))
                fill(out, starts, lab[w0:w1], fold_code[w0:w1].astype(np.int64), pre_data, pre_off[w0:w1 + 1],
                     gm_data, gm_off, val_data, val_row, val_len, n_genes)
                sink.commit(int(starts[-1]))
                bar.update(w1 - w0)
        return path


class _Sink:
    """Sequential writer of large chunks, one chunk written in the background while the next is
    filled (two buffers). With ``direct``, the file is opened with ``O_DIRECT`` and written in
    aligned blocks (the unaligned tail of each chunk is carried over to the next; the last one
    is written with ``O_DIRECT`` switched off); where ``O_DIRECT`` is refused it writes normally."""

    def __init__(self, path: Path, direct: bool = False):
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        self.direct = False
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self.fd = os.open(self.path, flags | os.O_DIRECT, 0o600)
                self.direct = True
            except OSError:  # e.g. tmpfs
                pass
        if not self.direct:
            self.fd = os.open(self.path, flags, 0o600)
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.buffers = [np.empty(0, np.uint8), np.empty(0, np.uint8)]
        self.pending = [None, None]
        self.slot = 0
        self.carry = b""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            for p in self.pending:
                if p is not None:
                    p.result()
            if exc_type is None and self.carry:
                self._write_tail(self.carry)
        finally:
            self.pool.shutdown(wait=True)
            os.close(self.fd)
        return False

    def put(self, data: bytes) -> None:
        """Small data (the header) ahead of the next chunk."""
        self.carry += data

    def reserve(self, n: int) -> np.ndarray:
        """A writable array of ``n`` bytes for the next chunk (waits until its buffer is free)."""
        s = self.slot
        if self.pending[s] is not None:
            self.pending[s].result()
            self.pending[s] = None
        c = len(self.carry)
        need = c + n + 8
        if len(self.buffers[s]) < need:
            self.buffers[s] = _aligned(need + _ALIGN)
        buf = self.buffers[s]
        buf[:c] = np.frombuffer(self.carry, np.uint8)
        return buf[c:c + n + 8]  # 8 bytes of slack: the kernel copies in blocks of 8

    def commit(self, n: int) -> None:
        """Write the chunk reserved last (``n`` bytes), in the background."""
        s = self.slot
        buf = self.buffers[s]
        end = len(self.carry) + n
        cut = end - end % _ALIGN if self.direct else end
        self.carry = bytes(buf[cut:end])
        self.pending[s] = self.pool.submit(self._write, memoryview(buf)[:cut])
        self.slot = 1 - s

    def _write(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            try:
                done += os.write(self.fd, view[done:])
            except OSError:
                if not self.direct or done % _ALIGN:
                    raise
                self._direct_off()  # the device refused this alignment: carry on buffered
                self.direct = False

    def _write_tail(self, data: bytes) -> None:
        if self.direct:
            self._direct_off()
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.write(self.fd, view[done:])

    def _direct_off(self) -> None:
        import fcntl

        fl = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fl & ~os.O_DIRECT)


def _chunks(row_bytes: np.ndarray, chunk_bytes: int) -> list[tuple[int, int]]:
    """Consecutive well ranges of about ``chunk_bytes`` each (at least one well)."""
    out, w0, acc = [], 0, 0
    for w, b in enumerate(row_bytes.tolist()):
        if acc and acc + b > chunk_bytes:
            out.append((w0, w))
            w0, acc = w, 0
        acc += b
    if w0 < len(row_bytes):
        out.append((w0, len(row_bytes)))
    return out


def _csv_field(s) -> str:
    """A CSV field: quoted (quotes doubled) only if it holds a comma, quote or line break."""
    s = str(s)
    if any(c in s for c in ',"\n\r'):
        return '"' + s.replace('"', '""') + '"'
    return s


def _csv_fields(values) -> list[str]:
    """:func:`_csv_field` of every value (the common case, nothing to quote, checked at once)."""
    texts = [str(v) for v in values]
    joined = "".join(texts)
    if not any(c in joined for c in ',"\n\r'):
        return texts
    return [_csv_field(t) for t in texts]


def _text_column(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of ``texts`` concatenated, and their offsets (len + 1)."""
    enc = [t.encode() for t in texts]
    off = np.zeros(len(enc) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in enc], out=off[1:])
    return np.frombuffer(b"".join(enc), dtype=np.uint8).copy(), off


def _format_floats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The text of every float32 in ``values`` (2-D) as Arrow writes it: the shortest decimal that
    reads back to the same float32 (Ryu; see :mod:`i2o_utils.omics._kernels`).

    Returns ``(data, row_start, lengths)``: the texts of row ``r`` follow one another from
    ``data[row_start[r]]``; ``lengths[r, g]`` bytes each. ``data`` is reserved at the longest
    possible size (17 bytes a value, plus 8 of padding), of which only the part written is ever
    touched.
    """
    from i2o_utils.omics._kernels import F32_TEXT_MAX, format_f32_rows

    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 2:
        values = values.reshape(1, -1)
    row_start = np.arange(values.shape[0], dtype=np.int64) * (values.shape[1] * F32_TEXT_MAX)
    data = np.empty(values.size * F32_TEXT_MAX + 8, dtype=np.uint8)
    lengths = np.empty(values.shape, dtype=np.uint8)
    format_f32_rows(values, data, row_start, lengths)
    return data, row_start, lengths
