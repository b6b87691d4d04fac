"""Loopback servers to test and benchmark the downloads without any outside network.

* :func:`s3_server`: moto's S3 server on ``127.0.0.1`` holding a public bucket (anonymous list and
  get, like ``s3://image2omics``), filled with :func:`authors_layout_objects` or given objects.
* :class:`FaultyHTTPServer`: a threaded HTTP server on ``127.0.0.1`` serving files with byte
  ranges, directory indexes (GEO-like) and a PRIDE-like JSON file list, and injecting faults on
  demand: a body cut off mid-file, an HTTP 5xx, a connection reset, a server that ignores
  ``Range``, a slow body.

Both bind the loopback interface only and pick a free port.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import io
import json
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------
def authors_layout_objects(n_wells: int = 3, plates: tuple[str, ...] = ("ELN00001_PLATE1", "ELN00001_PLATE2"),
                           field_size: int = 16, seed: int = 0) -> dict[str, bytes]:
    """A tiny bucket in the authors' layout: per-well ICF and TILES HDF5 files, metadata, GT
    tables, checkpoint configs and third-party tables (contents small and synthetic)."""
    from i2o_utils.data.layout import GT_COLUMNS, image_file_name, plate_id, write_well_images, write_well_tiles

    rng = np.random.default_rng(seed)
    objects: dict[str, bytes] = {}
    meta, gt = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for p, plate in enumerate(plates):
            for w in range(n_wells):
                row, col = 1 + w, 2 + p
                fields = rng.integers(0, 4096, size=(1, 3, field_size, field_size), dtype=np.uint16)
                icf_name = image_file_name("ICF", plate, row, col)
                icf = write_well_images(tmp / icf_name, plate, row, col, fields)
                objects[f"data/ICF/{icf_name}"] = icf.read_bytes()
                tiles = write_well_tiles(tmp / ("TILES" + icf_name[3:]), row, col, f"data/ICF/{icf_name}",
                                         [np.array([[0, 0], [4, 4]])], plate_barcode=plate)
                objects[f"data/TILES/{tiles.name}"] = tiles.read_bytes()
                well = f"{chr(64 + row)}{col}"
                meta.append({"well_id": well, "PLATE_ID": plate_id(plate), "target": "NT" if w == 0 else f"G{w}",
                             "cell_state": "m1" if p % 2 == 0 else "m2", "Column": col})
                for g in range(3):
                    gt.append(dict(zip(GT_COLUMNS, (plate, well, f"ENSG{g:011d}", "train", float(rng.normal())))))
        buf = io.StringIO()
        pd.DataFrame(meta).to_csv(buf, index=False)
        objects["data/metadata.csv"] = buf.getvalue().encode()
    gt_csv = pd.DataFrame(gt).to_csv(index=False).encode()
    for omics in ("transcriptomics", "proteomics"):
        for st in ("m1", "m2"):
            objects[f"data/GT/{omics}_{st}.csv"] = gt_csv
            objects[f"checkpoints/{omics}_{st}/config.yaml"] = b"seed: 0\n"
    objects["third-party/HGNCNames/hgnc_mapping.tsv"] = b"symbol\tensembl_gene_id\nSTAT1\tENSG00000115415\n"
    return objects


@contextlib.contextmanager
def s3_server(objects: Mapping[str, bytes] | None = None, bucket: str = "image2omics",
              multipart: Mapping[str, bytes] | None = None, part_size: int = 5 << 20) -> Iterator[str]:
    """Run moto's S3 server on the loopback interface with a public bucket; yields its endpoint URL.

    ``multipart`` objects are uploaded in ``part_size`` parts (S3's minimum is 5 MiB), so their
    ETags have the multipart form.
    """
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    url = f"http://{LOOPBACK}:{port}"
    try:
        # moto keeps its buckets in process-wide state: start every server from an empty store
        import requests

        requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
        admin = boto3.client("s3", endpoint_url=url, aws_access_key_id="loopback",
                             aws_secret_access_key="loopback", region_name="us-east-1")
        admin.create_bucket(Bucket=bucket)
        admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
                           "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}],
        }))
        for key, body in (objects or {}).items():
            admin.put_object(Bucket=bucket, Key=key, Body=body)
        for key, body in (multipart or {}).items():
            up = admin.create_multipart_upload(Bucket=bucket, Key=key)
            parts = []
            for i, start in enumerate(range(0, len(body), part_size), start=1):
                r = admin.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=i,
                                      Body=body[start:start + part_size])
                parts.append({"ETag": r["ETag"], "PartNumber": i})
            admin.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                            MultipartUpload={"Parts": parts})
        yield url
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# HTTP with faults
# --------------------------------------------------------------------------------------------
class FaultyHTTPServer:
    """A loopback HTTP server serving ``files`` (URL path -> bytes) with injectable faults.

    ``faults[path]`` is a queue of faults, one taken per GET of that path (files, directory
    indexes and JSON routes alike): ``"cut"`` (send the headers and half the body, then close;
    files only), ``"500"``/``"503"`` (error status), ``"reset"`` (close without answering), ``"ok"``. ``no_range`` holds paths whose server ignores
    ``Range``; ``delay`` (seconds per ``chunk`` bytes) slows bodies down. Every request is
    recorded in ``requests`` as ``(method, path, range_header, status)``.

    Paths ending in ``/`` answer with a directory index of the files below them; ``json_routes``
    maps a path to a JSON payload (a list is paginated with ``page``/``pageSize``).
    """

    def __init__(self, files: Mapping[str, bytes] | None = None, *, chunk: int = 16 << 10):
        self.files: dict[str, bytes] = dict(files or {})
        self.faults: dict[str, list[str]] = {}
        self.no_range: set[str] = set()
        self.json_routes: dict[str, object] = {}
        self.delay: float = 0.0
        self.chunk = chunk
        self.requests: list[tuple[str, str, str | None, int]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def add(self, path: str, body: bytes) -> str:
        """Serve ``body`` at ``path``; returns its SHA-256."""
        self.files[path] = body
        return hashlib.sha256(body).hexdigest()

    def _next_fault(self, path: str) -> str:
        with self._lock:
            q = self.faults.get(path)
            return q.pop(0) if q else "ok"

    def _record(self, *item) -> None:
        with self._lock:
            self.requests.append(item)

    def start(self) -> "FaultyHTTPServer":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream",
                      headers: dict | None = None, head: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head: bool) -> None:
                u = urlparse(self.path)
                path, rng = u.path, self.headers.get("Range")
                fault = "ok" if head else outer._next_fault(path)
                if fault == "reset":
                    outer._record("GET", path, rng, 0)
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault in ("500", "502", "503"):
                    outer._record("GET", path, rng, int(fault))
                    return self._send(int(fault), b"server error")
                if path in outer.json_routes:
                    payload = outer.json_routes[path]
                    if isinstance(payload, list):
                        q = parse_qs(u.query)
                        size = int(q.get("pageSize", [len(payload) or 1])[0])
                        page = int(q.get("page", [0])[0])
                        payload = payload[page * size:(page + 1) * size]
                    outer._record(self.command, path, rng, 200)
                    return self._send(200, json.dumps(payload).encode(), "application/json", head=head)
                if path.endswith("/"):
                    names = sorted({p[len(path):].split("/")[0] + ("/" if "/" in p[len(path):] else "")
                                    for p in outer.files if p.startswith(path) and p != path})
                    if not names:
                        outer._record(self.command, path, rng, 404)
                        return self._send(404, b"not found", head=head)
                    links = "".join(f'<a href="{html.escape(n)}">{html.escape(n)}</a>  2023-07-20 10:00  -\n'
                                    for n in names)
                    body = f'<html><body><pre><a href="../">Parent Directory</a>\n{links}</pre></body></html>'
                    outer._record(self.command, path, rng, 200)
                    return self._send(200, body.encode(), "text/html", head=head)
                if path not in outer.files:
                    outer._record(self.command, path, rng, 404)
                    return self._send(404, b"not found", head=head)
                data = outer.files[path]
                if head:
                    outer._record("HEAD", path, rng, 200)
                    return self._send(200, data, head=True, headers={"Accept-Ranges": "bytes"})
                start = 0
                status = 200
                if rng and path not in outer.no_range and rng.startswith("bytes="):
                    first = rng[len("bytes="):].split("-")[0]
                    start = int(first) if first.isdigit() else 0
                    if start >= len(data):
                        outer._record("GET", path, rng, 416)
                        return self._send(416, b"", headers={"Content-Range": f"bytes */{len(data)}"})
                    status = 206
                body = data[start:]
                outer._record("GET", path, rng, status)
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "none" if path in outer.no_range else "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                limit = len(body) // 2 if fault == "cut" else len(body)
                sent = 0
                try:
                    while sent < limit:
                        n = min(outer.chunk, limit - sent)
                        self.wfile.write(body[sent:sent + n])
                        self.wfile.flush()
                        sent += n
                        if outer.delay:
                            time.sleep(outer.delay)
                except OSError:
                    return
                if fault == "cut":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)

            def do_GET(self):
                self._route(head=False)

            def do_HEAD(self):
                self._route(head=True)

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="faulty-http")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FaultyHTTPServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
