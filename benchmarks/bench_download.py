"""Download throughput on loopback: HTTP (with a cut body resumed) and S3 (moto), plus hashing.

Loopback numbers bound what the fetch code itself costs (chunking, writing, fsync, checksum);
real downloads are limited by the network.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import hardware_summary, peak_rss_mib

N_FILES = 8
FILE_MB = 16


def main() -> None:
    from i2o_utils.data.download import FetchOptions, fetch_entries, file_digest
    from tests.support.loopback import FaultyHTTPServer, s3_server
    from i2o_utils.data.manifests import ManifestEntry, build_manifest

    print(hardware_summary())
    print(f"scale: {N_FILES} files x {FILE_MB} MiB, 4 workers, loopback (no profile: the fetch code only)")
    bodies = {f"f{i}.bin": os.urandom(FILE_MB << 20) for i in range(N_FILES)}
    total_mib = N_FILES * FILE_MB
    opts = FetchOptions(workers=4, progress=False, backoff=0.01)

    with tempfile.TemporaryDirectory() as tmp, FaultyHTTPServer(chunk=1 << 20) as srv:
        rows = []
        for name, body in bodies.items():
            sha = srv.add(f"/b/{name}", body)
            rows.append(ManifestEntry("geo_GSE237485", f"https://h.example/b/{name}", name, len(body), sha,
                                      "sha256", "full", "bench", True))
        srv.faults["/b/f0.bin"] = ["cut"]
        t0 = time.perf_counter()
        s = fetch_entries(rows, tmp, options=opts, http_base_url=srv.url)
        dt = time.perf_counter() - t0
        assert s.ok, str(s)
        print(f"http fetch (sha256 verified, one body cut and resumed): {total_mib / dt:.0f} MiB/s ({dt:.2f} s)")
        t0 = time.perf_counter()
        s = fetch_entries(rows, tmp, options=opts, http_base_url=srv.url)
        dt = time.perf_counter() - t0
        print(f"http re-fetch (all skipped after sha256): {total_mib / dt:.0f} MiB/s ({dt:.2f} s)")
        t0 = time.perf_counter()
        for p in Path(tmp).glob("f*.bin"):
            file_digest(p, "sha256")
        dt = time.perf_counter() - t0
        print(f"sha256 of local files, one thread: {total_mib / dt:.0f} MiB/s")

    objects = {f"data/ICF/ICF.X{i + 1}.Y1.P1.T.E_P.h5": b for i, b in enumerate(bodies.values())}
    with tempfile.TemporaryDirectory() as tmp, s3_server(objects) as url:
        rows = build_manifest("s3", s3_endpoint_url=url, smoke_wells=2, seed=[])
        t0 = time.perf_counter()
        from i2o_utils.data.download import fetch_manifest

        s = fetch_manifest(rows, tmp, "full", s3_endpoint_url=url, options=opts)
        dt = time.perf_counter() - t0
        assert s.ok, str(s)
        print(f"s3 fetch from moto (ETag/MD5 verified): {total_mib / dt:.0f} MiB/s ({dt:.2f} s)")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")
    # keep the hashing honest: the bodies were random, their digests distinct
    assert len({hashlib.md5(b).hexdigest() for b in bodies.values()}) == N_FILES


if __name__ == "__main__":
    main()
