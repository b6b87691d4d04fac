"""prepare_real_data (notebook 00's real sources) and the `i2o data` command, end to end on
loopback servers with the committed manifests."""

from __future__ import annotations

import gzip
import hashlib
import json

import anndata as ad
import pandas as pd
import pytest

from i2o_utils.data.cli_data import main
from i2o_utils.data.download import FetchOptions
from i2o_utils.data.real import prepare_real_data
from i2o_utils.data.importers import OmicsImportError
from tests.support.loopback import FaultyHTTPServer
from i2o_utils.data.manifests import write_manifest, ManifestEntry

GEO = "/geo/series/GSE237nnn/GSE237485/"
FAST = FetchOptions(workers=2, backoff=0.01, timeout=(2.0, 2.0), progress=False)


COUNTS = pd.DataFrame({"gene_id": ["ENSG00000000001", "ENSG00000000002"], "S1": [1, 2], "S2": [3, 4]})
MATRIX = "\n".join([
    '!Sample_title\t"S1"\t"S2"', '!Sample_geo_accession\t"GSM1"\t"GSM2"',
    '!Sample_characteristics_ch1\t"plate: P1"\t"plate: P1"',
    '!Sample_characteristics_ch1\t"well: A1"\t"well: A2"',
    '!Sample_characteristics_ch1\t"ko: NT"\t"ko: STAT1"',
    '!Sample_characteristics_ch1\t"state: M1"\t"state: M1"', "!series_matrix_table_begin"]) + "\n"


def _geo_server(srv):
    srv.add(GEO + "suppl/GSE237485_counts.tsv.gz", gzip.compress(COUNTS.to_csv(sep="\t", index=False).encode()))
    srv.add(GEO + "suppl/GSE237485_RAW.tar", b"x" * 100)
    srv.add(GEO + "matrix/GSE237485_series_matrix.txt.gz", gzip.compress(MATRIX.encode()))


def test_prepare_geo_fetches_and_imports(tmp_path):
    with FaultyHTTPServer() as srv:
        _geo_server(srv)
        with pytest.raises(OmicsImportError, match=r"column_map=.*'plate', 'well', 'ko', 'state'"):
            prepare_real_data("geo", "smoke", tmp_path, http_base_url=srv.url, options=FAST)
        cmap = {"plate_barcode": "plate", "well_id": "well", "target": "ko", "cell_state": "state"}
        out = prepare_real_data("geo", "smoke", tmp_path, http_base_url=srv.url, options=FAST, column_map=cmap)
    assert len(out.summary.skipped) == 2 and not out.summary.fetched  # fetched by the first call
    assert "geo (smoke tier)" in str(out) and "transcriptomics.h5ad" in str(out)
    assert not (tmp_path / "upstream/GSE237485/suppl/GSE237485_RAW.tar").exists()  # full tier only
    a = ad.read_h5ad(tmp_path / "data/OMICS_RAW/transcriptomics.h5ad")
    assert a.shape == (2, 2) and list(a.obs["target"]) == ["NT", "STAT1"]
    record = json.loads((tmp_path / "REAL_DATA.json").read_text())
    assert record["sources"]["geo"]["tier"] == "smoke"
    assert "data/OMICS_RAW/transcriptomics.h5ad" in record["sources"]["geo"]["written"]


def test_prepare_refuses_a_simulated_root_and_unknown_sources(tmp_path):
    (tmp_path / "SCREEN.json").write_text(json.dumps({"source": "simulated"}))
    with pytest.raises(FileExistsError, match="simulated screen"):
        prepare_real_data("s3", "smoke", tmp_path)
    with pytest.raises(ValueError, match="simulated"):
        prepare_real_data("simulated", "smoke", tmp_path / "x")


