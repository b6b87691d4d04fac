"""Prepare the paper's real data under a data root: fetch a source, then import its omics tables.

:func:`prepare_real_data` is what notebook ``00_download_data`` calls for ``source`` ``s3``,
``geo`` or ``pride`` (the simulated screen is generated elsewhere and never touches the network).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import pandas as pd

from i2o_utils.data.download import FetchOptions, FetchSummary, fetch_source
from i2o_utils.data.importers import (
    OmicsImportError,
    import_geo_counts,
    import_pride_proteins,
    read_series_matrix,
    samples_from_series_matrix,
)
from i2o_utils.data.layout import SCREEN_FILE, atomic_path, read_screen_info
from i2o_utils.data.manifests import DEFAULT_SMOKE_WELLS, GEO_ACCESSION, PRIDE_ACCESSION, SOURCES, TIERS
from i2o_utils.paths import data_dir

log = logging.getLogger(__name__)


@dataclass
class RealDataSummary:
    """What :func:`prepare_real_data` did: the fetch outcome and the files it wrote."""

    source: str
    tier: str
    dest: Path
    summary: FetchSummary
    written: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        written = [f"wrote {p}" for p in self.written]
        return "\n".join([f"{self.source} ({self.tier} tier) into {self.dest}", str(self.summary), *written])


RECORD_FILE = "REAL_DATA.json"
"""What was fetched into a data root (``SCREEN.json`` is the simulated screen's, never written here)."""
UPSTREAM_DIRS = {"geo": Path("upstream") / GEO_ACCESSION, "pride": Path("upstream") / PRIDE_ACCESSION}
"""Where the omics sources' files land under the data root (their manifests' relative paths)."""
_TABLE_SUFFIXES = (".txt", ".tsv", ".csv", ".txt.gz", ".tsv.gz", ".csv.gz")


def _omics_table(folder: Path, table: str | os.PathLike | None, what: str, words: tuple[str, ...]) -> Path:
    """``table``, or the one fetched file whose name holds one of ``words``; a zip's table is extracted."""
    if table:
        path = Path(table)
    else:
        cands = [p for p in sorted(folder.rglob("*")) if p.is_file() and "series_matrix" not in p.name.lower()
                 and p.name.lower().endswith((*_TABLE_SUFFIXES, ".zip")) and any(w in p.name.lower() for w in words)]
        if len(cands) != 1:
            found = (f"several candidate {what}s {[p.name for p in cands]}; choose one" if cands else f"no {what} "
                     f"among the fetched files {[p.name for p in sorted(folder.rglob('*'))][:20]}; name it")
            raise OmicsImportError(f"{folder}: {found} with table=")
        path = cands[0]
    return _extract_table(path, words) if path.suffix == ".zip" else path


def _extract_table(zip_path: Path, words: tuple[str, ...]) -> Path:
    """Extract the table member of a zip (e.g. ``txt/proteinGroups.txt``) beside it, atomically."""
    with zipfile.ZipFile(zip_path) as z:
        members = [m for m in z.namelist()
                   if m.lower().endswith(_TABLE_SUFFIXES) and any(w in m.lower() for w in words)]
        if len(members) != 1:
            raise OmicsImportError(f"{zip_path}: expected one table matching {list(words)} inside, found {members[:10]}")
        out = zip_path.parent / (zip_path.stem + "_extracted") / Path(members[0]).name
        if not out.exists():
            with atomic_path(out) as tmp, z.open(members[0]) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return out


def _write_record(dest: Path, source: str, tier: str, summary: FetchSummary, written: list[Path]) -> Path:
    record = dest / RECORD_FILE
    meta = {}
    if record.exists():  # (an unreadable record raises: the other sources' history is not dropped)
        with contextlib.suppress(ValueError):  # not JSON (cut short): start a new record
            meta = json.loads(record.read_text())
    meta.setdefault("sources", {})[source] = {
        "tier": tier, "manifest": SOURCES[source],
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": len(summary.results), "fetched": len(summary.fetched), "skipped": len(summary.skipped),
        "written": [str(p.relative_to(dest)) for p in written],
    }
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    return record


def prepare_real_data(source: str, tier: str = "smoke", dest: str | os.PathLike | None = None, *,
                      samples: str | os.PathLike | pd.DataFrame | None = None,
                      column_map: Mapping[str, str] | None = None, table: str | os.PathLike | None = None,
                      import_omics: bool = True, workers: int = 4, progress: bool = True,
                      s3_endpoint_url: str | None = None, http_base_url: str | None = None,
                      smoke_wells: int = DEFAULT_SMOKE_WELLS, manifest: str | os.PathLike | None = None,
                      options: FetchOptions | None = None) -> RealDataSummary:
    """Fetch one real source into a data root and bring it into the project's format.

    Parameters
    ----------
    source
        ``"s3"`` (images, ground truth, metadata, checkpoints, third-party tables: already in the
        project's layout), ``"geo"`` (transcriptomics counts) or ``"pride"`` (proteomics table).
    tier
        ``"smoke"`` (small files, a few wells) or ``"full"``.
    dest
        The data root; default :func:`i2o_utils.paths.data_dir`.
    samples
        Sample sheet for the omics import (see :mod:`i2o_utils.data.importers`); for GEO it can
        instead be derived from the series matrix with ``column_map``.
    column_map
        Project obs column -> series matrix column (GEO), e.g. ``{"plate_barcode": "plate", ...}``.
    table
        The count / protein table to import, where the fetched files hold several candidates.
    import_omics
        Import GEO/PRIDE tables into ``data/OMICS_RAW``; ``False`` only fetches.

    Returns
    -------
    RealDataSummary
        Its ``written`` lists the imported files and ``REAL_DATA.json``, the record of what was fetched.

    Raises
    ------
    FetchError
        If any file failed (after the summary has been logged).
    OmicsImportError
        If the omics table or the sample sheet cannot be imported; the message names the file
        and the missing column, and for GEO lists the series matrix's characteristics.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)} here (the simulated screen is generated, "
                         f"not fetched), got {source!r}")
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {list(TIERS)}, got {tier!r}")
    dest = Path(dest) if dest is not None else data_dir()
    dest.mkdir(parents=True, exist_ok=True)
    if (read_screen_info(dest) or {}).get("source") == "simulated":
        raise FileExistsError(f"{dest} holds a simulated screen ({dest / SCREEN_FILE}); fetch the real data "
                              f"({source}) into another data root (set I2O_DATA_DIR or pass dest)")
    opts = options or FetchOptions(workers=workers, progress=progress)
    summary = fetch_source(source, tier, dest, manifest=manifest, options=opts, s3_endpoint_url=s3_endpoint_url,
                           http_base_url=http_base_url, smoke_wells=smoke_wells)
    log.info("%s", summary)
    summary.raise_for_failures()
    written: list[Path] = []
    if import_omics and source == "geo":
        folder = dest / UPSTREAM_DIRS["geo"]
        counts = _omics_table(folder, table, "count table", ("count",))
        matrices = [m for m in sorted(folder.rglob("*series_matrix*.txt*")) if not m.name.endswith(".part")]
        if samples is None and (column_map is None or not matrices):
            chars = list(read_series_matrix(matrices[0]).columns) if matrices else []
            raise OmicsImportError(
                f"{counts}: a sample sheet is needed (columns sample, plate_barcode, well_id, target, "
                f"cell_state): pass samples=, or column_map= to derive it from the series matrix"
                + (f" whose columns are {chars}" if chars else " (none was fetched)"))
        sheet = samples if samples is not None else samples_from_series_matrix(matrices[0], column_map)
        written.append(import_geo_counts(counts, sheet, root=dest))
    elif import_omics and source == "pride":
        prot = _omics_table(dest / UPSTREAM_DIRS["pride"], table, "protein table", ("proteingroups", "protein"))
        written.append(import_pride_proteins(prot, samples, root=dest))
    written.append(_write_record(dest, source, tier, summary, written))
    return RealDataSummary(source, tier, dest, summary, written)
