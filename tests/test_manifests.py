"""Manifests: the committed ones parse; malformed ones are refused before any download; the live
listings (S3, GEO directory index, PRIDE API) rebuild them, all on loopback servers."""

from __future__ import annotations

import csv
import hashlib
import os

import pytest

from i2o_utils.data import manifests as mf
from i2o_utils.data.download import FetchOptions, fetch_manifest
from tests.support.loopback import FaultyHTTPServer, authors_layout_objects, s3_server
from i2o_utils.data.manifests import ManifestEntry, ManifestError

FAST = FetchOptions(workers=2, backoff=0.01, timeout=(2.0, 2.0), progress=False)


def _write_rows(path, rows, columns=mf.MANIFEST_COLUMNS):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})
    return path


def _row(**kw):
    base = dict(source="geo_GSE237485", url="https://example.org/f/a.bin", relative_path="a.bin", size="3",
                checksum=hashlib.sha256(b"abc").hexdigest(), checksum_type="sha256", tier="smoke",
                licence="test", verified="true")
    base.update(kw)
    return base


# ---------------------------------------------------------------------------------------------
# committed manifests
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", sorted(mf.SOURCES))
def test_committed_manifests_parse_and_never_carry_invented_checksums(source):
    rows = mf.read_manifest(mf.manifest_path(source))
    assert rows, source
    assert {r.source for r in rows} == {mf.SOURCES[source]}
    for r in rows:
        if not r.verified:
            assert r.checksum == "" and r.size is None, f"unverified row {r.relative_path} carries a checksum/size"
        assert r.licence


def test_s3_manifest_covers_the_authors_layout():
    rows = {r.relative_path: r for r in mf.read_manifest(mf.manifest_path("s3"))}
    assert rows["data/metadata.csv"].tier == "smoke"
    for om in ("transcriptomics", "proteomics"):
        for st in ("m1", "m2"):
            assert f"data/GT/{om}_{st}.csv" in rows
            assert all(f"checkpoints/{om}_{st}/model_split_{k}.pth" in rows for k in range(10))
    assert rows["data/ICF/"].is_listing and rows["data/TILES/"].is_listing
    assert all(r.url == f"s3://image2omics/{p}" for p, r in rows.items())


# ---------------------------------------------------------------------------------------------
# malformed manifests
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, message", [
    (dict(checksum="abc123", checksum_type="sha256"), "not a valid sha256"),
    (dict(checksum="z" * 64, checksum_type="sha256"), "not a valid sha256"),
    (dict(checksum_type="crc32"), "checksum_type 'crc32'"),
    (dict(checksum=""), "without a checksum"),
    (dict(relative_path="../outside.bin"), "'..' component"),
    (dict(relative_path="data/../../outside.bin"), "'..' component"),
    (dict(relative_path="/etc/passwd"), "absolute path"),
    (dict(relative_path="C:\\x\\y.bin"), "backslash"),
    (dict(relative_path="~/x.bin"), "absolute path"),
    (dict(relative_path=""), "empty path"),
    (dict(tier="medium"), "tier 'medium'"),
    (dict(size="-3"), "not a non-negative integer"),
    (dict(verified="maybe"), "true/false"),
    (dict(url="ftp://example.org/a.bin"), "scheme"),
])
def test_malformed_rows_are_refused_before_any_request(tmp_path, bad, message):
    with FaultyHTTPServer() as srv:
        srv.add("/f/a.bin", b"abc")
        path = _write_rows(tmp_path / "m.csv", [_row(relative_path="ok.bin"), _row(**bad)])
        with pytest.raises(ManifestError, match=message) as err:
            fetch_manifest(path, tmp_path / "dest", "smoke", http_base_url=srv.url, options=FAST)
        assert "m.csv" in str(err.value) and "row 2" in str(err.value)
        assert srv.requests == []
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").iterdir())


