"""HTTP downloads against a loopback server that injects faults: resumption with Range, retries
on 5xx and resets, checksum errors, servers without Range support, bounded retries."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from i2o_utils.data.download import LEDGER_NAME, FetchOptions, fetch_entries, part_path
from tests.support.loopback import FaultyHTTPServer
from i2o_utils.data.manifests import ManifestEntry

FAST = FetchOptions(workers=2, backoff=0.01, max_backoff=0.05, timeout=(2.0, 2.0), chunk_size=8192,
                    progress=False)
BODY = os.urandom(200_000)
SHA = hashlib.sha256(BODY).hexdigest()


def entry(name: str, *, checksum: str | None = SHA, size: int | None = len(BODY), kind: str = "sha256"):
    return ManifestEntry("geo_GSE237485", f"https://ftp.example.org/f/{name}", f"upstream/{name}", size,
                         checksum or "", kind if checksum else "", "smoke", "test", True)


@pytest.fixture
def server():
    with FaultyHTTPServer(chunk=8192) as srv:
        yield srv


def gets(srv, name):
    return [r for r in srv.requests if r[0] == "GET" and r[1] == f"/f/{name}"]


def test_body_cut_mid_file_is_resumed_with_range(server, tmp_path):
    server.add("/f/a.bin", BODY)
    server.faults["/f/a.bin"] = ["cut"]
    s = fetch_entries([entry("a.bin")], tmp_path, options=FAST, http_base_url=server.url)
    assert s.ok and s.fetched[0].attempts == 2 and s.fetched[0].verified_by == "sha256"
    first, second = gets(server, "a.bin")
    assert first[2] is None and second[2] == f"bytes={len(BODY) // 2}-" and second[3] == 206
    assert s.fetched[0].bytes_downloaded == len(BODY)  # half, then the other half: nothing twice
    assert (tmp_path / "upstream/a.bin").read_bytes() == BODY
    assert not part_path(tmp_path / "upstream/a.bin").exists()


def test_500_then_200_and_a_connection_reset_are_retried(server, tmp_path):
    server.add("/f/b.bin", BODY)
    server.faults["/f/b.bin"] = ["500", "reset", "503"]
    s = fetch_entries([entry("b.bin")], tmp_path, options=FAST, http_base_url=server.url)
    assert s.ok and s.fetched[0].attempts == 4
    assert [r[3] for r in gets(server, "b.bin")] == [500, 0, 503, 200]
    assert (tmp_path / "upstream/b.bin").read_bytes() == BODY


def test_wrong_checksum_is_an_error_and_leaves_no_file(server, tmp_path):
    server.add("/f/c.bin", BODY)
    bad = entry("c.bin", checksum=hashlib.sha256(b"something else").hexdigest())
    s = fetch_entries([bad], tmp_path, options=FAST, http_base_url=server.url)
    assert not s.ok and "does not match" in s.failed[0].error
    assert len(gets(server, "c.bin")) == 1  # a clean download that mismatches is not repeated
    assert not (tmp_path / "upstream/c.bin").exists()
    assert not part_path(tmp_path / "upstream/c.bin").exists()
    with pytest.raises(Exception, match="c.bin"):
        s.raise_for_failures()
    # a damaged local copy is removed even when the new download fails its check too
    (tmp_path / "upstream/c.bin").write_bytes(BODY)
    s = fetch_entries([bad], tmp_path, options=FAST, http_base_url=server.url)
    assert not s.ok and not (tmp_path / "upstream/c.bin").exists()


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    server.add("/f/d.bin", BODY)
    server.no_range.add("/f/d.bin")
    server.faults["/f/d.bin"] = ["cut"]
    s = fetch_entries([entry("d.bin")], tmp_path, options=FAST, http_base_url=server.url)
    assert s.ok
    first, second = gets(server, "d.bin")
    assert second[2] == f"bytes={len(BODY) // 2}-" and second[3] == 200  # range asked, ignored
    assert (tmp_path / "upstream/d.bin").read_bytes() == BODY


def test_stale_partial_file_of_another_version_is_replaced(server, tmp_path):
    server.add("/f/e.bin", BODY)
    target = tmp_path / "upstream/e.bin"
    target.parent.mkdir(parents=True)
    part_path(target).write_bytes(os.urandom(1000))  # not a prefix of BODY
    s = fetch_entries([entry("e.bin")], tmp_path, options=FAST, http_base_url=server.url)
    assert s.ok and target.read_bytes() == BODY
    assert [r[2] for r in gets(server, "e.bin")] == ["bytes=1000-", None]  # resumed, mismatch, clean retry


def test_complete_partial_file_is_verified_without_a_body(server, tmp_path):
    server.add("/f/p.bin", BODY)
    target = tmp_path / "upstream/p.bin"
    target.parent.mkdir(parents=True)
    part_path(target).write_bytes(BODY)
    s = fetch_entries([entry("p.bin")], tmp_path, options=FAST, http_base_url=server.url)
    assert s.ok and s.fetched[0].bytes_downloaded == 0 and target.read_bytes() == BODY
    assert [r[3] for r in gets(server, "p.bin")] == [416]


def test_retries_are_bounded_and_404_is_not_retried(server, tmp_path):
    server.add("/f/f.bin", BODY)
    server.faults["/f/f.bin"] = ["503"] * 10
    opts = FetchOptions(**{**FAST.__dict__, "max_attempts": 3})
    s = fetch_entries([entry("f.bin"), entry("missing.bin")], tmp_path, options=opts, http_base_url=server.url)
    by = {r.relative_path: r for r in s.results}
    assert by["upstream/f.bin"].status == "failed" and "gave up after 3 attempts" in by["upstream/f.bin"].error
    assert len(gets(server, "f.bin")) == 3
    assert by["upstream/missing.bin"].status == "failed" and "HTTP 404" in by["upstream/missing.bin"].error
    assert len(gets(server, "missing.bin")) == 1
    assert "failed 2" in str(s)


def test_files_without_checksum_are_size_checked_and_kept_in_the_ledger(server, tmp_path):
    server.add("/f/g.bin", BODY)
    e = entry("g.bin", checksum=None)
    s = fetch_entries([e], tmp_path, options=FAST, http_base_url=server.url)
    assert s.ok and s.fetched[0].verified_by == "size"
    rec = [json.loads(x) for x in (tmp_path / LEDGER_NAME).read_text().splitlines()]
    assert rec[-1]["sha256"] == SHA and rec[-1]["relative_path"] == "upstream/g.bin"
    again = fetch_entries([e], tmp_path, options=FAST, http_base_url=server.url)
    assert len(again.skipped) == 1 and again.skipped[0].verified_by == "ledger"
    # same size, other bytes: the ledger's SHA-256 catches it
    (tmp_path / "upstream/g.bin").write_bytes(bytes(len(BODY)))
    third = fetch_entries([e], tmp_path, options=FAST, http_base_url=server.url)
    assert len(third.fetched) == 1 and (tmp_path / "upstream/g.bin").read_bytes() == BODY
    # a body longer than the manifest's size is never kept
    server.add("/f/g.bin", BODY + b"x")
    (tmp_path / "upstream/g.bin").unlink()
    opts = FetchOptions(**{**FAST.__dict__, "max_attempts": 2})
    fourth = fetch_entries([e], tmp_path, options=opts, http_base_url=server.url)
    assert not fourth.ok and not (tmp_path / "upstream/g.bin").exists()


def test_many_files_concurrently_with_progress_bars(server, tmp_path, capsys):
    entries = []
    for i in range(6):
        body = os.urandom(30_000 + i)
        sha = server.add(f"/f/m{i}.bin", body)
        entries.append(ManifestEntry("geo_GSE237485", f"https://ftp.example.org/f/m{i}.bin", f"m/m{i}.bin",
                                     len(body), sha, "sha256", "full", "test", True))
    server.faults["/f/m2.bin"] = ["cut"]
    server.faults["/f/m4.bin"] = ["500"]
    opts = FetchOptions(**{**FAST.__dict__, "workers": 3, "progress": True})
    s = fetch_entries(entries, tmp_path, options=opts, http_base_url=server.url)
    assert s.ok and len(s.fetched) == 6
    assert "total (6 files)" in capsys.readouterr().err
    frame = s.to_frame()
    assert list(frame["status"]) == ["fetched"] * 6 and list(frame["relative_path"]) == [e.relative_path for e in entries]


def test_too_little_free_space_is_refused_before_any_request(server, tmp_path, monkeypatch):
    import shutil

    from i2o_utils.data import download

    server.add("/f/h.bin", BODY)
    target = tmp_path / "upstream/h.bin"
    target.parent.mkdir(parents=True)
    part_path(target).write_bytes(BODY[:150_000])  # a partial download counts as fetched
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: usage._replace(free=100_000))
    with pytest.raises(download.FetchError, match=f"{tmp_path}: .* GiB still to fetch"):
        fetch_entries([entry("h.bin"), entry("h2.bin")], tmp_path, options=FAST, http_base_url=server.url)
    assert server.requests == []
    s = fetch_entries([entry("h.bin")], tmp_path, options=FAST, http_base_url=server.url)
    assert s.ok and s.fetched[0].bytes_downloaded == len(BODY) - 150_000
