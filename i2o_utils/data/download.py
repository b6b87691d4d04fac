"""Fetch the files of a manifest from S3 or HTTPS with requests, reliably (an S3 object through the
unsigned HTTPS URL botocore gives it).

Every file is downloaded to ``<name>.part`` beside its final path, checked against the manifest
(checksum, else size) and only then renamed, so an interrupted run never leaves a file that
looks complete. A later run resumes the ``.part`` with an HTTP ``Range`` request and restarts
from zero when the server ignores ranges. Transient faults
(HTTP 5xx, 408, 429, connection resets, bodies cut short, timeouts) are retried with exponential
backoff a bounded number of times; a checksum mismatch is an error, and the bad data are
removed. A file already present whose checksum matches is skipped.

Sources that publish no checksum (GEO) are checked by size; the SHA-256 of every such file is
kept in a ledger (``.i2o_fetch_ledger.jsonl`` in the destination) so that a later run can still
tell an intact file from a damaged one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import pandas as pd
from tqdm.auto import tqdm

from i2o_utils.data.manifests import (
    DEFAULT_SMOKE_WELLS,
    ManifestEntry,
    ManifestError,
    expand_listings,
    manifest_path,
    read_manifest,
    rebase_url,
    s3_client,
    safe_destination,
    split_s3_url,
    validate_entries,
)

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
LEDGER_NAME = ".i2o_fetch_ledger.jsonl"
MIB = 1 << 20


class FetchError(RuntimeError):
    """A file could not be fetched (permanent error, checksum mismatch, or retries exhausted)."""


class ChecksumMismatch(FetchError):
    """The downloaded bytes do not match the manifest's checksum or size."""


class _Transient(Exception):
    """A fault worth retrying: the partial file is kept and resumed."""


class _Restart(_Transient):
    """A fault worth retrying once the partial file is removed."""


@dataclass(frozen=True)
class FetchOptions:
    """Knobs of a fetch.

    Attributes
    ----------
    workers
        Files downloaded at once (bounded thread pool).
    max_attempts
        Tries per file before it is reported as failed.
    backoff, max_backoff
        Seconds before retry ``k`` (1-based): ``min(max_backoff, backoff * 2**(k-1))``, +-25 % jitter.
    timeout
        ``(connect, read)`` seconds per request; a stalled body raises after ``read`` seconds.
    chunk_size
        Bytes read per chunk; an interrupted download keeps every whole chunk it received.
    progress
        Show a total and a per-file progress bar.
    """

    workers: int = 4
    max_attempts: int = 6
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: tuple[float, float] = (10.0, 60.0)
    chunk_size: int = 256 << 10
    progress: bool = True


@dataclass
class FileResult:
    """What happened to one file: ``status`` is ``fetched``, ``skipped`` or ``failed``."""

    relative_path: str
    status: str
    bytes_downloaded: int = 0
    verified_by: str = ""
    """``sha256``/``sha1``/``md5``/``s3etag`` (upstream checksum), ``ledger`` (SHA-256 recorded at
    an earlier download), ``size`` (no checksum published), or ``none``."""
    attempts: int = 0
    error: str = ""


@dataclass(repr=False)
class FetchSummary:
    """The outcome of a fetch: one :class:`FileResult` per file."""

    results: list[FileResult] = field(default_factory=list)
    dest: Path | None = None

    def _with(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def fetched(self) -> list[FileResult]:
        """Files downloaded and verified."""
        return self._with("fetched")

    @property
    def skipped(self) -> list[FileResult]:
        """Files already present and intact."""
        return self._with("skipped")

    @property
    def failed(self) -> list[FileResult]:
        """Files that could not be fetched."""
        return self._with("failed")

    @property
    def ok(self) -> bool:
        """Whether no file failed."""
        return not self.failed

    def to_frame(self):
        """The results as a DataFrame (one row per file)."""
        return pd.DataFrame(map(asdict, self.results), columns=[f.name for f in fields(FileResult)])

    def __str__(self) -> str:
        weak = [r for r in self.results if r.status != "failed" and r.verified_by in ("size", "none")]
        lines = [f"fetched {len(self.fetched)}, skipped {len(self.skipped)} (already intact), "
                 f"failed {len(self.failed)}; {sum(r.bytes_downloaded for r in self.results) / MIB:.1f} MiB downloaded"
                 + (f" into {self.dest}" if self.dest else "")]
        if weak:
            lines.append(f"{len(weak)} file(s) checked by size only: the source publishes no checksum")
        lines += [f"  FAILED {r.relative_path}: {r.error}" for r in self.failed]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"FetchSummary(fetched={len(self.fetched)}, skipped={len(self.skipped)}, "
                f"failed={len(self.failed)}, dest={str(self.dest)!r})")

    def raise_for_failures(self) -> None:
        """Raise :class:`FetchError` listing the failed files, if any."""
        if self.failed:
            raise FetchError(str(self))


