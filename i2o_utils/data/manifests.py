"""Download manifests: what to fetch from each upstream source, where to put it, how to check it.

One CSV per source in ``data_manifests/`` (:data:`i2o_utils.paths.MANIFESTS_DIR`), with the
columns of :data:`MANIFEST_COLUMNS`:

``source``
    the manifest's name (``s3_image2omics``, ``geo_GSE237485``, ``pride_PXD044522``).
``url``
    where the file lives upstream: ``s3://bucket/key`` or ``https://...``.
``relative_path``
    where it goes under the destination folder (POSIX separators, never absolute, no ``..``).
``size``
    bytes, or empty where not known.
``checksum``, ``checksum_type``
    the upstream checksum and its kind: ``sha256``, ``sha1`` (what PRIDE publishes), ``md5``, or
    ``s3etag`` (an S3 ETag: the MD5 of the object, or ``<md5 of part MD5s>-<parts>`` for a
    multipart upload). Both empty where the source publishes none (GEO).
``tier``
    ``smoke`` (the small files needed to run the book on a few real wells) or ``full``.
``licence``
    the terms the file is published under, as far as they are known.
``verified``
    ``true`` when the row was read from the live listing of the source; ``false`` when its name
    was inferred (from the authors' code or the repository's documented layout) and could not be
    checked.

A row whose ``relative_path`` ends in ``/`` is a *listing row*: it stands for every file the
source lists under ``url`` (an S3 prefix, an HTTP directory index, or a PRIDE project's file
list), expanded at fetch time by :func:`expand_listings`. The expanded files get their tier from
the source's rule (:func:`assign_tiers`); a listing row of tier ``smoke`` takes part in the smoke
tier with only the expanded files whose own tier is ``smoke``.

:func:`build_manifest` rebuilds a manifest from the live listing (``i2o data manifest SOURCE``).
"""

from __future__ import annotations

import csv
import html.parser
import logging
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence
from urllib.parse import urljoin, urlparse, urlunparse

import pandas as pd

from i2o_utils.data.layout import atomic_path, parse_bool, require_columns
from i2o_utils.paths import MANIFESTS_DIR

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "source", "url", "relative_path", "size", "checksum", "checksum_type", "tier", "licence",
    "verified",
)
TIERS: tuple[str, ...] = ("smoke", "full")
CHECKSUM_PATTERNS: dict[str, re.Pattern] = {
    "sha256": re.compile(r"[0-9a-f]{64}"),
    "sha1": re.compile(r"[0-9a-f]{40}"),
    "md5": re.compile(r"[0-9a-f]{32}"),
    "s3etag": re.compile(r"[0-9a-f]{32}(-[1-9][0-9]{0,4})?"),
}
"""Accepted checksum strings per ``checksum_type`` (lower-case hexadecimal)."""

S3_BUCKET = "image2omics"
GEO_ACCESSION = "GSE237485"
PRIDE_ACCESSION = "PXD044522"

SOURCES: dict[str, str] = {
    "s3": "s3_image2omics",
    "geo": f"geo_{GEO_ACCESSION}",
    "pride": f"pride_{PRIDE_ACCESSION}",
}
"""Short source names (as the command line takes them) -> manifest names."""

SMOKE_MAX_BYTES = 1 << 30
"""Upstream omics files larger than this (1 GiB) are left to the full tier."""
DEFAULT_SMOKE_WELLS = 8
"""Wells (ICF + TILES pairs) of the image bucket in the smoke tier."""


class ManifestError(ValueError):
    """A manifest is malformed; the message names the file, the row and the column at fault."""


