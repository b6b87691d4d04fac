"""Tables as the book shows them, and what a notebook wrote.

:func:`table` is the one way notebooks show a table: no index column, units in the column names,
numbers rounded to a few significant digits, wide tables split (or transposed) so that every part fits
the book's text column, long tables folded behind a "show" toggle. :func:`written_files` lists what a
notebook wrote, with paths relative to the data or results root (never a machine's absolute path).
"""

from __future__ import annotations

import html
import math
import re
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

#: Characters of table text that fit the book's text column at the table font size (measured in
#: the browser test, which fails if a table overflows).
TEXT_COLUMN_CHARS = 84
MISSING = "–"


def format_number(x, digits: int = 3) -> str:
    """``x`` rounded to ``digits`` significant digits, without exponent between 1e-3 and 1e6.

    Integers (and floats that are whole numbers of magnitude >= 10**digits) keep every digit, with
    thousands separators from 10,000 up; missing values are shown as an en dash.
    """
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA or x is pd.NaT:
        return MISSING
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, numbers.Integral):
        return f"{int(x):,}" if abs(int(x)) >= 10_000 else str(int(x))
    if not isinstance(x, numbers.Real):
        return str(x)
    x = float(x)
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag < digits - 1 and abs(round(x, digits - 1 - mag)) >= 10 ** (mag + 1):
        mag += 1  # rounding carried into the next digit (99.96 -> 100)
    if mag >= digits - 1:  # no decimals needed: keep the integer part whole
        v = int(round(x))
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if abs(x) < 1e-3:
        return f"{x:.{max(digits - 1, 0)}e}"
    decimals = digits - 1 - mag
    text = f"{round(x, decimals):.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _flat_name(c) -> str:
    if isinstance(c, tuple):
        return " ".join(str(p) for p in c if str(p) != "")
    return str(c)


_HEADER_BREAK = re.compile(r"[\s_]+")


def _width(header: str, cells: Sequence[str]) -> int:
    """Rendered width of a column in characters: its widest cell or header word (headers wrap at
    spaces and underscores)."""
    words = [w for w in _HEADER_BREAK.split(header) if w] or [""]
    head = max(max(len(w) for w in words), min(len(header), 12))
    return max([head, *(_cell_width(c) for c in cells)]) + 2


def _cell_width(cell: str) -> int:
    """Width of a cell: a path breaks after each '/' (see :meth:`BookTable._part_html`), so its
    widest line is its longest segment (with the slash) or a space-separated word of it."""
    if "/" not in cell:
        return len(cell)
    return max(len(part) + 1 for part in cell.split("/"))


@dataclass
class BookTable:
    """A table ready for the book; displays as HTML in a notebook, as text in a terminal.

    Attributes
    ----------
    data
        The table as given (index turned into columns, units in the names), numbers unrounded.
    parts
        What is shown: one or more tables of formatted strings, each narrow enough for the text
        column (a wide table is split by columns, repeating its key column, or transposed).
    numeric
        Names of the numeric columns (right-aligned).
    caption, collapsed
        The caption, and whether the table is folded behind a toggle (long tables).
    """

    data: pd.DataFrame
    parts: list[pd.DataFrame]
    numeric: set = field(default_factory=set)
    caption: str | None = None
    collapsed: bool = False
    transposed: bool = False

    def _part_html(self, part: pd.DataFrame) -> str:
        head = "".join(f"<th>{html.escape(str(c)).replace('_', '_<wbr>')}</th>" for c in part.columns)
        rows = []
        for row in part.itertuples(index=False):
            cells = []
            for c, v in zip(part.columns, row):
                cls = ' class="num"' if (c in self.numeric or (self.transposed and c != part.columns[0])) else ""
                text = html.escape(str(v))
                cells.append(f"<td{cls}>{text if cls else text.replace('/', '/<wbr>')}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        return (f'<table class="i2o-table"><thead><tr>{head}</tr></thead>'
                f'<tbody>{"".join(rows)}</tbody></table>')

    def _repr_html_(self) -> str:
        body = "\n".join(self._part_html(p) for p in self.parts)
        n, m = self.data.shape
        cap = f'<p class="i2o-caption">{html.escape(self.caption)}</p>' if self.caption else ""
        if self.collapsed:
            what = html.escape(self.caption) if self.caption else "Table"
            return (f'<details class="i2o-details"><summary>{what}: {n:,} rows × {m} columns '
                    f'(click to show)</summary>\n{body}\n</details>')
        return f'<div class="i2o-table-wrap">{cap}{body}</div>'

    def __repr__(self) -> str:
        text = "\n\n".join(p.to_string(index=False) for p in self.parts)
        return (self.caption + "\n" if self.caption else "") + text

    def __len__(self) -> int:
        return len(self.data)


