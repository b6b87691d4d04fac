"""S3 downloads (unsigned boto3) from moto's server on loopback, holding a small bucket in the
authors' layout: fetch, re-fetch (all skipped), corrupt one file (re-fetched), delete one
(fetched), multipart ETags, resumption of a partial file, and the committed manifest's smoke tier."""

from __future__ import annotations

import hashlib
import os

import pytest

from i2o_utils.data import manifests as mf
from i2o_utils.data.download import FetchOptions, fetch_manifest, fetch_source, part_path
from i2o_utils.data.layout import index_wells, read_metadata, read_well_tiles
from tests.support.loopback import authors_layout_objects, s3_server

FAST = FetchOptions(workers=3, backoff=0.01, timeout=(5.0, 5.0), progress=False)
BIG_KEY = "checkpoints/transcriptomics_m1/model_split_0.pth"
BIG = os.urandom((5 << 20) + 4096)  # two parts of a multipart upload


@pytest.fixture(scope="module")
def bucket():
    objects = authors_layout_objects(n_wells=2)
    # every explicit smoke row of the committed manifest exists in this bucket
    for r in mf.read_manifest(mf.manifest_path("s3")):
        if r.tier == "smoke" and not r.is_listing:
            objects.setdefault(r.relative_path, f"stand-in for {r.relative_path}\n".encode())
    with s3_server(objects, multipart={BIG_KEY: BIG}) as url:
        yield url, {**objects, BIG_KEY: BIG}


@pytest.fixture(scope="module")
def live_rows(bucket):
    url, _ = bucket
    return mf.build_manifest("s3", s3_endpoint_url=url, smoke_wells=2)


def test_fetch_refetch_corrupt_delete(bucket, live_rows, tmp_path):
    url, objects = bucket
    s = fetch_manifest(live_rows, tmp_path, "full", s3_endpoint_url=url, options=FAST)
    assert s.ok and len(s.fetched) == len(objects), str(s)
    for key, body in objects.items():
        assert (tmp_path / key).read_bytes() == body
    big = next(r for r in s.results if r.relative_path == BIG_KEY)
    assert big.verified_by == "s3etag"

    again = fetch_manifest(live_rows, tmp_path, "full", s3_endpoint_url=url, options=FAST)
    assert len(again.skipped) == len(objects) and not again.fetched
    assert sum(r.bytes_downloaded for r in again.results) == 0

    icf = sorted(k for k in objects if k.startswith("data/ICF/"))[0]
    target = tmp_path / icf
    damaged = bytearray(target.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # same size, one byte flipped
    target.write_bytes(bytes(damaged))
    (tmp_path / "data/metadata.csv").unlink()
    third = fetch_manifest(live_rows, tmp_path, "full", s3_endpoint_url=url, options=FAST)
    assert sorted(r.relative_path for r in third.fetched) == sorted([icf, "data/metadata.csv"])
    assert len(third.skipped) == len(objects) - 2
    assert target.read_bytes() == objects[icf]

    # what was fetched is in the layout the project reads
    assert len(index_wells(tmp_path / "data/ICF")) == 4
    assert len(read_metadata(tmp_path / "data/metadata.csv")) == 4
    tiles = sorted((tmp_path / "data/TILES").glob("*.h5"))
    assert read_well_tiles(tiles[0]).n_tiles == 2


def test_partial_object_is_resumed_with_a_range(bucket, live_rows, tmp_path):
    url, objects = bucket
    row = next(r for r in live_rows if r.relative_path == BIG_KEY)
    target = tmp_path / BIG_KEY
    target.parent.mkdir(parents=True)
    part_path(target).write_bytes(BIG[: 3 << 20])
    s = fetch_manifest([row], tmp_path, "full", s3_endpoint_url=url, options=FAST)
    assert s.ok and s.fetched[0].bytes_downloaded == len(BIG) - (3 << 20)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(BIG).digest()


def test_wrong_etag_fails_and_keeps_nothing(bucket, live_rows, tmp_path):
    url, _ = bucket
    row = next(r for r in live_rows if r.relative_path == "data/metadata.csv")
    bad = mf.ManifestEntry(**{**row.__dict__, "checksum": "0" * 32})
    s = fetch_manifest([bad], tmp_path, "full", s3_endpoint_url=url, options=FAST)
    assert not s.ok and "does not match" in s.failed[0].error
    assert not (tmp_path / "data/metadata.csv").exists()
    missing = mf.ManifestEntry(**{**row.__dict__, "url": "s3://image2omics/no/such.key", "relative_path": "x.csv"})
    s = fetch_manifest([missing], tmp_path, "full", s3_endpoint_url=url, options=FAST)
    assert "NoSuchKey" in s.failed[0].error and s.failed[0].attempts == 1


def test_committed_manifest_smoke_tier(bucket, tmp_path):
    """The committed manifest (unverified names + ICF/TILES listing rows) against the bucket."""
    url, objects = bucket
    s = fetch_source("s3", "smoke", tmp_path, s3_endpoint_url=url, smoke_wells=1, options=FAST)
    assert s.ok, str(s)
    got = {r.relative_path for r in s.fetched}
    assert "data/metadata.csv" in got and BIG_KEY not in got
    icf = [p for p in got if p.startswith("data/ICF/")]
    tiles = [p for p in got if p.startswith("data/TILES/")]
    assert len(icf) == 1 and len(tiles) == 1 and mf.well_key(icf[0]) == mf.well_key(tiles[0])
    for p in got:
        assert (tmp_path / p).read_bytes() == objects[p]


def test_multipart_etag_found_from_the_hint_the_common_part_sizes_or_the_smallest_fit(tmp_path):
    from i2o_utils.data.download import checksum_matches, s3_multipart_etag

    path = tmp_path / "big.bin"
    path.write_bytes(BIG)
    row = mf.ManifestEntry("s3_image2omics", "s3://image2omics/big.bin", "big.bin", len(BIG), "", "s3etag")
    for part_size, hint in [(5 << 20, None), (3 << 20, None), (4 << 20, 4 << 20)]:
        etag = s3_multipart_etag(path, part_size)
        assert etag.endswith("-2")
        assert checksum_matches(path, mf.ManifestEntry(**{**row.__dict__, "checksum": etag}), hint) is True
    assert checksum_matches(path, mf.ManifestEntry(**{**row.__dict__, "checksum": etag})) is False
    single = mf.ManifestEntry(**{**row.__dict__, "checksum": hashlib.md5(BIG).hexdigest()})
    assert checksum_matches(path, single) is True