@dataclass(frozen=True)
class ManifestEntry:
    """One row of a manifest (see the module docstring for the meaning of each field)."""

    source: str
    url: str
    relative_path: str
    size: int | None = None
    checksum: str = ""
    checksum_type: str = ""
    tier: str = "full"
    licence: str = ""
    verified: bool = False

    @property
    def is_listing(self) -> bool:
        """Whether the row stands for everything listed under ``url`` (path ends in ``/``)."""
        return self.relative_path.endswith("/")


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def check_relative_path(relative_path: str) -> str | None:
    """Why ``relative_path`` is not a safe path inside a destination folder, or ``None`` if it is.

    Refused: empty paths, absolute paths (``/x``, ``C:\\x``, ``~/x``), backslashes, NUL bytes,
    empty components (``a//b``) and any ``.`` or ``..`` component.
    """
    p = relative_path
    parts = p.rstrip("/").split("/")
    faults = {  # the first that applies is reported
        "empty path": not p.strip(),
        "NUL byte in path": "\x00" in p,
        "backslash in path (use '/' separators)": "\\" in p,
        "absolute path": p.startswith(("/", "~")) or re.match(r"[A-Za-z]:", p) is not None,
        "'..' component escapes the destination": ".." in parts,
        "empty or '.' path component": "" in parts or "." in parts,
    }
    return next((why for why, applies in faults.items() if applies), None)


def safe_destination(dest: str | os.PathLike, relative_path: str) -> Path:
    """``dest / relative_path``, refusing paths that would land outside ``dest``.

    Raises
    ------
    ManifestError
        If the path is absolute, has a ``..`` component, or resolves (through a symbolic link)
        outside ``dest``.
    """
    if why := check_relative_path(relative_path):
        raise ManifestError(f"relative_path {relative_path!r}: {why}")
    root = Path(dest).resolve()
    target = (root / relative_path).resolve()
    if not target.is_relative_to(root):
        raise ManifestError(f"relative_path {relative_path!r} resolves to {target}, outside {root}")
    return target


def entry_problems(e: ManifestEntry) -> list[str]:
    """Every problem of one entry (empty list when it is well formed)."""
    problems = []
    if why := check_relative_path(e.relative_path):
        problems.append(f"relative_path {e.relative_path!r}: {why}")
    scheme = urlparse(e.url).scheme
    if scheme not in ("s3", "http", "https"):
        problems.append(f"url {e.url!r}: scheme must be s3, http or https")
    elif scheme == "s3" and not urlparse(e.url).netloc:
        problems.append(f"url {e.url!r}: no bucket")
    if e.tier not in TIERS:
        problems.append(f"tier {e.tier!r} is not one of {list(TIERS)}")
    if e.size is not None and e.size < 0:
        problems.append(f"size {e.size} is negative")
    if e.checksum or e.checksum_type:
        if e.checksum_type not in CHECKSUM_PATTERNS:
            problems.append(f"checksum_type {e.checksum_type!r} is not one of {sorted(CHECKSUM_PATTERNS)}")
        elif not e.checksum:
            problems.append(f"checksum_type {e.checksum_type!r} given without a checksum")
        elif not CHECKSUM_PATTERNS[e.checksum_type].fullmatch(e.checksum):
            problems.append(f"checksum {e.checksum!r} is not a valid {e.checksum_type} string")
    if e.is_listing and (e.checksum or e.size is not None):
        problems.append("a listing row (path ending in '/') carries no size or checksum")
    return problems


def validate_entries(entries: Sequence[ManifestEntry], where: str | os.PathLike = "<manifest>") -> None:
    """Refuse a malformed manifest before anything is downloaded.

    Raises
    ------
    ManifestError
        Listing every faulty row (1-based data row numbers) with its fault, and duplicated
        ``relative_path`` values.
    """
    problems = []
    seen: dict[str, int] = {}
    for i, e in enumerate(entries, start=1):
        problems += [f"row {i}: {p}" for p in entry_problems(e)]
        if e.relative_path in seen:
            problems.append(f"row {i}: relative_path {e.relative_path!r} duplicates row {seen[e.relative_path]}")
        seen.setdefault(e.relative_path, i)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ManifestError(f"{where}: malformed manifest:\n  " + "\n  ".join(shown))


# --------------------------------------------------------------------------------------------
# reading and writing
# --------------------------------------------------------------------------------------------
def source_kind(source: str) -> str:
    """``s3``, ``geo`` or ``pride`` for a short source name or a manifest name."""
    kinds = {**{name: kind for kind, name in SOURCES.items()}, **{kind: kind for kind in SOURCES}}
    if source not in kinds:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    return kinds[source]