# --------------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------------
def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``sha256``, ``sha1`` or ``md5``)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def s3_multipart_etag(path: str | os.PathLike, part_size: int) -> str:
    """The ETag S3 gives a multipart upload: MD5 of the parts' MD5 digests, ``-<parts>``."""
    with open(path, "rb") as f:
        digests = [hashlib.md5(block).digest() for block in iter(lambda: f.read(part_size), b"")]
    digests = digests or [hashlib.md5(b"").digest()]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def checked_by(entry: ManifestEntry) -> str:
    """How a file of ``entry`` is checked: its checksum type, else ``size``, else ``none``."""
    return entry.checksum_type or ("size" if entry.size is not None else "none")


def checksum_matches(path: str | os.PathLike, entry: ManifestEntry, part_size_hint: int | None = None) -> bool | None:
    """Whether a local file matches the entry's size and checksum (:func:`checked_by` says by what);
    ``None`` when the entry carries no checksum and the size matched or is unknown."""
    size = os.path.getsize(path)
    kind = entry.checksum_type
    if entry.size is not None and size != entry.size:
        return False
    if not entry.checksum:
        return None
    if kind in ("sha256", "sha1", "md5"):
        return file_digest(path, kind) == entry.checksum
    if kind == "s3etag" and "-" not in entry.checksum:  # a single-part upload: the MD5 of the object
        return file_digest(path, "md5") == entry.checksum
    if kind == "s3etag":
        # part sizes that could have given n parts: the server's hint, common client defaults (8 MiB
        # for the AWS CLI, 5/16/64/100 MiB) and the smallest whole MiB that fits
        n = int(entry.checksum.split("-")[1])
        sizes = [part_size_hint, 8 * MIB, 16 * MIB, 5 * MIB, 64 * MIB, 100 * MIB, math.ceil(size / n / MIB) * MIB]
        return any(s3_multipart_etag(path, ps) == entry.checksum
                   for ps in dict.fromkeys(sizes) if ps and math.ceil(size / ps) == n)
    raise ManifestError(f"{entry.relative_path}: unknown checksum_type {kind!r}")


class _Ledger:
    """Append-only record of the SHA-256 of files fetched without an upstream checksum."""

    def __init__(self, dest: Path):
        self.path = dest / LEDGER_NAME
        self._lock = threading.Lock()
        self.records: dict[str, dict] = {}  # relative_path -> the last record
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):  # a line cut by an interrupted write
                    rec = json.loads(line)
                    self.records[rec["relative_path"]] = rec

    def record(self, entry: ManifestEntry, sha256: str, size: int) -> None:
        rec = {"relative_path": entry.relative_path, "url": entry.url, "sha256": sha256, "size": size}
        with self._lock:  # the destination exists: the fetch made it
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.records[entry.relative_path] = rec


