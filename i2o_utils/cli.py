"""The ``i2o`` command: simulate the screen, run the notebooks, build the book, fetch data."""

from __future__ import annotations

import argparse
import sys

from i2o_utils.config import PROFILE_NAMES


def _simulate(args) -> int:
    from i2o_utils.data.simulate import simulate_screen
    from i2o_utils.locks import run_lock
    from i2o_utils.paths import data_dir

    with run_lock(args.out or data_dir(), what="i2o simulate"):
        print(simulate_screen(args.out, profile=args.profile, seed=args.seed, null=args.null,
                              overwrite=args.overwrite, progress=not args.quiet))
    return 0


def _params(pairs) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in (pairs or [])}


def _run(args) -> int:
    from i2o_utils.runner import NotebookFailed, run_notebooks

    try:
        run_notebooks(args.profile, select=args.notebooks or None, output_dir=args.output_dir,
                      parameters=_params(args.parameter), data_dir=args.data_dir,
                      results_dir=args.results_dir)
    except NotebookFailed as e:
        print(f"i2o run: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # an unknown notebook or profile: nothing ran
        print(f"i2o run: error: {e}", file=sys.stderr)
        return 2
    return 0


def _book(args) -> int:
    from i2o_utils.book import build_book

    wants_50 = not args.notebooks or any(str(n).startswith("50") for n in args.notebooks)
    if not args.skip_run and not args.no_null_screen and wants_50:
        rc = _run_with_null_screen(args)
        if rc:
            return rc
    elif not args.skip_run:
        rc = _run(args)
        if rc:
            return rc
    print(f"book: {build_book(results_root=args.results_dir)}")
    return 0


def _run_with_null_screen(args) -> int:
    """Main screen up to notebook 40, the null screen (sharing its imaging steps), then the rest."""
    from i2o_utils.paths import results_dir
    from i2o_utils.runner import NULL_SCREEN_LAST, NotebookFailed, list_notebooks, run_notebooks, run_null_screen

    stems = [p.stem for p in list_notebooks(args.notebooks or None)]
    params = _params(args.parameter)
    first = [s for s in stems if int(s[:2]) < NULL_SCREEN_LAST]
    rest = [s for s in stems if int(s[:2]) >= NULL_SCREEN_LAST]
    common = dict(output_dir=args.output_dir, parameters=params, data_dir=args.data_dir,
                  results_dir=args.results_dir)
    try:
        if first:
            run_notebooks(args.profile, select=first, **common)
        root = args.results_dir if args.results_dir is not None else results_dir()
        run_null_screen(args.profile, results_root=root, seed=int(params.get("seed", 0)))
        if rest:
            run_notebooks(args.profile, select=rest, **common)
    except NotebookFailed as e:
        print(f"i2o book: {e}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2o", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="generate the simulated screen in the bucket layout")
    s.add_argument("--profile", choices=PROFILE_NAMES, default="quick")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="data root (default: $I2O_DATA_DIR or ./data)")
    s.add_argument("--null", action="store_true", help="omics independent of the images")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_simulate)

    for name, func, helptext in (("run", _run, "execute the notebooks with papermill"),
                                 ("book", _book, "execute the notebooks, then build the book")):
        r = sub.add_parser(name, help=helptext)
        r.add_argument("--profile", choices=PROFILE_NAMES, default="quick")
        r.add_argument("notebooks", nargs="*", help="stems or numbers, e.g. 00 10_preprocess_omics")
        r.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                       help="extra papermill parameter (YAML value)")
        r.add_argument("--output-dir", default=None, help="executed copies (default book/executed)")
        r.add_argument("--data-dir", default=None)
        r.add_argument("--results-dir", default=None)
        if name == "book":
            r.add_argument("--skip-run", action="store_true", help="render the executed copies only")
            r.add_argument("--no-null-screen", action="store_true",
                           help="skip the null screen (run after notebook 40, into "
                                "<results>/null_screen) that notebook 50 uses to show calibration")
        r.set_defaults(func=func)

    try:
        from i2o_utils.data.cli_data import add_data_parser
    except ImportError:
        add_data_parser = None
    if add_data_parser is not None:
        add_data_parser(sub)
    return p


def _expected_errors() -> dict[type, int]:
    """Failures that are the input's or the setup's, not the code's: one line, no traceback.

    Exit 2: nothing was done (a configuration, a data root in use or holding other data, bad
    input found before any output); exit 1: something ran and failed.
    """
    from i2o_utils.data.layout import LayoutError
    from i2o_utils.data.simulate import ScreenMismatch
    from i2o_utils.locks import LockHeld
    from i2o_utils.runner import NotebookFailed

    errors: dict[type, int] = {LockHeld: 2, ScreenMismatch: 2, LayoutError: 2, NotebookFailed: 1}
    try:
        from i2o_utils.data.download import FetchError
        from i2o_utils.data.manifests import ManifestError

        errors.update({ManifestError: 2, FetchError: 1})
    except ImportError:
        pass
    return errors


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "output_dir", "unset") is None:
        from i2o_utils.paths import EXECUTED_DIR

        args.output_dir = EXECUTED_DIR
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"i2o {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - expected failures in one line, the rest re-raised
        for cls, code in _expected_errors().items():
            if isinstance(e, cls):
                print(f"i2o {args.command}: error: {e}", file=sys.stderr)
                return code
        raise


if __name__ == "__main__":
    raise SystemExit(main())