def test_missing_column_is_named(tmp_path):
    cols = [c for c in mf.MANIFEST_COLUMNS if c != "checksum"]
    path = _write_rows(tmp_path / "m.csv", [_row()], columns=cols)
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['checksum'\]"):
        mf.read_manifest(path)


def test_duplicated_paths_and_programmatic_entries_are_checked(tmp_path):
    path = _write_rows(tmp_path / "m.csv", [_row(), _row(url="https://example.org/f/b.bin")])
    with pytest.raises(ManifestError, match="duplicates row 1"):
        mf.read_manifest(path)
    entries = [ManifestEntry("geo_GSE237485", "https://example.org/x", "../x")]
    with pytest.raises(ManifestError, match="escapes"):
        fetch_manifest(entries, tmp_path / "d", "full", options=FAST)


def test_symlink_escape_is_refused(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, dest / "link")
    with pytest.raises(ManifestError, match="outside"):
        mf.safe_destination(dest, "link/file.bin")
    assert mf.safe_destination(dest, "a/b.bin") == (dest / "a" / "b.bin").resolve()


def test_write_read_round_trip_and_tier_selection(tmp_path):
    rows = [ManifestEntry("s3_image2omics", "s3://image2omics/data/metadata.csv", "data/metadata.csv", 10,
                          "0" * 32, "s3etag", "smoke", "x", True),
            ManifestEntry("s3_image2omics", "s3://image2omics/big.bin", "big.bin", 10,
                          "a" * 32 + "-3", "s3etag", "full", "x", False)]
    path = mf.write_manifest(rows, tmp_path / "m.csv")
    assert mf.read_manifest(path) == rows
    assert [r.relative_path for r in mf.select_tier(rows, "smoke")] == ["data/metadata.csv"]
    assert len(mf.select_tier(rows, "full")) == 2
    with pytest.raises(ValueError, match="unknown tier"):
        mf.select_tier(rows, "tiny")


def test_urls():
    assert mf.rebase_url("https://ftp.ncbi.nlm.nih.gov/geo/x?y=1", "http://127.0.0.1:9") == "http://127.0.0.1:9/geo/x?y=1"
    assert mf.rebase_url("s3://b/k", "http://127.0.0.1:9") == "s3://b/k"
    assert mf.https_from_ftp("ftp://ftp.pride.ebi.ac.uk/pride/a.txt") == "https://ftp.pride.ebi.ac.uk/pride/a.txt"


def test_smoke_wells_pair_icf_with_tiles_across_plates():
    icf = [f"data/ICF/ICF.X{r}.Y2.P1.T.E_{p}.h5" for p in ("A", "B") for r in (1, 2, 3)]
    tiles = [f"data/TILES/TILES.X{r}.Y2.P1.T.E_{p}.h5" for p in ("A", "B") for r in (1, 2, 3)]
    chosen = mf.pick_smoke_wells(icf, tiles, 4)
    assert len(chosen) == 4
    assert {k.rsplit("_", 1)[1] for k in chosen} == {"A", "B"}
    entries = [ManifestEntry("s3_image2omics", f"s3://image2omics/{p}", p) for p in icf + tiles]
    tiered = mf.assign_tiers("s3", entries, smoke_wells=2)
    smoke = [e.relative_path for e in tiered if e.tier == "smoke"]
    assert len(smoke) == 4
    assert {mf.well_key(p) for p in smoke if "/ICF/" in p} == {mf.well_key(p) for p in smoke if "/TILES/" in p}