# --------------------------------------------------------------------------------------------
# one file: ranged GETs with requests
# --------------------------------------------------------------------------------------------
def part_path(target: Path) -> Path:
    """The partial-download file beside ``target`` (``<name>.part``)."""
    return target.with_name(target.name + PART_SUFFIX)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Fetcher:
    """Fetches one file per call, from the pool's threads, with ranged GETs (one requests session per
    thread; an S3 object by its HTTPS URL, path-style on a custom endpoint)."""

    def __init__(self, dest: Path, opts: FetchOptions, base_url: str | None, s3, total_bar):
        import requests
        import urllib3

        self.dest, self.opts, self.base_url, self.s3 = dest, opts, base_url, s3
        self.ledger = _Ledger(dest)
        self.total_bar = total_bar
        self._local = threading.local()
        self._bar_lock = threading.Lock()
        self.transient = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                          requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError,
                          ConnectionError, TimeoutError)

    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            import requests

            s = requests.Session()
            self._local.session = s
            s.headers["User-Agent"] = "i2o-data-fetch"
        return s

    def part_size_hint(self, entry: ManifestEntry) -> int | None:
        """Size of part 1 of a multipart S3 object (to recompute its ETag); ``None`` if unknown."""
        if urlparse(entry.url).scheme != "s3":
            return None
        bucket, key = split_s3_url(entry.url)
        with contextlib.suppress(Exception):  # only a hint: the common part sizes are tried after it
            return int(self.s3.head_object(Bucket=bucket, Key=key, PartNumber=1)["ContentLength"])
        return None

    def open(self, entry: ManifestEntry, offset: int):
        """GET the object from byte ``offset``: ``(response, start, total)``, ``start`` being
        ``offset``, or 0 where the server ignored the range; ``None`` when the partial file already
        holds the whole object (HTTP 416 at its end)."""
        url = rebase_url(entry.url, self.base_url)
        if urlparse(entry.url).scheme == "s3":
            bucket, key = split_s3_url(entry.url)
            url = self.s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
        headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={offset}-"} if offset else {})
        try:
            r = self._session().get(url, headers=headers, stream=True, timeout=self.opts.timeout)
        except self.transient as e:
            raise _Transient(f"{type(e).__name__}: {e}") from e
        code = r.status_code
        # 'bytes 100-199/1000': start 100 of a 1000-byte object; 'bytes */1000' (416): the size only
        m = re.fullmatch(r"bytes\s+(?:(\d+)-\d*|\*)/(\d+|\*)", r.headers.get("Content-Range", "").strip())
        start = int(m[1]) if m and m[1] else None
        total = int(m[2]) if m and m[2].isdigit() else None
        if code == 200:
            length = r.headers.get("Content-Length", "")
            start = 0
            total = int(length) if length.isdigit() else None
        if code in (200, 206) and start in (0, offset):
            return r, start, total
        retry = code in (206, 408, 416, 429) or code >= 500
        s3_code = None if retry else re.search(r"<Code>([^<]{1,64})</Code>", r.text[:4096])  # e.g. NoSuchKey
        r.close()
        if code == 416 and offset and total in (None, offset):
            return None
        if code == 416:
            raise _Restart("stale partial file longer than the object; restarting")
        if retry:
            odd = f", Content-Range {r.headers.get('Content-Range')!r} for bytes from {offset}" if code == 206 else ""
            raise _Transient(f"HTTP {code} from {url}{odd}")
        raise FetchError(f"HTTP {code}{' ' + s3_code[1] if s3_code else ''} from {url}")

    def _advance_total(self, n: int) -> None:
        with self._bar_lock:
            self.total_bar.update(n)

    def _verify(self, path: Path, entry: ManifestEntry) -> tuple[bool | None, str]:
        """:func:`checksum_matches` and :func:`checked_by`."""
        multipart = entry.checksum_type == "s3etag" and "-" in entry.checksum
        return checksum_matches(path, entry, self.part_size_hint(entry) if multipart else None), checked_by(entry)

    def fetch(self, entry: ManifestEntry) -> FileResult:
        res = FileResult(entry.relative_path, "failed")
        try:
            target = safe_destination(self.dest, entry.relative_path)
            if target.exists():  # kept if intact: by its checksum, else by the ledger's SHA-256
                ok, how = self._verify(target, entry)
                rec = self.ledger.records.get(entry.relative_path)
                if ok is None and rec and rec.get("url") == entry.url and rec.get("size") == target.stat().st_size:
                    ok, how = file_digest(target, "sha256") == rec.get("sha256"), "ledger"
                elif ok is None:
                    ok, how = False, "no record"
                if ok:
                    res.status, res.verified_by = "skipped", how
                    self._advance_total(entry.size or 0)
                    return res
                log.info("%s: present but %s; fetching again", entry.relative_path,
                         "not recorded" if how == "no record" else f"{how} does not match")
                if how != "no record":
                    target.unlink()  # known to be damaged: never leave it looking complete
            target.parent.mkdir(parents=True, exist_ok=True)
            return self._download(entry, target, res)
        except (FetchError, ManifestError, OSError) as e:
            res.status, res.error = "failed", f"{type(e).__name__}: {e}"
            return res

    def _receive(self, entry: ManifestEntry, part: Path, res: FileResult, bar, credit) -> bool:
        """One GET appended to ``part`` from its length (or written from zero where the server ignores
        the range); whether bytes of an earlier request were kept."""
        offset = _size(part)
        if entry.size is not None and offset > entry.size:
            part.unlink()
            offset = 0
        opened = self.open(entry, offset)
        if opened is None:
            return True  # the partial file already holds the whole object
        r, start, total = opened
        if offset and not start:
            log.info("%s: server ignored the byte range; restarting from zero", entry.relative_path)
        bar.reset(total=entry.size or total)
        bar.update(start)
        try:
            with open(part, "ab" if start else "wb") as f:
                # raw bytes as sent: no transparent gunzip of .gz files served with Content-Encoding
                for chunk in r.raw.stream(self.opts.chunk_size, decode_content=False):
                    f.write(chunk)
                    res.bytes_downloaded += len(chunk)
                    bar.update(len(chunk))
                    credit(f.tell())
                f.flush()
                os.fsync(f.fileno())
        except self.transient as e:
            raise _Transient(f"connection broken mid-body: {type(e).__name__}: {e}") from e
        finally:
            r.close()
        expected = entry.size if entry.size is not None else total
        got = part.stat().st_size
        if expected is not None and got != expected:
            raise (_Restart if got > expected else _Transient)(f"received {got} of {expected} bytes")
        return start > 0

    def _download(self, entry: ManifestEntry, target: Path, res: FileResult) -> FileResult:
        part = part_path(target)
        opts = self.opts
        resumed = False  # whether any byte of the partial file came from an earlier request
        clean_retry_done = False
        counted = 0  # bytes credited to the total bar for this file

        def credit(have: int) -> None:
            nonlocal counted
            if entry.size and have > counted:
                self._advance_total(min(have, entry.size) - counted)
                counted = min(have, entry.size)

        with tqdm(total=entry.size, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                  desc=Path(entry.relative_path).name[-40:], disable=not opts.progress) as bar:
            for attempt in range(1, opts.max_attempts + 1):
                res.attempts = attempt
                try:
                    resumed = self._receive(entry, part, res, bar, credit) or resumed
                    ok, how = self._verify(part, entry)
                    if ok is False:
                        part.unlink(missing_ok=True)
                        if resumed and not clean_retry_done and attempt < opts.max_attempts:
                            # a resumed file can mix two versions of the object: one clean retry
                            clean_retry_done, resumed = True, False
                            raise _Transient(f"{how} mismatch of a resumed download; fetching once more from zero")
                        raise ChecksumMismatch(f"{how} of the downloaded file does not match the manifest "
                                               f"({entry.checksum or entry.size}); nothing kept")
                    if ok is None:
                        self.ledger.record(entry, file_digest(part, "sha256"), part.stat().st_size)
                    os.replace(part, target)
                    _fsync_dir(target.parent)
                    credit(entry.size or 0)
                    res.status, res.verified_by, res.error = "fetched", how, ""
                    return res
                except _Transient as e:
                    res.error = str(e)
                    if isinstance(e, _Restart):
                        part.unlink(missing_ok=True)
                    if attempt < opts.max_attempts:
                        delay = min(opts.max_backoff, opts.backoff * 2 ** (attempt - 1))
                        delay *= random.uniform(0.75, 1.25)
                        log.info("%s: %s; retry %d/%d in %.2f s", entry.relative_path, e, attempt,
                                 opts.max_attempts - 1, delay)
                        time.sleep(delay)
            res.status, res.error = "failed", f"gave up after {opts.max_attempts} attempts: {res.error}"
            return res


