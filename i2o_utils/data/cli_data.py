"""``i2o data ...``: rebuild manifests from the live sources, fetch files, import omics tables.

Each command sets ``func`` (the parsed arguments -> an exit code). The module also runs on its
own: ``python -m i2o_utils.data.cli_data fetch --source s3 --tier smoke --dest DIR``.

Exit codes: 0 success, 1 some files failed or an import failed, 2 bad arguments or a malformed
manifest (nothing downloaded).
"""

from __future__ import annotations

import argparse
import logging
import sys

from i2o_utils.data.manifests import DEFAULT_SMOKE_WELLS, SOURCES, TIERS, ManifestError


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smoke-wells", type=int, default=DEFAULT_SMOKE_WELLS, metavar="N",
                   help=f"image wells in the smoke tier (default {DEFAULT_SMOKE_WELLS})")
    p.add_argument("--s3-endpoint-url", default=None, metavar="URL",
                   help="S3-compatible endpoint instead of AWS (e.g. a local test server)")
    p.add_argument("--http-base-url", default=None, metavar="URL",
                   help="scheme://host[:port] replacing the host of every HTTP(S) URL (test servers, mirrors)")


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``data manifest``, ``data fetch`` and ``data import`` on the ``i2o`` parser's
    ``add_subparsers()``; returns the ``data`` parser."""
    data = subparsers.add_parser("data", help="real data: manifests, downloads, omics import",
                                 description="The paper's real data: s3://image2omics, GEO GSE237485, PRIDE PXD044522.")
    sub = data.add_subparsers(dest="data_command", metavar="{manifest,fetch,import}", required=True)

    m = sub.add_parser("manifest", help="rebuild a source's manifest from its live listing")
    m.add_argument("source", choices=sorted(SOURCES), help="s3, geo or pride")
    m.add_argument("--out", default=None, metavar="CSV",
                   help="where to write (default: data_manifests/<source>.csv, replacing it)")
    _add_source_options(m)
    m.set_defaults(func=cmd_manifest)

    f = sub.add_parser("fetch", help="download a source's files (resumable, checksummed)")
    f.add_argument("--source", required=True, choices=sorted(SOURCES))
    f.add_argument("--tier", default="smoke", choices=TIERS, help="smoke (a few wells, small files) or full")
    f.add_argument("--dest", default=None, metavar="DIR", help="destination (default: the data root, $I2O_DATA_DIR)")
    f.add_argument("--workers", type=int, default=4, metavar="N", help="files downloaded at once (default 4)")
    f.add_argument("--manifest", default=None, metavar="CSV", help="a manifest other than the committed one")
    f.add_argument("--max-attempts", type=int, default=6, metavar="N", help="tries per file (default 6)")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    f.add_argument("--dry-run", action="store_true",
                   help="list what would be fetched (files and sizes per folder) and download nothing")
    _add_source_options(f)
    f.set_defaults(func=cmd_fetch)

    i = sub.add_parser("import", help="import a fetched GEO count table or PRIDE protein table into data/OMICS_RAW")
    i.add_argument("source", choices=["geo", "pride"])
    i.add_argument("--table", required=True, metavar="FILE", help="count table (GEO) or protein table (PRIDE)")
    i.add_argument("--samples", default=None, metavar="FILE",
                   help="sample sheet: sample, plate_barcode, well_id, target, cell_state[, tmt_batch]")
    i.add_argument("--series-matrix", default=None, metavar="FILE",
                   help="GEO series matrix to derive the sample sheet from (with --map)")
    i.add_argument("--map", action="append", default=[], metavar="OBS=COLUMN", type=_obs_column,
                   help="series matrix column for an obs column, e.g. --map plate_barcode=plate (repeatable)")
    i.add_argument("--dest", default=None, metavar="DIR", help="data root (default $I2O_DATA_DIR)")
    i.set_defaults(func=cmd_import)
    return data


def cmd_manifest(args: argparse.Namespace) -> int:
    from i2o_utils.data.manifests import build_manifest, manifest_path, write_manifest

    rows = build_manifest(args.source, s3_endpoint_url=args.s3_endpoint_url, http_base_url=args.http_base_url,
                          smoke_wells=args.smoke_wells)
    out = write_manifest(rows, args.out or manifest_path(args.source))
    print(f"{out}: {len(rows)} rows ({sum(r.verified for r in rows)} verified from the live listing), "
          f"{sum(r.size or 0 for r in rows) / 2**30:.2f} GiB listed")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from i2o_utils.data.download import FetchOptions, describe_plan, fetch_source
    from i2o_utils.data.manifests import expand_listings, manifest_path, read_manifest
    from i2o_utils.paths import data_dir

    where = dict(s3_endpoint_url=args.s3_endpoint_url, http_base_url=args.http_base_url, smoke_wells=args.smoke_wells)
    if args.dry_run:
        plan = expand_listings(read_manifest(args.manifest or manifest_path(args.source)), args.tier, **where)
        print(f"{args.source} ({args.tier} tier), nothing downloaded:\n{describe_plan(plan)}")
        return 0
    opts = FetchOptions(workers=args.workers, progress=not args.no_progress, max_attempts=args.max_attempts)
    summary = fetch_source(args.source, args.tier, args.dest or data_dir(), manifest=args.manifest, options=opts,
                           **where)
    print(summary)
    return 0 if summary.ok else 1


def _obs_column(pair: str) -> tuple[str, str]:
    obs, sep, column = pair.partition("=")
    if not (sep and obs and column):
        raise argparse.ArgumentTypeError(f"expects OBS=COLUMN, got {pair!r}")
    return obs.strip(), column.strip()


def cmd_import(args: argparse.Namespace) -> int:
    from i2o_utils.data.importers import (OmicsImportError, import_geo_counts, import_pride_proteins,
                                          samples_from_series_matrix)

    try:
        samples = args.samples
        if samples is None and args.series_matrix:
            samples = samples_from_series_matrix(args.series_matrix, dict(args.map))
        if samples is None:
            raise OmicsImportError("a sample sheet is needed: --samples FILE, or --series-matrix FILE with --map")
        importer = import_geo_counts if args.source == "geo" else import_pride_proteins
        out = importer(args.table, samples, root=args.dest)
    except OmicsImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``data`` command alone (the same as ``i2o data ...``, which reports a malformed
    manifest the same way)."""
    parser = argparse.ArgumentParser(prog="i2o")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
