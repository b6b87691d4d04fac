"""Profiles, path resolution and the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from i2o_utils import paths
from i2o_utils.config import PROFILE_NAMES, get_profile


def test_paper_profile_holds_the_papers_numbers():
    p = get_profile("paper")
    assert (p.pretrain.wells_per_batch, p.pretrain.groups_per_batch, p.pretrain.tiles_per_well) == (240, 12, 12)
    assert p.pretrain.wells_per_batch * p.pretrain.tiles_per_well == 2880
    assert (p.pretrain.lr, p.pretrain.weight_decay, p.pretrain.margin) == (1e-4, 0.01, 0.2)
    assert (p.finetune.wells_per_batch, p.finetune.tiles_per_well, p.finetune.lr) == (64, 64, 5e-5)
    assert p.inference.tiles_per_well == 512 and len(p.inference.seeds) == 3
    assert p.evaluation.n_splits == 10 and p.evaluation.split_fractions == (0.7, 0.1, 0.2)
    assert (p.imaging.flatfield_percentile, p.imaging.flatfield_size, p.imaging.flatfield_sigma,
            p.imaging.tile_size) == (10, 250, 50, 128)
    assert p.screen.n_knockouts == 156 and p.screen.wells_per_plate == 384 and p.screen.n_imaging_plates == 8
    assert p.screen.fields_per_well == 16 and p.screen.field_size == 1080
    assert (p.screen.n_transcripts, p.screen.n_proteins) == (26_317, 4_986)
    assert p.pretrain.backbone_width == 64 and p.shrunk == ()


def test_shrunk_profiles_say_what_they_shrank():
    for name in ("quick", "smoke"):
        assert get_profile(name).shrunk
    assert set(PROFILE_NAMES) == {"smoke", "quick", "paper"}
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        get_profile("fast")


def test_overrides_copy_and_check_names():
    p = get_profile("smoke").with_overrides(pretrain={"steps": 7})
    assert p.pretrain.steps == 7 and get_profile("smoke").pretrain.steps != 7
    with pytest.raises(KeyError, match="no field"):
        get_profile("smoke").with_overrides(pretrain={"stepz": 1})


def test_roots_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("I2O_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("I2O_RESULTS_DIR", str(tmp_path / "r"))
    assert paths.data_dir() == tmp_path / "d"
    assert paths.results_dir("10_x") == tmp_path / "r" / "10_x" and (tmp_path / "r" / "10_x").is_dir()
    assert paths.bucket_paths()["icf"] == tmp_path / "d" / "data" / "ICF"
    monkeypatch.delenv("I2O_DATA_DIR")
    assert paths.data_dir() == paths.REPO_ROOT / "data"


def test_cli_simulate(tmp_path):
    out = tmp_path / "screen"
    r = subprocess.run([sys.executable, "-m", "i2o_utils.cli", "simulate", "--profile", "smoke",
                        "--seed", "2", "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "64 imaging wells" in r.stdout
    assert (out / "SCREEN.json").exists() and (out / "data" / "metadata.csv").exists()
    r = subprocess.run([sys.executable, "-m", "i2o_utils.cli", "simulate", "--profile", "huge"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_book_runs_a_null_screen_sharing_the_imaging_steps(tmp_path, monkeypatch):
    import i2o_utils.book
    import i2o_utils.runner as runner
    from i2o_utils.cli import main
    from i2o_utils.paths import null_screen_dirs

    calls = []
    monkeypatch.setattr(runner, "run_notebooks", lambda profile, **kw: calls.append((profile, kw)) or [])
    monkeypatch.setattr(i2o_utils.book, "build_book", lambda **kw: tmp_path / "index.html")
    with pytest.raises(FileNotFoundError, match="20_preprocess_images"):
        main(["book", "--profile", "smoke", "--results-dir", str(tmp_path)])
    for step in runner.NULL_SCREEN_SHARED:
        (tmp_path / step).mkdir()
    calls.clear()
    assert main(["book", "--profile", "smoke", "--results-dir", str(tmp_path), "-p", "seed", "3"]) == 0
    (p1, first), (p_null, null_kw), (p2, rest) = calls
    dirs = null_screen_dirs(tmp_path)
    assert p1 == p_null == p2 == "smoke"
    assert all(int(s[:2]) < 50 for s in first["select"]) and rest["select"][0].startswith("50_")
    # the null screen: the main screen's seed, its own roots, the imaging steps linked, not rerun
    assert null_kw["parameters"] == {"null": True, "seed": 3, "images": False, "overwrite": True,
                                     "run_baselines": False}
    assert null_kw["data_dir"] == dirs["data"] and null_kw["results_dir"] == dirs["results"]
    assert null_kw["output_dir"] == dirs["executed"]
    assert [s[:2] for s in null_kw["select"]] == ["00", "10", "40", "50"]
    for step in runner.NULL_SCREEN_SHARED:
        assert (dirs["results"] / step).resolve() == (tmp_path / step).resolve()
    assert first["results_dir"] == str(tmp_path)
    calls.clear()
    assert main(["book", "--profile", "smoke", "--no-null-screen", "--results-dir", str(tmp_path)]) == 0
    assert len(calls) == 1