# --------------------------------------------------------------------------------------------
# many files
# --------------------------------------------------------------------------------------------
def _refuse_malformed(entries: Sequence[ManifestEntry], dest: str | os.PathLike, where: str) -> None:
    """Every row well formed and landing inside ``dest``, else :class:`ManifestError` (nothing fetched)."""
    validate_entries(entries, where=where)
    for e in entries:
        safe_destination(dest, e.relative_path)


def fetch_entries(entries: Sequence[ManifestEntry], dest: str | os.PathLike, *,
                  options: FetchOptions | None = None, s3_endpoint_url: str | None = None,
                  http_base_url: str | None = None) -> FetchSummary:
    """Fetch concrete manifest entries (no listing rows) into ``dest``.

    Every entry is checked before the first byte is downloaded: a malformed row or a path that
    escapes ``dest`` raises :class:`~i2o_utils.data.manifests.ManifestError` and nothing is fetched.

    Parameters
    ----------
    entries
        Rows with ``s3://`` or ``http(s)://`` URLs.
    dest
        Destination folder (created if needed); ``relative_path`` is resolved under it.
    s3_endpoint_url, http_base_url
        Endpoint overrides (S3-compatible server; scheme and host of HTTP URLs).

    Returns
    -------
    FetchSummary
        fetched / skipped / failed per file (failures do not raise; see
        :meth:`FetchSummary.raise_for_failures`).
    """
    opts = options or FetchOptions()
    dest = Path(dest)
    entries = list(entries)
    _refuse_malformed(entries, dest, "fetch list")
    listing = [e.relative_path for e in entries if e.is_listing]
    if listing:
        raise ManifestError(f"listing rows must be expanded before fetching: {listing[:3]}")
    if opts.workers < 1:
        raise ValueError("workers must be >= 1")
    dest.mkdir(parents=True, exist_ok=True)
    need = 0  # the known bytes still to come: less intact files and partial downloads
    for e in entries:
        target = safe_destination(dest, e.relative_path)
        if e.size is not None and _size(target) != e.size:
            need += max(0, e.size - _size(part_path(target)))
    free = shutil.disk_usage(dest).free
    if need > free:
        raise FetchError(f"{dest}: {need / 2**30:.1f} GiB still to fetch but only {free / 2**30:.1f} GiB free")
    s3 = None
    if any(urlparse(e.url).scheme == "s3" for e in entries):
        s3 = s3_client(s3_endpoint_url, max_pool_connections=max(10, opts.workers * 2),
                       connect_timeout=opts.timeout[0], read_timeout=opts.timeout[1])
    with tqdm(total=sum(e.size or 0 for e in entries) or None, unit="B", unit_scale=True, unit_divisor=1024,
              desc=f"total ({len(entries)} files)", disable=not opts.progress) as total_bar, \
            ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="i2o-fetch") as pool:
        fetcher = _Fetcher(dest, opts, http_base_url, s3, total_bar)
        try:
            results = list(pool.map(fetcher.fetch, entries))  # in the order of ``entries``
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return FetchSummary(results, dest=dest)