# ---------------------------------------------------------------------------------------------
# live listings on loopback
# ---------------------------------------------------------------------------------------------
def test_geo_listing_from_a_directory_index(tmp_path, monkeypatch):
    monkeypatch.setattr(mf, "LISTING_BACKOFF", 0.01)
    base = "/geo/series/GSE237nnn/GSE237485/"
    with FaultyHTTPServer() as srv:
        srv.add(base + "matrix/GSE237485_series_matrix.txt.gz", b"m" * 10)
        srv.add(base + "suppl/GSE237485_counts.tsv.gz", b"c" * 20)
        srv.add(base + "suppl/GSE237485_RAW.tar", b"r" * 30)
        srv.faults[base + "suppl/"] = ["503", "reset"]  # the listing is retried too
        rows = mf.build_manifest("geo", http_base_url=srv.url)
        assert [r[3] for r in srv.requests if r[1] == base + "suppl/"] == [503, 0, 200]
        got = {r.relative_path: r for r in rows}
        assert set(got) == {"upstream/GSE237485/matrix/GSE237485_series_matrix.txt.gz",
                            "upstream/GSE237485/suppl/GSE237485_counts.tsv.gz",
                            "upstream/GSE237485/suppl/GSE237485_RAW.tar"}
        counts = got["upstream/GSE237485/suppl/GSE237485_counts.tsv.gz"]
        assert counts.url == "https://ftp.ncbi.nlm.nih.gov" + base + "suppl/GSE237485_counts.tsv.gz"
        assert counts.size == 20 and counts.verified and counts.checksum == "" and counts.tier == "smoke"
        assert got["upstream/GSE237485/suppl/GSE237485_RAW.tar"].tier == "full"
        # the committed (listing-row) manifest fetches the smoke tier from the same server
        summary = fetch_manifest(mf.manifest_path("geo"), tmp_path, "smoke", http_base_url=srv.url, options=FAST)
        assert summary.ok and len(summary.fetched) == 2
        assert (tmp_path / "upstream/GSE237485/suppl/GSE237485_counts.tsv.gz").read_bytes() == b"c" * 20
        assert not (tmp_path / "upstream/GSE237485/suppl/GSE237485_RAW.tar").exists()


def test_pride_listing_from_the_api_with_pages(tmp_path):
    files = []
    for i in range(5):
        body = f"protein table {i}".encode()
        files.append({"fileName": f"proteinGroups_{i}.txt", "fileSizeBytes": len(body),
                      "checksum": hashlib.sha1(body).hexdigest(),
                      "fileCategory": {"value": "SEARCH"},
                      "publicFileLocations": [
                          {"name": "FTP Protocol", "value": f"ftp://ftp.pride.ebi.ac.uk/pride/data/archive/2023/10/PXD044522/proteinGroups_{i}.txt"},
                          {"name": "Aspera Protocol", "value": "prd_ascp@fasp.ebi.ac.uk:x"}]})
    files.append({"fileName": "run1.raw", "fileSizeBytes": 5, "checksum": hashlib.sha1(b"raw!!").hexdigest(),
                  "publicFileLocations": [{"name": "FTP Protocol",
                                           "value": "ftp://ftp.pride.ebi.ac.uk/pride/data/archive/2023/10/PXD044522/run1.raw"}]})
    with FaultyHTTPServer() as srv:
        srv.json_routes["/pride/ws/archive/v2/projects/PXD044522/files"] = files
        for i in range(5):
            srv.add(f"/pride/data/archive/2023/10/PXD044522/proteinGroups_{i}.txt", f"protein table {i}".encode())
        srv.add("/pride/data/archive/2023/10/PXD044522/run1.raw", b"raw!!")
        import requests

        s = requests.Session()
        listing = next(r.url for r in mf.read_manifest(mf.manifest_path("pride")) if r.is_listing)
        rows = mf.list_pride(listing, "upstream/PXD044522/", source="pride_PXD044522",
                             http_base_url=srv.url, session=s, page_size=2)
        assert len(rows) == 6
        pages = [r for r in srv.requests if r[1].endswith("/files")]
        assert len(pages) == 4  # three full pages of 2, then an empty one ends the loop
        assert rows[0].checksum_type == "sha1" and rows[0].url.startswith("https://ftp.pride.ebi.ac.uk/")
        built = {r.relative_path: r for r in mf.build_manifest("pride", http_base_url=srv.url)}
        assert built["upstream/PXD044522/run1.raw"].tier == "full"
        assert built["upstream/PXD044522/proteinGroups_0.txt"].tier == "smoke"
        out = mf.write_manifest(built.values(), tmp_path / "pride.csv")
        summary = fetch_manifest(out, tmp_path / "d", "smoke", http_base_url=srv.url, options=FAST)
        assert summary.ok and len(summary.fetched) == 5
        assert {r.verified_by for r in summary.fetched} == {"sha1"}