def manifest_path(source: str) -> Path:
    """The committed manifest of a source (short name ``s3``/``geo``/``pride`` or manifest name)."""
    return MANIFESTS_DIR / f"{SOURCES[source_kind(source)]}.csv"


def read_manifest(path: str | os.PathLike) -> list[ManifestEntry]:
    """Read and validate a manifest CSV.

    Raises
    ------
    ManifestError
        If the file is missing, lacks a column of :data:`MANIFEST_COLUMNS` (named in the
        message), or holds a malformed row (bad checksum string, unsafe path, bad size/tier).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets add a BOM
        reader = csv.DictReader(f)
        require_columns(reader.fieldnames or [], MANIFEST_COLUMNS, path, error=ManifestError)
        entries, problems = [], []
        for i, row in enumerate(reader, start=1):
            vals = {k: (row[k] or "").strip() for k in MANIFEST_COLUMNS}
            verified = parse_bool(vals["verified"]) if vals["verified"] else False
            if None in row:
                problems.append(f"row {i}: more fields than the header has columns")
            elif not re.fullmatch(r"\d*", vals["size"]):
                problems.append(f"row {i}: size {vals['size']!r} is not a non-negative integer")
            elif verified is None:
                problems.append(f"row {i}: verified {vals['verified']!r} is not true/false")
            else:
                entries.append(ManifestEntry(**vals | {
                    "size": int(vals["size"]) if vals["size"] else None, "verified": verified,
                    "checksum": vals["checksum"].lower().strip('"'), "checksum_type": vals["checksum_type"].lower(),
                    "tier": vals["tier"].lower(),
                }))
    if problems:
        raise ManifestError(f"{path}: malformed manifest:\n  " + "\n  ".join(problems[:20]))
    validate_entries(entries, where=path)
    return entries


def write_manifest(entries: Iterable[ManifestEntry], path: str | os.PathLike) -> Path:
    """Validate and write a manifest CSV atomically."""
    entries = list(entries)
    validate_entries(entries, where=path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
            w.writeheader()
            for e in entries:  # csv writes None (an unknown size) as an empty field
                w.writerow(asdict(e) | {"size": e.size and int(e.size), "verified": "true" if e.verified else "false"})
    return Path(path)


def select_tier(entries: Sequence[ManifestEntry], tier: str) -> list[ManifestEntry]:
    """The rows fetched for ``tier``: ``smoke`` -> rows of tier smoke; ``full`` -> every row."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose one of {list(TIERS)}")
    return [e for e in entries if tier == "full" or e.tier == "smoke"]


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------
def rebase_url(url: str, base_url: str | None) -> str:
    """Replace the scheme and host of an http(s) URL by those of ``base_url`` (test servers).

    The path of ``base_url`` (if any) is prefixed to the URL's path, so
    ``rebase_url("https://ftp.ncbi.nlm.nih.gov/geo/x", "http://127.0.0.1:8000")`` is
    ``http://127.0.0.1:8000/geo/x``.
    """
    u, b = urlparse(url), urlparse(base_url or "")
    if not base_url or u.scheme not in ("http", "https", "ftp"):
        return url
    return urlunparse((b.scheme, b.netloc, b.path.rstrip("/") + u.path, u.params, u.query, u.fragment))