def fetch_manifest(manifest: str | os.PathLike | Sequence[ManifestEntry], dest: str | os.PathLike,
                   tier: str = "smoke", *, options: FetchOptions | None = None,
                   s3_endpoint_url: str | None = None, http_base_url: str | None = None,
                   smoke_wells: int = DEFAULT_SMOKE_WELLS) -> FetchSummary:
    """Read (and validate) a manifest, expand its listing rows for ``tier``, fetch into ``dest``.

    A malformed manifest is refused with :class:`~i2o_utils.data.manifests.ManifestError`
    before any listing or download.
    """
    from_file = isinstance(manifest, (str, os.PathLike))
    entries = read_manifest(manifest) if from_file else list(manifest)
    _refuse_malformed(entries, dest, str(manifest) if from_file else "manifest")
    concrete = expand_listings(entries, tier, s3_endpoint_url=s3_endpoint_url, http_base_url=http_base_url,
                               smoke_wells=smoke_wells)
    return fetch_entries(concrete, dest, options=options, s3_endpoint_url=s3_endpoint_url, http_base_url=http_base_url)


def describe_plan(entries: Sequence[ManifestEntry]) -> str:
    """Files and bytes per top-level folder of a fetch plan (unknown sizes counted apart)."""
    def line(label: str, es: Sequence[ManifestEntry], unknown_files: str) -> str:
        unknown = sum(e.size is None for e in es)
        return (f"{label}: {len(es)} file(s), {sum(e.size or 0 for e in es) / 2**30:.3f} GiB"
                + (f" + {unknown} {unknown_files}of unknown size" if unknown else ""))

    groups: dict[str, list[ManifestEntry]] = {}
    for e in entries:
        groups.setdefault("/".join(e.relative_path.split("/")[:2]), []).append(e)
    return "\n".join([f"  {line(top, es, '')}" for top, es in sorted(groups.items())]
                     + [line("total", entries, "file(s) ")])


def fetch_source(source: str, tier: str, dest: str | os.PathLike, *, manifest: str | os.PathLike | None = None,
                 **kwargs) -> FetchSummary:
    """Fetch one source (``s3``, ``geo`` or ``pride``) by its committed manifest (or ``manifest``);
    the keywords of :func:`fetch_manifest` (``options``, endpoints, ``smoke_wells``) pass through."""
    return fetch_manifest(manifest or manifest_path(source), dest, tier, **kwargs)
