"""Set-up of the GPU run (``benchmarks/gpu.sh``): install only what is missing, or say what is.

A GPU machine usually brings Python, a CUDA build of torch and the scientific stack (numpy,
scipy, pandas, h5py, pyarrow, scikit-image, pytest) but not this project's lighter
dependencies (anndata, dask, distributed and what they need), and may have no network. So:

* ``python -m benchmarks.gpu_setup fetch`` (on a machine that reaches PyPI) downloads the
  wheels of those lighter dependencies, at the versions of ``requirements.lock``, for the GPU
  machine's Python (default 3.12, x86-64 manylinux) into ``.whl/`` (ignored by git). The heavy
  stack that a GPU machine is expected to bring is left out (see :data:`HEAVY`).
* ``python -m benchmarks.gpu_setup check --target DIR`` (on the GPU machine, before anything
  of the project is imported) checks the modules that the run needs; when one is missing, or
  when pandas is of another major version than the lock's (:data:`SAME_MAJOR`), it installs
  from ``.whl/`` the wheels whose distributions are not installed, and the locked pandas
  (``pip --no-index --no-deps --target DIR``, in front of the machine's own packages for this
  run only), and checks again in a fresh interpreter. It prints the folder to add to
  ``PYTHONPATH`` on its last line, or exits with status 3 and a message naming every module
  still missing and how to bring it.

Nothing here imports the project or torch at module level, so it runs before they import.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"

REQUIRED = ("numpy", "scipy", "pandas", "h5py", "pyarrow", "skimage", "tqdm", "torch", "anndata",
            "pytest", "pytest_timeout")
"""Modules the run imports (the simulator, the image pipeline, the model, the GPU tests)."""
OPTIONAL = ("distributed",)
"""Modules that only speed the run up (the image pipeline's process pool); without them it runs
in-process and the results file says so."""
FETCH = ("anndata", "dask", "distributed", "pandas")
"""Distributions whose wheels ``fetch`` downloads, with every dependency not in :data:`HEAVY`."""
HEAVY = ("numpy", "scipy", "h5py", "pyarrow", "scikit-image", "torch", "triton",
         "pillow", "networkx", "sympy", "llvmlite", "numba")
"""Distributions expected on a GPU machine (tens of MB each): never carried as wheels."""
SAME_MAJOR = ("pandas",)
"""Distributions whose installed major version must be that of ``requirements.lock``: the project
is tested on pandas 2, and pandas 3's string dtype is one the simulator's h5ad writing (anndata)
refuses. Where the machine has another major version, the locked wheel is installed in front."""

FIX = ("run `python -m benchmarks.gpu_setup fetch` (or `benchmarks/gpu.sh --fetch-wheels`) on a machine "
       "that reaches PyPI, and bring the folder .whl/ along with the repository")


def normalise(name: str) -> str:
    """Distribution name in canonical form (PEP 503): lower case, runs of -_. as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_distribution(path: str | os.PathLike) -> str:
    """The (normalised) distribution name of a wheel file, from its name."""
    name = Path(path).name
    if not name.endswith(".whl") or name.count("-") < 4:
        raise ValueError(f"{name}: not a wheel file name (name-version-python-abi-platform.whl)")
    return normalise(name.split("-", 1)[0])


def installed_distributions(paths: list[str] | None = None) -> set[str]:
    """Normalised names of the distributions visible on ``paths`` (default ``sys.path``)."""
    return {normalise(d.metadata["Name"]) for d in md.distributions(path=paths or sys.path)
            if d.metadata and d.metadata["Name"]}


def lock_pins(lock: Path) -> dict[str, str]:
    """``{normalised name: version}`` of the ``name==version`` lines of a lock file."""
    pins = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if m:
            pins[normalise(m.group(1))] = m.group(3)
    return pins


def wrong_major(pins: dict[str, str], names: tuple[str, ...] = SAME_MAJOR) -> dict[str, tuple[str, str]]:
    """``{name: (installed, locked)}`` for the installed distributions of ``names`` whose major
    version differs from the lock's."""
    out = {}
    for name in names:
        want = pins.get(normalise(name))
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            continue
        if want and have.split(".")[0] != want.split(".")[0]:
            out[normalise(name)] = (have, want)
    return out


def wheels_to_install(wheels: list[Path], installed: set[str], replace: set[str] = frozenset()) -> list[Path]:
    """The wheels whose distributions are not installed, or are in ``replace``; one per distribution.

    Raises
    ------
    ValueError
        If two wheels of one distribution are present (which version to install is unclear).
    """
    seen: dict[str, Path] = {}
    for w in sorted(wheels):
        d = wheel_distribution(w)
        if d in seen:
            raise ValueError(f"two wheels of {d}: {seen[d].name} and {w.name}; keep one")
        seen[d] = w
    return [w for d, w in seen.items() if d not in installed or d in replace]


def missing_modules(modules: tuple[str, ...], extra_path: str | None = None) -> list[str]:
    """The modules of ``modules`` that do not import, tried in one fresh interpreter (``extra_path``
    first on its path), so that a broken install is caught as well as an absent one."""
    if not modules:
        return []
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([extra_path] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    probe = ("import importlib, sys\n"
             "for m in sys.argv[1:]:\n"
             "    try:\n"
             "        importlib.import_module(m)\n"
             "    except Exception as e:\n"
             "        print(f'{m} ({type(e).__name__}: {e})'.replace(chr(10), ' '))\n")
    r = subprocess.run([sys.executable, "-c", probe, *modules], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        return [f"(the import check itself failed: {r.stderr.strip()[-500:]})"]
    return [line for line in r.stdout.splitlines() if line.strip()]


def _versions(names: tuple[str, ...], extra_path: str | None) -> dict[str, str]:
    """Versions of ``names`` as a fresh interpreter (``extra_path`` first on its path) imports them."""
    if not names:
        return {}
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([extra_path] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    print(m, importlib.import_module(m).__version__)\n"
    r = subprocess.run([sys.executable, "-c", code, *names], env=env, capture_output=True, text=True)
    return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)


def check(target: Path, wheels_dir: Path, required: tuple[str, ...], optional: tuple[str, ...],
          cuda: bool) -> int:
    """Check (and install what is missing); print the PYTHONPATH addition on the last line."""
    print(f"set-up: Python {sys.version.split()[0]} at {sys.executable}", flush=True)
    if cuda and importlib.util.find_spec("torch") is not None:  # the first thing a GPU run needs
        r = subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print("set-up FAILED: torch sees no CUDA device (a CPU dry run is `benchmarks/gpu.sh --dry-run`)",
                  file=sys.stderr)
            return 3
    absent = [m for m in required + optional if importlib.util.find_spec(m) is None]
    lock = ROOT / "requirements.lock"
    off = wrong_major(lock_pins(lock)) if lock.exists() else {}
    extra = ""
    if off:
        print("set-up: installed major version differs from requirements.lock: "
              + ", ".join(f"{d} {a} (lock: {b})" for d, (a, b) in off.items()), flush=True)
    if absent or off:
        wheels = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
        todo = wheels_to_install(wheels, installed_distributions(), replace=set(off))
        lacking = sorted(set(off) - {wheel_distribution(w) for w in todo})
        if lacking:
            print(f"set-up FAILED: no wheel of {', '.join(lacking)} in {wheels_dir} to replace the installed "
                  f"version{'s' if len(lacking) > 1 else ''} (see above).\nTo bring {'them' if len(lacking) > 1 else 'it'}: "
                  f"{FIX}.", file=sys.stderr)
            return 3
        print(f"set-up: not importable here: {', '.join(absent) or 'none'}; {len(wheels)} wheel(s) in {wheels_dir}, "
              f"{len(todo)} of them to install", flush=True)
        if todo:
            target.mkdir(parents=True, exist_ok=True)
            r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                                "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target),
                                *map(str, todo)], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"set-up FAILED: pip could not install the wheels of {wheels_dir} into {target}:\n"
                      f"{r.stderr.strip()[-2000:]}", file=sys.stderr)
                return 3
            print("set-up: installed " + ", ".join(w.name for w in todo), flush=True)
            extra = str(target)
    if not absent and not extra:  # every module found and nothing installed: the run's own imports check the rest
        print("set-up: every module the run needs is here")
        print("")
        return 0
    still = missing_modules(required, extra or None)
    if still:
        print("set-up FAILED: the run needs module(s) that do not import:\n  " + "\n  ".join(still)
              + f"\nTo bring them: {FIX}.", file=sys.stderr)
        return 3
    opt_missing = missing_modules(optional, extra or None)
    if opt_missing:
        print(f"set-up: optional module(s) missing, the run goes on without them: {', '.join(opt_missing)}")
    still_off = [f"{d} {v}" for d, v in _versions(tuple(off), extra or None).items()
                 if v.split(".")[0] != off[d][1].split(".")[0]]
    if still_off:
        print(f"set-up FAILED: after the install, still {', '.join(still_off)}", file=sys.stderr)
        return 3
    print(extra)
    return 0


def fetch(dest: Path, python_version: str, lock: Path) -> int:
    """Download the wheels of :data:`FETCH` and their dependencies, less :data:`HEAVY`, into ``dest``."""
    pins = lock_pins(lock)
    reqs = [f"{d}=={pins[d]}" if d in pins else d for d in FETCH]
    with tempfile.TemporaryDirectory() as tmp:
        cons = Path(tmp) / "constraints.txt"
        cons.write_text("".join(f"{d}=={v}\n" for d, v in pins.items() if d not in ("torch",)))
        dl = Path(tmp) / "dl"
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version",
               python_version, "--implementation", "cp", "-c", str(cons), "-d", str(dl)]
        for n in (17, 24, 27, 28):
            cmd += ["--platform", f"manylinux_2_{n}_x86_64"]
        cmd += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64", *reqs]
        print("fetch: " + " ".join(reqs) + f" for Python {python_version} (x86-64 manylinux)", flush=True)
        r = subprocess.run(cmd)
        if r.returncode != 0:
            print("fetch FAILED: pip download did not succeed (see above)", file=sys.stderr)
            return r.returncode
        dest.mkdir(parents=True, exist_ok=True)
        for old in dest.glob("*.whl"):
            old.unlink()
        kept = []
        for w in sorted(dl.glob("*.whl")):
            if wheel_distribution(w) in {normalise(h) for h in HEAVY}:
                continue
            w.replace(dest / w.name)
            kept.append(w.name)
    size = sum((dest / k).stat().st_size for k in kept) / 2**20
    print(f"fetch: {len(kept)} wheels, {size:.1f} MiB in {dest} (left out, expected on the GPU machine: "
          f"{', '.join(HEAVY)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_setup", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="check the modules of the run, install missing ones from the wheels")
    c.add_argument("--target", type=Path, default=Path(tempfile.gettempdir()) / "i2o-site")
    c.add_argument("--wheels", type=Path, default=WHEELS)
    c.add_argument("--require", nargs="*", default=list(REQUIRED))
    c.add_argument("--optional", nargs="*", default=list(OPTIONAL))
    c.add_argument("--cuda", action="store_true", help="also require a CUDA device")
    f = sub.add_parser("fetch", help="download the wheels a GPU machine usually lacks into .whl/")
    f.add_argument("--dest", type=Path, default=WHEELS)
    f.add_argument("--python-version", default="3.12")
    f.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    a = p.parse_args(argv)
    if a.cmd == "check":
        return check(a.target, a.wheels, tuple(a.require), tuple(a.optional), a.cuda)
    return fetch(a.dest, a.python_version, a.lock)


if __name__ == "__main__":
    raise SystemExit(main())