def test_prepare_pride_with_a_sample_sheet(tmp_path):
    table = "Gene names\tReporter intensity corrected 1 B1\tReporter intensity corrected 2 B1\nSTAT1\t5\t6\n"
    body = table.encode()
    files = [{"fileName": "proteinGroups.txt", "fileSizeBytes": len(body), "checksum": hashlib.sha1(body).hexdigest(),
              "publicFileLocations": [{"name": "FTP Protocol",
                                       "value": "ftp://ftp.pride.ebi.ac.uk/pride/data/archive/2023/10/PXD044522/proteinGroups.txt"}]}]
    sheet = pd.DataFrame({"sample": ["Reporter intensity corrected 1 B1", "Reporter intensity corrected 2 B1"],
                          "plate_barcode": "O1", "well_id": ["A1", "A2"], "target": ["NT", "STAT6"],
                          "cell_state": "m2"})
    with FaultyHTTPServer() as srv:
        srv.json_routes["/pride/ws/archive/v2/projects/PXD044522/files"] = files
        srv.add("/pride/data/archive/2023/10/PXD044522/proteinGroups.txt", body)
        out = prepare_real_data("pride", "smoke", tmp_path, http_base_url=srv.url, options=FAST, samples=sheet)
    a = ad.read_h5ad(out.written[0])
    assert a.shape == (2, 1) and list(a.obs["tmt_batch"]) == ["B1", "B1"]


def test_cli_fetch_exit_codes(tmp_path, capsys):
    with FaultyHTTPServer() as srv:
        sha = srv.add("/f/a.bin", b"hello")
        good = write_manifest([ManifestEntry("geo_GSE237485", "https://h.org/f/a.bin", "a.bin", 5, sha, "sha256",
                                             "smoke", "t", True)], tmp_path / "good.csv")
        args = ["fetch", "--source", "geo", "--dest", str(tmp_path / "d"), "--http-base-url", srv.url, "--no-progress"]
        assert main(args + ["--manifest", str(good)]) == 0
        assert "fetched 1, skipped 0" in capsys.readouterr().out
        assert main(args + ["--manifest", str(good)]) == 0
        assert "fetched 0, skipped 1" in capsys.readouterr().out
        bad = tmp_path / "bad.csv"
        bad.write_text(good.read_text().replace("a.bin,5", "../a.bin,5"))
        assert main(args + ["--manifest", str(bad)]) == 2
        assert "'..' component" in capsys.readouterr().err
        wrong = tmp_path / "wrong.csv"
        wrong.write_text(good.read_text().replace(sha, "0" * 64).replace(",a.bin,", ",b.bin,"))
        assert main(args + ["--manifest", str(wrong), "--max-attempts", "1"]) == 1
        assert "FAILED b.bin" in capsys.readouterr().out


def test_cli_dry_run_lists_sizes_without_downloading(tmp_path, capsys):
    with FaultyHTTPServer() as srv:
        _geo_server(srv)
        assert main(["fetch", "--source", "geo", "--tier", "full", "--dry-run", "--http-base-url", srv.url,
                     "--dest", str(tmp_path)]) == 0
        assert not [r for r in srv.requests if r[0] == "GET" and not r[1].endswith("/")]
    out = capsys.readouterr().out
    assert "total: 3 file(s)" in out and "upstream/GSE237485: 3 file(s)" in out
    assert not any(tmp_path.iterdir())


def test_cli_import_geo_from_a_series_matrix(tmp_path, capsys):
    table = tmp_path / "counts.tsv"
    COUNTS.to_csv(table, sep="\t", index=False)
    (tmp_path / "matrix.txt").write_text(MATRIX)
    args = ["import", "geo", "--table", str(table), "--dest", str(tmp_path / "root")]
    assert main(args) == 1
    assert "a sample sheet is needed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--series-matrix", str(tmp_path / "matrix.txt"), "--map", "plate"])
    assert "--map: expects OBS=COLUMN, got 'plate'" in capsys.readouterr().err
    maps = ["--map", "plate_barcode=plate", "--map", "well_id=well", "--map", "target=ko", "--map", "cell_state=state"]
    assert main(args + ["--series-matrix", str(tmp_path / "matrix.txt"), *maps]) == 0
    out = tmp_path / "root/data/OMICS_RAW/transcriptomics.h5ad"
    assert f"wrote {out}" in capsys.readouterr().out
    a = ad.read_h5ad(out)
    assert a.shape == (2, 2) and list(a.obs["target"]) == ["NT", "STAT1"]