def https_from_ftp(url: str) -> str:
    """``ftp://host/path`` -> ``https://host/path`` (PRIDE serves its FTP tree over HTTPS)."""
    u = urlparse(url)
    return urlunparse(("https",) + tuple(u)[1:]) if u.scheme == "ftp" else url


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``("bucket", "key")``."""
    u = urlparse(url)
    if u.scheme != "s3" or not u.netloc:
        raise ValueError(f"not an s3:// URL: {url!r}")
    return u.netloc, u.path.lstrip("/")


# --------------------------------------------------------------------------------------------
# live listings
# --------------------------------------------------------------------------------------------
def s3_client(endpoint_url: str | None = None, *, max_pool_connections: int = 16,
              connect_timeout: float = 10, read_timeout: float = 60):
    """An anonymous (unsigned) boto3 S3 client; ``endpoint_url`` overrides AWS (test servers).

    botocore retries a failed request up to three times (throttling, 5xx, connection errors
    before a body arrives); a body broken mid-way is the caller's to resume from its partial file.
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    cfg = Config(signature_version=UNSIGNED, retries={"total_max_attempts": 3, "mode": "standard"},
                 max_pool_connections=max_pool_connections, connect_timeout=connect_timeout,
                 read_timeout=read_timeout)
    return boto3.client("s3", endpoint_url=endpoint_url, config=cfg,
                        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


def list_s3(url: str, relative_prefix: str, *, source: str, licence: str = "",
            endpoint_url: str | None = None, max_keys: int = 1_000_000) -> list[ManifestEntry]:
    """Every object under an ``s3://bucket/prefix`` (ListObjectsV2, unsigned), as manifest rows.

    ``relative_path`` is ``relative_prefix`` followed by the key's part after the prefix; the
    checksum is the object's ETag (``s3etag``).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_url(url)
    pages = s3_client(endpoint_url).get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"MaxItems": max_keys})
    try:  # an unreachable endpoint or a refused listing
        objects = [obj for page in pages for obj in page.get("Contents", [])
                   if not obj["Key"].endswith("/")]  # not the folder placeholder objects
    except (BotoCoreError, ClientError) as e:
        raise ManifestError(f"listing {url}: {type(e).__name__}: {e}") from None
    etags = [obj.get("ETag", "").strip('"').lower() for obj in objects]
    etags = [etag if CHECKSUM_PATTERNS["s3etag"].fullmatch(etag) else "" for etag in etags]
    return [ManifestEntry(source=source, url=f"s3://{bucket}/{obj['Key']}",
                          relative_path=relative_prefix + obj["Key"][len(prefix):], size=int(obj["Size"]),
                          checksum=etag, checksum_type="s3etag" if etag else "", licence=licence, verified=True)
            for obj, etag in zip(objects, etags)]


class _Links(html.parser.HTMLParser):
    """The ``href`` of every ``<a>`` tag fed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.hrefs += [v for k, v in attrs if tag == "a" and k == "href" and v]


def _directory_links(index_html: str) -> list[str]:
    """The file and sub-folder links of an HTTP directory index (no parent, sort or absolute links)."""
    parser = _Links()
    parser.feed(index_html)
    skip = ("?", "#", "/", "..", "mailto:")
    return list(dict.fromkeys(h for h in parser.hrefs if not h.startswith(skip) and "://" not in h))


LISTING_ATTEMPTS, LISTING_BACKOFF = 4, 0.5
"""Tries of a listing request and the backoff factor in seconds (urllib3's ``Retry``)."""


def _request(session, method: str, url: str, **kwargs):
    """One listing request (retried by the session, :func:`_session`); a connection that never
    succeeds, or a GET answered with other than HTTP 200, is a :class:`ManifestError`."""
    import requests

    try:
        r = session.request(method, url, **kwargs)
    except (requests.ConnectionError, requests.Timeout) as e:
        raise ManifestError(f"listing {url}: {type(e).__name__}: {e}") from e
    if method == "GET" and r.status_code != 200:
        raise ManifestError(f"listing {url}: HTTP {r.status_code}")
    return r


def _session(session=None):
    """``session`` (or a new one) whose requests are retried with backoff on connection errors
    and HTTP 5xx/429, :data:`LISTING_ATTEMPTS` tries in all."""
    import requests
    from urllib3.util.retry import Retry

    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = "i2o-data-fetch"
    retry = Retry(total=LISTING_ATTEMPTS - 1, backoff_factor=LISTING_BACKOFF, allowed_methods=None,
                  status_forcelist=[429, *range(500, 600)], raise_on_status=False)
    for prefix in ("http://", "https://"):
        session.mount(prefix, requests.adapters.HTTPAdapter(max_retries=retry))
    return session


def list_http_directory(url: str, relative_prefix: str, *, source: str, licence: str = "",
                        http_base_url: str | None = None, session=None, depth: int = 1,
                        max_files: int = 10_000, timeout: float = 30) -> list[ManifestEntry]:
    """Every file of an HTTP directory index (e.g. GEO's ``suppl/``), sizes from ``HEAD``.

    Sub-folders are followed ``depth`` levels down. URLs in the rows are the canonical ones
    (``url``'s host); the requests go to ``http_base_url`` where given. GEO publishes no
    checksums, so the rows carry none.
    """
    session = _session(session)
    rows: list[ManifestEntry] = []

    def walk(dir_url: str, rel: str, level: int) -> None:
        r = _request(session, "GET", rebase_url(dir_url, http_base_url), timeout=timeout)
        for href in _directory_links(r.text):
            if len(rows) >= max_files:
                return
            name = PurePosixPath(urlparse(href).path).name or href.rstrip("/")
            if href.endswith("/"):
                if level < depth:
                    walk(urljoin(dir_url, href), f"{rel}{name}/", level + 1)
                continue
            file_url = urljoin(dir_url, href)
            h = _request(session, "HEAD", rebase_url(file_url, http_base_url), timeout=timeout, allow_redirects=True)
            length = h.headers.get("Content-Length", "") if h.status_code == 200 else ""
            rows.append(ManifestEntry(source=source, url=file_url, relative_path=f"{rel}{name}",
                                      size=int(length) if length.isdigit() else None, licence=licence, verified=True))

    walk(url if url.endswith("/") else url + "/", relative_prefix, 0)
    return rows


def list_pride(url: str, relative_prefix: str, *, source: str, licence: str = "",
               http_base_url: str | None = None, session=None, page_size: int = 100,
               max_pages: int = 1000, timeout: float = 60) -> list[ManifestEntry]:
    """A PRIDE project's files from the Archive REST API v2 (``/projects/{acc}/files``).

    Reads pages until one comes back short or empty. Download URLs are the FTP locations served
    over HTTPS; the checksum (SHA-1 for PRIDE) is typed by its length.
    """
    session = _session(session)
    rows: list[ManifestEntry] = []
    seen = set()
    for page in range(max_pages):
        r = _request(session, "GET", rebase_url(url, http_base_url), params={"pageSize": page_size, "page": page},
                     headers={"Accept": "application/json"}, timeout=timeout)
        records = r.json()  # the file records: the page itself, its ``_embedded.files`` or its ``files``
        if isinstance(records, dict):
            emb = records.get("_embedded")
            embedded = emb.get("files") if isinstance(emb, dict) else None
            records = embedded if isinstance(embedded, list) else records.get("files")
        if not isinstance(records, list):
            raise ManifestError(f"PRIDE file list {url}: unexpected JSON (neither a list nor _embedded.files)")
        before = len(seen)
        for rec in records:
            name = rec.get("fileName")
            if not name or name in seen:
                continue
            seen.add(name)
            locs = {str(l.get("name", "")).lower(): l.get("value", "") for l in rec.get("publicFileLocations") or []}
            ftp = next((v for k, v in locs.items() if "ftp" in k and v), "") or rec.get("downloadLink", "")
            if not ftp:
                continue
            checksum = str(rec.get("checksum") or "").strip().lower()
            kind = next((k for k in ("sha256", "sha1", "md5") if CHECKSUM_PATTERNS[k].fullmatch(checksum)), "")
            size = rec.get("fileSizeBytes", rec.get("fileSize"))
            rows.append(ManifestEntry(
                source=source, url=https_from_ftp(ftp), relative_path=relative_prefix + PurePosixPath(name).name,
                size=int(size) if isinstance(size, (int, float)) or str(size).isdigit() else None,
                checksum=checksum if kind else "", checksum_type=kind, licence=licence, verified=True,
            ))
        if len(records) < page_size or len(seen) == before:
            break  # a short page ends the list; so does a page with nothing new (paging ignored)
    return rows


# --------------------------------------------------------------------------------------------
# tiers
# --------------------------------------------------------------------------------------------
_WELL_PREFIX = re.compile(r"^(ICF|TILES|RAW)[._-]", re.IGNORECASE)


def well_key(file_name: str) -> str:
    """The part of a per-well file name shared by its ICF and TILES files (prefix and ``.h5`` off)."""
    return _WELL_PREFIX.sub("", re.sub(r"(?i)\.h5$", "", PurePosixPath(file_name).name))


def pick_smoke_wells(icf_names: Sequence[str], tiles_names: Sequence[str], n: int) -> set[str]:
    """``n`` well keys present in both folders, taken in turn from each plate (sorted), so the smoke
    tier spans plates. Where no name pairs up (an unexpected naming), the first ``n`` of each."""
    icf = {well_key(x) for x in icf_names}
    tiles = {well_key(x) for x in tiles_names}
    common = sorted(icf & tiles) if icf and tiles else sorted(icf | tiles)
    if not common:
        return set(sorted(icf)[:n]) | set(sorted(tiles)[:n])
    keys = pd.DataFrame({"key": common, "plate": [k.rsplit("_", 1)[-1] if "_" in k else "" for k in common]})
    keys["turn"] = keys.groupby("plate").cumcount()  # the k-th well of each plate, plates in order
    return set(keys.sort_values(["turn", "plate"], kind="stable")["key"].head(n))


_S3_SMOKE = re.compile(r"^(data/metadata\.csv$|data/GT/[^/]+\.csv$|third-party/|checkpoints/[^/]+/config\.ya?ml$)")
_TABLE_EXT = (".txt", ".tsv", ".csv", ".xlsx", ".xls", ".zip")
_RAW_EXT = (".raw", ".mzml", ".mgf", ".wiff", ".d", ".mzxml", ".tar")
_IMAGE_FOLDER = re.compile(r"(^|/)(ICF|TILES)/")


def assign_tiers(kind: str, entries: Sequence[ManifestEntry], smoke_wells: int = DEFAULT_SMOKE_WELLS,
                 max_smoke_bytes: int = SMOKE_MAX_BYTES) -> list[ManifestEntry]:
    """Give each listed file its tier by the source's rule.

    ``s3``: smoke = ``data/metadata.csv``, ``data/GT/*.csv``, ``third-party/*``, the checkpoint
    configs, and ``smoke_wells`` wells of ``data/ICF`` with their ``data/TILES`` files.
    ``geo``: smoke = the series matrix and supplementary tables up to ``max_smoke_bytes``
    (not ``*_RAW.tar``). ``pride``: smoke = tables (txt/tsv/csv/xlsx/zip) up to
    ``max_smoke_bytes``; instrument files (RAW, peak lists) are full only.
    """
    if kind not in SOURCES:
        raise ValueError(f"unknown source {kind!r}")
    paths = [e.relative_path for e in entries]
    wells = pick_smoke_wells([p for p in paths if "/ICF/" in f"/{p}"], [p for p in paths if "/TILES/" in f"/{p}"],
                             smoke_wells) if kind == "s3" else set()

    def smoke(e: ManifestEntry) -> bool:
        name = PurePosixPath(e.relative_path).name.lower().removesuffix(".gz")
        if kind == "s3" and _IMAGE_FOLDER.search(e.relative_path):
            return well_key(e.relative_path) in wells
        if kind == "s3":
            return _S3_SMOKE.search(e.relative_path) is not None
        if kind == "geo":
            return ((e.size is None or e.size <= max_smoke_bytes) and not name.endswith(_RAW_EXT)
                    and ("series_matrix" in name or name.endswith(_TABLE_EXT)))
        return e.size is not None and e.size <= max_smoke_bytes and name.endswith(_TABLE_EXT)

    return [replace(e, tier="smoke" if smoke(e) else "full") for e in entries]


def _kind_of(entry: ManifestEntry) -> str:
    """The entry's source by its manifest name, else by its URL."""
    if entry.source in SOURCES.values():
        return source_kind(entry.source)
    return "s3" if urlparse(entry.url).scheme == "s3" else "pride" if "/pride/" in entry.url else "geo"


def list_entry(entry: ManifestEntry, *, s3_endpoint_url: str | None = None,
               http_base_url: str | None = None) -> list[ManifestEntry]:
    """Expand one listing row into the files the source lists under its ``url``."""
    common = dict(source=entry.source, licence=entry.licence)
    if urlparse(entry.url).scheme == "s3":
        return list_s3(entry.url, entry.relative_path, endpoint_url=s3_endpoint_url, **common)
    lister = list_pride if _kind_of(entry) == "pride" else list_http_directory
    return lister(entry.url, entry.relative_path, http_base_url=http_base_url, **common)


def expand_listings(entries: Sequence[ManifestEntry], tier: str, *, s3_endpoint_url: str | None = None,
                    http_base_url: str | None = None, smoke_wells: int = DEFAULT_SMOKE_WELLS) -> list[ManifestEntry]:
    """The concrete files to fetch for ``tier``: explicit rows, plus the listing rows expanded.

    Explicit rows win over listed files of the same ``relative_path`` (they may carry a stronger
    checksum). The result is validated (paths, checksums) like a manifest read from disk.
    """
    chosen = select_tier(entries, tier)
    explicit = [e for e in chosen if not e.is_listing]
    listed = [f for e in chosen if e.is_listing
              for f in list_entry(e, s3_endpoint_url=s3_endpoint_url, http_base_url=http_base_url)]
    unique: dict[str, ManifestEntry] = {}
    for e in listed:  # a listed path can appear twice when two listing rows overlap; keep the first
        unique.setdefault(e.relative_path, e)
    have = {e.relative_path for e in explicit}
    listed = [e for path, e in unique.items() if path not in have]
    kinds = dict.fromkeys(map(_kind_of, listed))
    tiered = [t for kind in kinds for t in assign_tiers(kind, [e for e in listed if _kind_of(e) == kind],
                                                        smoke_wells=smoke_wells)]
    out = explicit + [e for e in tiered if tier == "full" or e.tier == "smoke"]
    validate_entries(out, where="expanded listing")
    return out


def build_manifest(source: str, *, s3_endpoint_url: str | None = None, http_base_url: str | None = None,
                   smoke_wells: int = DEFAULT_SMOKE_WELLS, seed: Sequence[ManifestEntry] | None = None
                   ) -> list[ManifestEntry]:
    """Rebuild a source's manifest from its live listing.

    The listing rows of the committed manifest (``seed``; default: read from
    ``data_manifests/``) say where to list; every listed file becomes a row with
    ``verified=true``, its size and the upstream checksum, and a tier by :func:`assign_tiers`.
    Explicit seed rows that the listing does not show are left out (with a warning naming them):
    the live listing is the authority.
    """
    kind = source_kind(source)
    seed = list(seed) if seed is not None else read_manifest(manifest_path(kind))
    if kind == "s3":
        # the whole bucket, as the authors' `aws s3 sync` takes it; seed rows give the licences
        bucket = next((split_s3_url(e.url)[0] for e in seed if e.url.startswith("s3://")), S3_BUCKET)
        default = next((e.licence for e in seed), "")
        licences = {e.relative_path: e.licence for e in seed}
        listed = [replace(e, licence=_licence_for(e.relative_path, licences, default))
                  for e in list_s3(f"s3://{bucket}/", "", source=SOURCES["s3"], endpoint_url=s3_endpoint_url)]
    else:
        listed = [f for e in seed if e.is_listing
                  for f in list_entry(e, s3_endpoint_url=s3_endpoint_url, http_base_url=http_base_url)]
    listed = assign_tiers(kind, listed, smoke_wells=smoke_wells)
    got = {e.relative_path: e for e in listed}
    explicit = [e for e in seed if not e.is_listing]
    absent = [e.relative_path for e in explicit if e.relative_path not in got]
    rows = [replace(live, tier=e.tier, licence=e.licence or live.licence)
            for e in explicit if (live := got.pop(e.relative_path, None))]
    if absent:
        log.warning("%s: %d file(s) of the committed manifest are not in the live listing and are left out: %s",
                    source, len(absent), ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else ""))
    rows.extend(sorted(got.values(), key=lambda r: r.relative_path))
    validate_entries(rows, where=f"live listing of {source}")
    return rows


def _licence_for(path: str, licences: dict[str, str], default: str) -> str:
    """The licence of the longest seed path that is ``path`` or a folder above it."""
    above = [p for p in licences if path == p or (p.endswith("/") and path.startswith(p))]
    return licences[max(above, key=len)] if above else default
