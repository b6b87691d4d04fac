"""The GPU run (``benchmarks/gpu.sh``): its CPU dry run end to end, its set-up and its verdicts.

The dry run executes every stage of the device run (GPU tests, simulated screen and image
preprocessing into a tile store, pre-training from the store, the loss check, inference, the
heads) at the smoke profile's sizes, so that the script cannot rot between runs on a GPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not of the installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.gpu_setup import lock_pins, normalise, wheel_distribution, wheels_to_install, wrong_major  # noqa: E402
from benchmarks.paper_gpu import STAGES, TARGETS, judge_targets, loss_fell, run_profiles  # noqa: E402


def _env() -> dict:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    return env


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_dry_run")
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", "--out", str(out)],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    return r, sorted(out.glob("paper_gpu_dry-run_*.json"))


def test_dry_run_runs_every_stage(dry_run):
    r, files = dry_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert len(files) == 1
    res = json.loads(files[0].read_text())
    assert res["mode"] == "dry-run" and res["device"] == "cpu" and res["complete"]
    assert set(res["stages"]) == set(STAGES)
    failed = {k: v.get("error") for k, v in res["stages"].items() if not v["ok"]}
    assert not failed
    env = res["environment"]
    assert env["torch"] and env["python"] and "cores" in env["hardware"]
    assert env["gpu"] is None  # a CPU run names no GPU

    model, screen = run_profiles(tiny=True)
    st = res["stages"]
    # the GPU tests ran (and, without a GPU, skipped with a reason; none failed)
    assert st["gpu_tests"]["skipped"] == len(st["gpu_tests"]["tests"]) >= 2
    assert all("CUDA" in t["outcome"] for t in st["gpu_tests"]["tests"])
    # a tile store from the simulated screen through the image preprocessing
    sc = screen.screen
    assert st["screen"]["wells"] == sc.wells_per_plate * sc.n_imaging_plates
    assert st["screen"]["tiles"] > st["screen"]["wells"]
    assert st["screen"]["tile_size"] == screen.imaging.tile_size
    # pre-training from that store, its parts, and a loss that fell
    assert st["pretrain"]["K"] == model.pretrain.wells_per_batch and st["pretrain"]["N"] == model.pretrain.tiles_per_well
    assert st["pretrain"]["tiles_per_s"] > 0
    assert {"host_tiles_per_s", "transfer_prepare_tiles_per_s", "compute_tiles_per_s"} <= set(st["pretrain"]["parts"])
    assert st["loss_run"]["fell"] and st["loss_run"]["last"] < st["loss_run"]["first"]
    assert st["loss_run"]["steps"] == len(st["loss_run"]["loss"])
    # inference over every tile of the store, then N x seeds well embeddings of every well
    assert st["inference"]["store_tiles"] == st["screen"]["tiles"]
    assert st["inference"]["tiles_per_pass"] == st["inference"]["store_read_times_per_pass"] * st["screen"]["tiles"]
    assert st["inference"]["well_embeddings"]["wells"] == st["screen"]["wells"]
    assert st["inference"]["well_embeddings"]["N"] == model.inference.tiles_per_well
    # every head of the profile
    assert st["heads"]["complete"] and st["heads"]["heads"] == 4 * model.evaluation.n_splits
    # targets: measured, but not judged on a CPU at tiny sizes
    assert [t["target"] for t in res["targets"]] == list(TARGETS)
    assert all(t["passed"] is None and math.isfinite(t["measured"]) for t in res["targets"])
    assert "not judged" in r.stdout
    assert res["loss_fell"] is True


def test_loss_fell_verdict():
    falling = [1.0] * 10 + [0.5] * 10
    assert loss_fell(falling)["fell"]
    flat = [0.2, 0.21] * 10
    v = loss_fell(flat)
    assert not v["fell"] and abs(v["relative_drop"]) < 0.05
    assert not loss_fell([1.0, 0.9, 0.8])["fell"]  # too short to say
    assert not loss_fell([1.0] * 10 + [float("nan")] * 10)["fell"]
    assert not loss_fell([1.0] * 10 + [0.97] * 10)["fell"]  # a 3% drop is below the 5% asked


def test_judge_targets():
    rows = judge_targets({"pretrain_tiles_per_s": 30_000, "inference_tiles_per_s": 50_000, "heads_seconds": 90}, True)
    assert [r["passed"] for r in rows] == [True, False, True]
    rows = judge_targets({"pretrain_tiles_per_s": 30_000, "inference_tiles_per_s": None, "heads_seconds": 121}, True)
    assert [r["passed"] for r in rows] == [True, None, False]
    assert all(r["passed"] is None for r in judge_targets({"pretrain_tiles_per_s": 1e9}, False))


def test_wheel_selection():
    assert normalise("Typing_Extensions") == normalise("typing.extensions") == "typing-extensions"
    assert wheel_distribution("zarr-3.1.6-py3-none-any.whl") == "zarr"
    wheels = [Path("anndata-0.12.19-py3-none-any.whl"), Path("typing_extensions-4.16.0-py3-none-any.whl")]
    assert wheels_to_install(wheels, {"typing-extensions"}) == [wheels[0]]
    with pytest.raises(ValueError, match="two wheels of zarr"):
        wheels_to_install([Path("zarr-3.1.6-py3-none-any.whl"), Path("zarr-3.0.0-py3-none-any.whl")], set())
    with pytest.raises(ValueError, match="not a wheel"):
        wheel_distribution("zarr.tar.gz")


def test_major_version_check(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# comment\nPandas==2.3.3\nmoto[server]==5.2.5\nnumpy==2.4.6 ; python_version >= '3.11'\n")
    pins = lock_pins(lock)
    assert pins == {"pandas": "2.3.3", "moto": "5.2.5", "numpy": "2.4.6"}
    import numpy

    same = {"numpy": numpy.__version__}
    assert wrong_major(same, ("numpy",)) == {}
    other = {"numpy": f"{int(numpy.__version__.split('.')[0]) + 1}.0.0"}
    assert wrong_major(other, ("numpy",)) == {"numpy": (numpy.__version__, other["numpy"])}
    assert wrong_major(pins, ("i2o-not-installed",)) == {}
    # an installed distribution is replaced only when asked
    pd_wheel = Path("pandas-2.3.3-cp312-cp312-manylinux_2_28_x86_64.whl")
    assert wheels_to_install([pd_wheel], {"pandas"}) == []
    assert wheels_to_install([pd_wheel], {"pandas"}, replace={"pandas"}) == [pd_wheel]


def _make_wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel holding one module ``name`` (version 0.1)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
        z.writestr(f"{info}/RECORD", "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n")
    return path


def test_setup_installs_only_the_missing_from_wheels(tmp_path):
    _make_wheel(tmp_path / "wheels", "i2o_probe_pkg")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_setup", "check", "--require", "i2o_probe_pkg",
                        "--optional", "--wheels", str(tmp_path / "wheels"), "--target", str(site)],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(site)  # the folder to add to PYTHONPATH
    assert "installed i2o_probe_pkg-0.1" in r.stdout
    probe = subprocess.run([sys.executable, "-c", "import i2o_probe_pkg; print(i2o_probe_pkg.VALUE)"],
                           env={**_env(), "PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert probe.stdout.strip() == "42"


def test_setup_names_what_is_missing(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_setup", "check", "--require", "numpy",
                        "i2o_no_such_module", "--optional", "--wheels", str(tmp_path), "--target", str(tmp_path / "s")],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 3
    assert "i2o_no_such_module" in r.stderr and "numpy" not in r.stderr.split("import:")[1].split("To bring")[0]
    assert "gpu_setup fetch" in r.stderr


def test_device_run_refuses_a_machine_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--out", str(tmp_path)],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 3
    assert "no CUDA device" in r.stderr
    assert not list(tmp_path.glob("*.json"))


def test_time_limit_is_recorded(tmp_path, monkeypatch):
    """SIGTERM (gpu.sh's time limit) stops the stage running, skips the rest, keeps the results."""
    import signal
    import time

    import torch

    import benchmarks.paper_gpu as pg

    def slow_stage(ctx):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        return {}

    monkeypatch.setitem(pg.STAGES, "gpu_tests", slow_stage)
    handler, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    try:
        rc = pg.main(["--dry-run", "--stages", "gpu_tests", "heads", "--out", str(tmp_path), "--work", str(tmp_path / "w")])
    finally:
        signal.signal(signal.SIGTERM, handler)
        torch.set_num_threads(threads)
    assert rc == 1
    res = json.loads(next(tmp_path.glob("paper_gpu_dry-run_*.json")).read_text())
    assert "time limit" in res["stages"]["gpu_tests"]["error"]
    assert "not run" in res["stages"]["heads"]["error"]
    assert not res["complete"]