def table(df: pd.DataFrame | pd.Series, *, units: Mapping[str, str] | None = None, digits: int = 3,
          caption: str | None = None, key: str | Sequence[str] | None = None,
          max_chars: int = TEXT_COLUMN_CHARS, max_rows: int = 30, transpose: bool | None = None) -> BookTable:
    """Prepare a table for the book.

    Parameters
    ----------
    df
        The table; a named (or multi-level) index becomes columns, a plain row number is dropped.
    units
        Unit per column, appended to its name: ``{"size": "MiB"}`` shows ``size (MiB)``.
    digits
        Significant digits of non-integer numbers (integers keep all theirs).
    caption
        A line above the table (and the label of the toggle of a long table).
    key
        Column(s) repeated in every part when a wide table is split; default the leading text
        columns (up to 3, within half the width), else the first column.
    max_chars
        Width budget in characters of one part; wider tables are split or transposed.
    max_rows
        Longer tables are folded behind a toggle.
    transpose
        Force (True) or forbid (False) transposing a wide table; by default a wide table with at
        most 4 rows is transposed when that makes it fit.

    Returns
    -------
    BookTable
        Displays as HTML in a notebook (and in the book).
    """
    if isinstance(df, pd.Series):
        df = df.to_frame()
    df = df.copy()
    named_index = any(n is not None for n in df.index.names)
    if named_index:
        df = df.reset_index()
    else:
        df = df.reset_index(drop=True)
    df.columns = [_flat_name(c) for c in df.columns]
    if units:
        unknown = [c for c in units if c not in df.columns]
        if unknown:
            raise KeyError(f"units given for columns not in the table: {unknown}; columns: {list(df.columns)}")
        df = df.rename(columns={c: f"{c} ({u})" for c, u in units.items() if f"({u})" not in c})
    numeric = {c for c in df.columns if _is_numeric(df[c])}
    shown = pd.DataFrame({c: [format_number(v, digits) if c in numeric else
                              (MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
                              for v in df[c].tolist()] for c in df.columns}, columns=df.columns)
    widths = {c: _width(c, shown[c].tolist()) for c in shown.columns}
    parts, transposed = [shown], False
    if sum(widths.values()) > max_chars and len(shown.columns) > 1:
        keys = [key] if isinstance(key, str) else list(key or _leading_labels(shown, numeric, widths, max_chars))
        missing = [k for k in keys if k not in shown.columns]
        if missing:
            raise KeyError(f"key column(s) {missing} not in the table; columns: {list(shown.columns)}")
        t = _transposed(shown, keys)
        t_width = sum(_width(c, t[c].tolist()) for c in t.columns)
        if transpose or (transpose is None and len(shown) <= 4 and t_width <= max_chars):
            parts, transposed = [t], True
        else:
            parts = _split_columns(shown, keys, widths, max_chars)
    return BookTable(data=df, parts=parts, numeric=numeric, caption=caption,
                     collapsed=len(df) > max_rows, transposed=transposed)


def _leading_labels(shown: pd.DataFrame, numeric: set, widths: dict, max_chars: int) -> list[str]:
    """The default key of a split table: its leading text columns (at most 3, within half the width)."""
    keys = [shown.columns[0]]
    for c in shown.columns[1:3]:
        if c in numeric or sum(widths[k] for k in keys) + widths[c] > max_chars // 2:
            break
        keys.append(c)
    return keys


def _transposed(shown: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    labels = [" · ".join(shown.loc[i, k] for k in keys) for i in shown.index]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({i + 1})" for i, lab in enumerate(labels)]
    rest = [c for c in shown.columns if c not in keys]
    out = pd.DataFrame({"": rest, **{lab: [shown.loc[i, c] for c in rest] for lab, i in zip(labels, shown.index)}})
    return out


def _split_columns(shown: pd.DataFrame, keys: list[str], widths: dict, max_chars: int) -> list[pd.DataFrame]:
    base = sum(widths[k] for k in keys)
    groups: list[list[str]] = [[]]
    used = base
    for c in (c for c in shown.columns if c not in keys):
        if groups[-1] and used + widths[c] > max_chars:
            groups.append([])
            used = base
        groups[-1].append(c)
        used += widths[c]
    return [shown[keys + g] for g in groups if g]


def _describe(p: Path) -> str:
    try:
        if p.suffix == ".csv":
            head = pd.read_csv(p, nrows=5)
            n = sum(1 for _ in open(p)) - 1
            return f"{n} rows x {head.shape[1]} columns: {', '.join(map(str, head.columns[:8]))}" + \
                (" ..." if head.shape[1] > 8 else "")
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            md = pq.ParquetFile(p).metadata
            names = pq.ParquetFile(p).schema_arrow.names
            return f"{md.num_rows} rows x {len(names)} columns: {', '.join(names[:8])}" + (" ..." if len(names) > 8 else "")
        if p.suffix == ".h5ad":
            import h5py

            with h5py.File(p, "r") as f:
                x = f["X"]
                shape = x.shape if hasattr(x, "shape") else tuple(x.attrs.get("shape", ()))
                layers = list(f["layers"].keys()) if "layers" in f else []
            return f"AnnData {shape[0]} x {shape[1]}" + (f"; layers {', '.join(layers)}" if layers else "")
        if p.suffix == ".json":
            return "JSON"
    except Exception as e:  # describing is best-effort; the file list itself is what matters
        return f"(could not read: {type(e).__name__})"
    return ""


def relative_to_roots(path: str | Path, roots: Mapping[str, Path] | None = None) -> tuple[str, str]:
    """``(root name, path relative to it)`` for the first root holding ``path``; else ``("", name)``.

    The default roots are the results root and the data root (``I2O_RESULTS_DIR``, ``I2O_DATA_DIR``):
    a path outside both is shown by its file name only, so no machine's folders reach the book.
    """
    from i2o_utils import paths

    if roots is None:
        roots = {"results": paths.results_dir(), "data": paths.data_dir()}
    p = Path(path).resolve()
    for name, root in roots.items():
        root = Path(root).resolve()
        if p == root or p.is_relative_to(root):
            return name, str(p.relative_to(root)) if p != root else "."
    return "", p.name


def written_files(paths_: Iterable[str | Path], root: str | Path | None = None,
                  max_per_folder: int = 12) -> BookTable:
    """A table of files (folders are expanded): where, path, size and shape/columns where readable.

    Paths are shown relative to the data or the results root (column ``root``); ``root`` adds one
    more root to try first. Folders with many files (per-well HDF5) are summarised as one row with
    the file count. The unformatted table is the result's ``data``.
    """
    from i2o_utils import paths

    roots: dict[str, Path] = {}
    if root is not None:
        r = Path(root).resolve()
        named = {"results": paths.results_dir(), "data": paths.data_dir()}
        roots[next((k for k, v in named.items() if v.resolve() == r), r.name)] = r
    roots.setdefault("results", paths.results_dir())
    roots.setdefault("data", paths.data_dir())
    rows = []
    for item in paths_:
        item = Path(item)
        if item.is_dir():
            files = sorted(f for f in item.rglob("*") if f.is_file() and not f.name.startswith("."))
            if len(files) > max_per_folder:
                size = sum(f.stat().st_size for f in files)
                rows.append((*relative_to_roots(item, roots), size / 2**20, f"{len(files)} files"))
                continue
        else:
            files = [item] if item.exists() else []
        for f in files:
            rows.append((*relative_to_roots(f, roots), f.stat().st_size / 2**20, _describe(f)))
    df = pd.DataFrame(rows, columns=["root", "path", "size", "content"])
    return table(df, units={"size": "MiB"}, key="path", caption="Files written (paths relative to the data or results root)")


# ------------------------------------------------------------------------------------------------
# every DataFrame a book chapter displays goes through table()
# ------------------------------------------------------------------------------------------------
#: Set by the runner for the kernels it starts: DataFrames displayed by a notebook are shown as
#: :func:`table` shows them (a notebook that calls :func:`table` itself gets the same result).
BOOK_TABLES_ENV = "I2O_BOOK_TABLES"


def dataframe_html(df: pd.DataFrame, max_rows: int = 200) -> str:
    """HTML of ``df`` as the book shows tables; at most ``max_rows`` rows (the count is named)."""
    try:
        if len(df) > max_rows:
            return table(df.head(max_rows), caption=f"first {max_rows} of {len(df):,} rows")._repr_html_()
        return table(df)._repr_html_()
    except Exception:  # a table the helper cannot take is still shown, as pandas shows it
        return df.to_html()


def format_dataframes_for_book(shell=None) -> bool:
    """Register :func:`dataframe_html` as the HTML display of DataFrames in an IPython kernel.

    Returns whether it was registered (False outside IPython).
    """
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return False
    shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, dataframe_html)
    return True
