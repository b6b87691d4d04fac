"""Kill a fetch process mid-download, run the fetch again: every file ends complete and correct,
and the interrupted file is resumed rather than restarted."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

from i2o_utils.data.download import FetchOptions, fetch_manifest, part_path
from tests.support.loopback import FaultyHTTPServer
from i2o_utils.data.manifests import ManifestEntry, write_manifest


def test_killed_fetch_resumes_and_completes(tmp_path):
    bodies = {f"f{i}.bin": os.urandom(1_000_000 + 1000 * i) for i in range(3)}
    dest = tmp_path / "dest"
    with FaultyHTTPServer(chunk=8192) as srv:
        rows = []
        for name, body in bodies.items():
            sha = srv.add(f"/geo/{name}", body)
            rows.append(ManifestEntry("geo_GSE237485", f"https://ftp.example.org/geo/{name}", f"upstream/{name}",
                                      len(body), sha, "sha256", "full", "test", True))
        manifest = write_manifest(rows, tmp_path / "m.csv")
        srv.delay = 0.02  # about 0.4 MB/s per file: the kill lands mid-body
        cmd = [sys.executable, "-m", "i2o_utils.data.cli_data", "fetch", "--source", "geo", "--tier", "full",
               "--manifest", str(manifest), "--dest", str(dest), "--http-base-url", srv.url,
               "--workers", "2", "--no-progress"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            parts = []
            while time.monotonic() < deadline and proc.poll() is None:
                parts = [p for p in (dest / "upstream").glob("*.part")] if (dest / "upstream").exists() else []
                if any(p.stat().st_size > 64_000 for p in parts):
                    break
                time.sleep(0.02)
            assert proc.poll() is None, f"fetch ended before it could be interrupted: {proc.stderr.read()!r}"
            proc.kill()
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            proc.stderr.close()

        # nothing that looks complete is wrong: final names hold only verified files
        for name, body in bodies.items():
            final = dest / "upstream" / name
            if final.exists():
                assert final.read_bytes() == body
        partial = {p.name[: -len(".part")]: p.stat().st_size for p in (dest / "upstream").glob("*.part")}
        assert partial, "the kill left no partial file"
        complete = {n for n in bodies if (dest / "upstream" / n).exists()}

        srv.delay = 0.0
        srv.requests.clear()
        s = fetch_manifest(manifest, dest, "full", http_base_url=srv.url,
                           options=FetchOptions(workers=2, backoff=0.01, timeout=(2.0, 2.0), progress=False))
        assert s.ok, str(s)
        for name, body in bodies.items():
            final = dest / "upstream" / name
            assert hashlib.sha256(final.read_bytes()).hexdigest() == hashlib.sha256(body).hexdigest()
            assert not part_path(final).exists()
        # every partial byte was reused: only the rest came over the wire again
        assert {r.relative_path for r in s.skipped} == {f"upstream/{n}" for n in complete}
        still = sum(len(b) for n, b in bodies.items() if n not in complete)
        assert sum(r.bytes_downloaded for r in s.results) == still - sum(partial.values())
        ranged = {r[1].rsplit("/", 1)[1] for r in srv.requests if r[2]}
        assert ranged == {n for n, size in partial.items() if size > 0}, srv.requests
