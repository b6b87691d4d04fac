"""The simulated screen: determinism, scale, and a truth that the data actually carry."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from i2o_utils.config import CONTROL, M1_REVERTING, M2_REVERTING, get_profile
from i2o_utils.data import layout
from i2o_utils.data.simulate import ScreenMismatch, plate_design, read_screen_info, simulate_screen
from i2o_utils.paths import bucket_paths


def _medium():
    """Enough omics wells (4 plates x 48 per omics) for per-gene regressions; tiny images."""
    return get_profile("smoke").with_overrides(
        screen={"n_knockouts": 20, "wells_per_knockout": 2, "nt_wells_per_plate": 8,
                "field_size": 96, "cells_per_field": 6.0, "n_transcripts": 300, "n_proteins": 60})


@pytest.fixture(scope="module")
def medium_screen(tmp_path_factory):
    root = tmp_path_factory.mktemp("medium")
    simulate_screen(root, profile=_medium(), seed=3, progress=False)
    return root


def test_paper_scale_plate_counts():
    imaging, omics = plate_design(get_profile("paper"), np.random.default_rng(0))
    assert imaging["PLATE_ID"].nunique() == 8
    assert imaging.groupby("PLATE_ID").size().eq(384).all()
    assert imaging.groupby("cell_state")["PLATE_ID"].nunique().to_dict() == {"m1": 4, "m2": 4}
    assert imaging["target"].nunique() == 157  # 156 knock-outs + NT
    assert {M1_REVERTING, M2_REVERTING, CONTROL} <= set(imaging["target"])
    assert len(omics) == 3072 and omics.groupby("omics")["plate_barcode"].nunique().to_dict() == \
        {"proteomics": 4, "transcriptomics": 4}
    # two imaging plates per omics plate, replicate 0 and 1
    pairs = imaging.groupby("omics_plate")["PLATE_ID"].nunique()
    assert pairs.eq(2).all() and set(imaging["replicate"]) == {0, 1}
    assert not imaging.duplicated(["PLATE_ID", "well_id"]).any()


def test_smoke_screen_files_follow_the_layout(smoke_screen):
    bp = bucket_paths(smoke_screen)
    meta = layout.read_metadata(bp["metadata"])
    idx = layout.index_wells(bp["raw"])
    assert len(meta) == len(idx) == 64
    assert set(zip(meta["PLATE_ID"], meta["well_id"])) == set(zip(idx["plate"].map(layout.plate_id), idx["well_id"]))
    assert set(zip(meta["plate_barcode"], meta["well_id"])) == set(zip(idx["plate"], idx["well_id"]))
    assert idx["plate"].str.fullmatch(r"ELN\d+_[A-Z0-9]+").all()
    parts = [layout.parse_image_file_name(p) for p in idx["path"]]
    assert all(p is not None and p["prefix"] == "RAW" and len(p["timestamp"]) == 13 for p in parts)
    assert [p["barcode"] for p in parts] == idx["plate"].tolist()
    w = layout.read_well_images(idx["path"].iloc[0])
    assert w.fields.dtype == np.uint16 and w.fields.shape == (2, 3, 128, 128)
    rna = ad.read_h5ad(bp["omics_raw"] / "transcriptomics.h5ad")
    prot = ad.read_h5ad(bp["omics_raw"] / "proteomics.h5ad")
    assert rna.shape == (32, 200) and prot.shape == (32, 80)
    assert rna.var_names.str.match(r"^ENSG\d{11}$").all()
    assert prot.var_names.isin(rna.var["symbol"]).all()  # proteins are symbols of measured genes
    assert np.issubdtype(rna.X.dtype, np.integer) and (rna.X >= 0).all()
    assert (prot.X >= 0).all() and "tmt_batch" in prot.obs
    info = read_screen_info(smoke_screen)
    assert info["source"] == "simulated" and info["profile"] == "smoke" and info["seed"] == 0


def test_deterministic_for_a_seed(tmp_path, smoke_screen):
    again = simulate_screen(tmp_path / "a", profile="smoke", seed=0, progress=False)
    other = simulate_screen(tmp_path / "b", profile="smoke", seed=1, progress=False)
    for key in ("metadata",):
        assert bucket_paths(again.root)[key].read_bytes() == bucket_paths(smoke_screen)[key].read_bytes()
    a = ad.read_h5ad(bucket_paths(again.root)["omics_raw"] / "transcriptomics.h5ad")
    s = ad.read_h5ad(bucket_paths(smoke_screen)["omics_raw"] / "transcriptomics.h5ad")
    b = ad.read_h5ad(bucket_paths(other.root)["omics_raw"] / "transcriptomics.h5ad")
    np.testing.assert_array_equal(a.X, s.X)
    assert not np.array_equal(a.X, b.X)
    ia, is_ = layout.index_wells(bucket_paths(again.root)["raw"]), layout.index_wells(bucket_paths(smoke_screen)["raw"])
    for pa, ps in list(zip(ia["path"], is_["path"]))[:5]:
        np.testing.assert_array_equal(layout.read_well_images(pa).fields, layout.read_well_images(ps).fields)


def test_existing_screen_is_reused_and_foreign_data_refused(tmp_path, smoke_screen):
    s = simulate_screen(smoke_screen, profile="smoke", seed=0, progress=False)
    assert s.skipped
    foreign = tmp_path / "real"
    (foreign / "data").mkdir(parents=True)
    (foreign / "data" / "metadata.csv").write_text("well_id\n")
    with pytest.raises(FileExistsError, match="not simulated"):
        simulate_screen(foreign, profile="smoke", progress=False)
    assert (foreign / "data" / "metadata.csv").read_text() == "well_id\n"


def _gene_r2(y, x):
    """R^2 of each column of y regressed on x (with intercept)."""
    x1 = np.column_stack([np.ones(len(x)), x])
    beta, *_ = np.linalg.lstsq(x1, y, rcond=None)
    res = y - x1 @ beta
    return 1 - res.var(0) / y.var(0)


def test_planted_genes_follow_the_latent_state_and_noise_genes_do_not(medium_screen):
    bp = bucket_paths(medium_screen)
    truth = pd.read_csv(bp["simulation"] / "truth_genes.csv")
    lat = pd.read_parquet(bp["simulation"] / "latent.parquet")
    rna = ad.read_h5ad(bp["omics_raw"] / "transcriptomics.h5ad")
    z = lat[lat["kind"] == "omics"].set_index(["plate", "well_id"]).filter(regex=r"^z\d$")
    z = z.loc[list(zip(rna.obs["plate_barcode"], rna.obs["well_id"]))].to_numpy()
    x = np.asarray(rna.X, float)
    logx = np.log1p(x / x.sum(1, keepdims=True) * x.sum(1).mean())
    plates = pd.get_dummies(rna.obs["plate_barcode"]).to_numpy(float)[:, 1:]
    t = truth[truth["omics"] == "transcriptomics"].set_index("gene").loc[rna.var_names]
    r2_latent = _gene_r2(logx, np.column_stack([z, plates])) - _gene_r2(logx, plates)
    kind = t["kind"].to_numpy()
    assert r2_latent[kind == "visible"].mean() > 0.2
    assert r2_latent[kind == "hidden"].mean() > 0.2
    assert r2_latent[kind == "noise"].mean() < 0.06
    # hidden genes follow the hidden dimensions only
    zv, zh = z[:, :4], z[:, 4:]
    hid = kind == "hidden"
    gain_v = _gene_r2(logx[:, hid], np.column_stack([zv, plates])) - _gene_r2(logx[:, hid], plates)
    gain_h = _gene_r2(logx[:, hid], np.column_stack([zh, plates])) - _gene_r2(logx[:, hid], plates)
    assert gain_h.mean() > 3 * gain_v.mean()
    # the truth's expected r2 is positive exactly for visible genes
    assert (t.loc[kind == "visible", "r2_expected"] > 0).all()
    assert (t.loc[kind != "visible", "r2_expected"] == 0).all()
    # low genes are mostly zero (the expression filter's job)
    assert (x[:, kind == "low"] > 0).mean() < 0.13 < (x[:, kind == "noise"] > 0).mean()


def test_images_carry_the_visible_state(medium_screen):
    """Nucleus area (Hoechst foreground per nucleus) follows latent dimension 0 across wells."""
    bp = bucket_paths(medium_screen)
    lat = pd.read_parquet(bp["simulation"] / "latent.parquet")
    nuc = pd.read_parquet(bp["simulation"] / "nuclei_truth.parquet")
    counts = nuc.groupby(["plate", "well_id"]).size()
    z0 = lat[lat["kind"] == "imaging"].set_index(["plate", "well_id"])["z0"]
    area, zz = [], []
    for p in layout.list_well_files(bp["raw"]):
        w = layout.read_well_images(p)
        key = (w.plate, w.well_id)
        if counts.get(key, 0) < 3:
            continue
        h = w.fields[0, 0].astype(float)
        fg = h > np.percentile(h, 5) + 0.5 * (h.max() - np.percentile(h, 5))
        area.append(fg.sum() / counts[key])
        zz.append(z0[key])
    assert len(area) > 100
    assert np.corrcoef(area, zz)[0, 1] > 0.5


def test_null_screen_decouples_omics_from_images(tmp_path):
    prof = _medium().with_overrides(screen={"field_size": 32, "cells_per_field": 1.0})
    out = {}
    for null in (False, True):
        root = simulate_screen(tmp_path / str(null), profile=prof, seed=5, null=null, progress=False).root
        lat = pd.read_parquet(bucket_paths(root)["simulation"] / "latent.parquet")
        g = lat.groupby(["kind", "target", "cell_state"])[["z0", "z1", "z2", "z3"]].mean()
        img, om = g.loc["imaging"], g.loc["omics"].loc[g.loc["imaging"].index]
        # centre within stimulus so the stimulus mean does not count as signal
        img = img - img.groupby(level="cell_state").transform("mean")
        om = om - om.groupby(level="cell_state").transform("mean")
        out[null] = np.corrcoef(img.to_numpy().ravel(), om.to_numpy().ravel())[0, 1]
        truth = pd.read_csv(bucket_paths(root)["simulation"] / "truth_genes.csv")
        assert truth["predictable"].any() != null
        assert json.loads((root / "SCREEN.json").read_text())["null"] is null
    assert out[False] > 0.8
    assert abs(out[True]) < 0.3


def test_a_screen_without_images_has_the_same_plate_map_omics_and_truth(tmp_path, smoke_screen):
    """images=False (the null screen of make book): no RAW images, everything else as with them."""
    bare = simulate_screen(tmp_path / "bare", profile="smoke", seed=0, progress=False, images=False)
    bp, full = bucket_paths(bare.root), bucket_paths(smoke_screen)
    assert not bp["raw"].exists()  # notebook 00 then says there are no images to show
    assert bp["metadata"].read_bytes() == full["metadata"].read_bytes()
    a = ad.read_h5ad(bp["omics_raw"] / "proteomics.h5ad")
    s = ad.read_h5ad(full["omics_raw"] / "proteomics.h5ad")
    np.testing.assert_array_equal(a.X, s.X)
    assert (bp["simulation"] / "truth_genes.csv").read_bytes() == (full["simulation"] / "truth_genes.csv").read_bytes()
    with pytest.raises(ScreenMismatch, match="images"):  # a screen without images is not the screen with them
        simulate_screen(tmp_path / "bare", profile="smoke", seed=0, progress=False)