def test_s3_manifest_rebuilt_from_the_bucket(tmp_path):
    objects = authors_layout_objects(n_wells=2)
    with s3_server(objects) as url:
        rows = mf.build_manifest("s3", s3_endpoint_url=url, smoke_wells=2)
        got = {r.relative_path: r for r in rows}
        assert set(objects) == set(got)  # committed rows absent from the bucket are left out
        for key, body in objects.items():
            r = got[key]
            assert r.verified and r.size == len(body) and r.checksum_type == "s3etag"
            assert r.checksum == hashlib.md5(body).hexdigest()
        smoke_icf = [p for p, r in got.items() if p.startswith("data/ICF/") and r.tier == "smoke"]
        assert len(smoke_icf) == 2
        assert got["data/metadata.csv"].tier == "smoke"
        assert got["data/metadata.csv"].licence == mf.read_manifest(mf.manifest_path("s3"))[0].licence
        from i2o_utils.data.cli_data import main

        out = tmp_path / "s3.csv"
        assert main(["manifest", "s3", "--s3-endpoint-url", url, "--out", str(out), "--smoke-wells", "1"]) == 0
        assert len(mf.read_manifest(out)) == len(objects)


def test_listing_retries_are_bounded(monkeypatch):
    monkeypatch.setattr(mf, "LISTING_BACKOFF", 0.01)
    base = "/geo/series/GSE237nnn/GSE237485/suppl/"
    with FaultyHTTPServer() as srv:
        srv.add(base + "a.txt", b"a")
        srv.faults[base] = ["503"] * 10
        with pytest.raises(mf.ManifestError, match="HTTP 503"):
            mf.list_http_directory("https://ftp.ncbi.nlm.nih.gov" + base, "x/", source="geo_GSE237485",
                                   http_base_url=srv.url)
        assert [r[3] for r in srv.requests if r[1] == base] == [503] * mf.LISTING_ATTEMPTS
    with pytest.raises(mf.ManifestError, match="listing http://127.0.0.1:9/x/: ConnectionError"):
        mf.list_http_directory("http://127.0.0.1:9/x/", "x/", source="geo_GSE237485")


def test_pride_listing_reads_embedded_files_and_refuses_other_json():
    rec = {"fileName": "t.txt", "fileSizeBytes": 3, "checksum": hashlib.sha1(b"abc").hexdigest(),
           "publicFileLocations": [{"name": "FTP Protocol", "value": "ftp://ftp.pride.ebi.ac.uk/pride/t.txt"}]}
    with FaultyHTTPServer() as srv:
        srv.json_routes["/a/files"] = {"_embedded": {"files": [rec]}}
        srv.json_routes["/b/files"] = {"files": [rec]}
        srv.json_routes["/c/files"] = {"something": "else"}
        for route in ("a", "b"):
            rows = mf.list_pride(f"https://www.ebi.ac.uk/{route}/files", "p/", source="pride_PXD044522",
                                 http_base_url=srv.url)
            assert [(r.relative_path, r.size, r.checksum_type) for r in rows] == [("p/t.txt", 3, "sha1")]
        with pytest.raises(ManifestError, match="PRIDE file list https://www.ebi.ac.uk/c/files: unexpected JSON"):
            mf.list_pride("https://www.ebi.ac.uk/c/files", "p/", source="pride_PXD044522", http_base_url=srv.url)
