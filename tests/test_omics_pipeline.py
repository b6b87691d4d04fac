"""Notebook 10's pipeline on a tiny bucket written here (raw omics + paired imaging metadata)."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from i2o_utils.config import OmicsConfig
from i2o_utils.data import layout
from i2o_utils.data.splits import screen_splits, split_perturbations
from i2o_utils.omics import (OmicsInputError, build_ground_truth, gene_filter_summary, preprocess_omics,
                             read_all_omics_raw, read_omics_raw, write_outputs)
from i2o_utils.omics.qc import plate_effect_summary
from i2o_utils.paths import bucket_paths

TARGETS = ["NT"] * 4 + ["STAT1", "STAT1", "IRF5", "IRF5", "TNF", "TNF", "MYC", "MYC"]


def _wells(rng):
    return [layout.format_well_id(r, c) for r, c in zip(rng.choice(np.arange(1, 17), 12, replace=False),
                                                        rng.choice(np.arange(1, 25), 12, replace=False))]


def make_bucket(root, pairing: bool = True, simulated: bool = True, seed: int = 0):
    """2 stimuli x 2 omics plates x 12 wells; 60 transcripts (6 low), 50 proteins (5 low)."""
    rng = np.random.default_rng(seed)
    bp = bucket_paths(root)
    bp["omics_raw"].mkdir(parents=True)
    effects = {t: rng.normal(0, 0.5, 60) for t in sorted(set(TARGETS))}
    for omics, prefix, g in (("transcriptomics", "RNA", 60), ("proteomics", "PRT", 50)):
        rows, x = [], []
        for s in ("m1", "m2"):
            for j in (1, 2):
                plate_eff = rng.normal(0, 0.8, g)
                for w, t in zip(_wells(rng), TARGETS):
                    rows.append({"plate_barcode": f"{prefix}_{s.upper()}_P{j}", "omics_plate": f"{s.upper()}_P{j}",
                                 "well_id": w, "target": t, "cell_state": s})
                    logmu = np.linspace(2, 7, g) + effects[t][:g] + plate_eff
                    if omics == "transcriptomics":
                        mu = np.exp(logmu) * rng.lognormal(0, 0.2)
                        mu[:6] = 0.01
                        x.append(rng.poisson(mu))
                    else:
                        v = np.exp(logmu + 5 + rng.normal(0, 0.1, g)) + rng.normal(0, 50, g)
                        v[:5] = np.where(rng.random(5) < 0.05, 100.0, 0.0)
                        v[rng.random(g) < 0.02] = 0.0
                        x.append(np.maximum(v, 0))
        obs = pd.DataFrame(rows)
        if omics == "proteomics":
            obs["tmt_batch"] = [f"{p}_TMT{1 + (i % 12) // 6}" for i, p in enumerate(obs["plate_barcode"])]
        obs.index = [f"{p}:{w}" for p, w in zip(obs["plate_barcode"], obs["well_id"])]
        var = pd.DataFrame({"symbol": [f"G{k}" for k in range(g)]},
                           index=[f"ENSG{k:011d}" if omics == "transcriptomics" else f"G{k}" for k in range(g)])
        ad.AnnData(X=np.asarray(x, dtype=np.float32), obs=obs, var=var).write_h5ad(bp["omics_raw"] / f"{omics}.h5ad")
    meta = []
    for s in ("m1", "m2"):
        for j in (1, 2):
            for rep in (0, 1):
                for w, t in zip(_wells(rng), TARGETS):
                    meta.append({"well_id": w, "PLATE_ID": f"IMG_{s.upper()}_P{j}_R{rep}", "target": t,
                                 "cell_state": s, "Column": int(w[1:]), "omics_plate": f"{s.upper()}_P{j}",
                                 "replicate": rep})
    meta = pd.DataFrame(meta)
    if not pairing:
        meta = meta.drop(columns=["omics_plate", "replicate"])
    meta.to_csv(bp["metadata"], index=False)
    if simulated:
        (root / "SCREEN.json").write_text(json.dumps({"source": "simulated"}))
    return bp


def run(root, cfg=OmicsConfig(), out=None):
    raw = read_all_omics_raw(root)
    sets = preprocess_omics(raw, cfg, progress=False)
    meta = layout.read_metadata(bucket_paths(root)["metadata"])
    gt = build_ground_truth(sets, meta, cfg, split_table=screen_splits(meta, 1, (0.7, 0.1, 0.2), gt_given=False))
    written = write_outputs(sets, gt, out or root / "results", root)
    return sets, gt, written


def test_end_to_end_outputs(tmp_path):
    bp = make_bucket(tmp_path)
    sets, gt, written = run(tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted([f"{o}_{s}.h5ad" for o in ("transcriptomics", "proteomics") for s in ("m1", "m2")]
                           + [f"genes_{o}_{s}.csv" for o in ("transcriptomics", "proteomics") for s in ("m1", "m2")]
                           + [f"{o}_{s}.csv" for o in ("transcriptomics", "proteomics") for s in ("m1", "m2")])
    a = ad.read_h5ad(tmp_path / "results" / "proteomics_m1.h5ad")
    assert set(a.layers.keys()) == {"raw", "normalised", "corrected"} and a.n_obs == 24
    np.testing.assert_array_equal(a.X, a.layers["corrected"])
    genes = pd.read_csv(tmp_path / "results" / "genes_transcriptomics_m2.csv")
    assert len(genes) == 60 and genes["kept"].sum() == 54
    raw = read_all_omics_raw(tmp_path)["transcriptomics"]
    m2 = sets.data[("transcriptomics", "m2")]
    np.testing.assert_array_equal(m2.layers["raw"], raw[m2.obs_names, genes.loc[genes["kept"], "gene"].astype(str)].X)
    assert (genes.loc[~genes["kept"], "reason"].str.startswith("detected in <")).all()
    summary = gene_filter_summary(sets)
    assert summary.set_index(["omics", "stimulus"]).loc[("proteomics", "m2"), "filtered"] == 5

    t = layout.read_gt(layout.gt_path("transcriptomics", "m1", tmp_path))
    meta = layout.read_metadata(bp["metadata"])
    m1 = meta[meta["cell_state"] == "m1"]
    assert list(t.columns) == list(layout.GT_COLUMNS)
    t = t.rename(columns={layout.GT_GENE: "gene", layout.GT_FOLD: "fold", layout.GT_MEASURED: "measured"})
    assert len(t) == len(m1) * 54 and t["measured"].notna().all()
    fold = split_perturbations(meta["target"].unique(), seed=0)
    merged = t.drop_duplicates(["plate_barcode", "well_id"]).merge(m1, left_on=["plate_barcode", "well_id"],
                                                                  right_on=["PLATE_ID", "well_id"])
    assert (merged["fold"] == merged["target"].map(fold)).all()
    # a label is the mean of its drawn wells' corrected values, seed chosen by the replicate
    tr = sets.data[("transcriptomics", "m1")]
    draws = tr.uns["label_draws"]
    row = merged[(merged["target"] == "IRF5") & (merged["replicate"] == 1)].iloc[0]
    drawn = draws[(draws["seed"] == 1) & (draws["target"] == "IRF5")]["sample"]
    expect = pd.DataFrame(tr.layers["corrected"], index=tr.obs_names, columns=tr.var_names).loc[drawn].mean()
    got = t[(t["plate_barcode"] == row["PLATE_ID"]) & (t["well_id"] == row["well_id"])].set_index("gene")["measured"]
    np.testing.assert_allclose(got.loc[expect.index], expect, rtol=1e-5)


def test_plate_effect_is_removed_from_control_wells(tmp_path):
    make_bucket(tmp_path)
    sets, _, _ = run(tmp_path)
    eff = plate_effect_summary(sets).set_index(["omics", "stimulus", "layer"])["plate_r2_genes"]
    for o in ("transcriptomics", "proteomics"):
        for s in ("m1", "m2"):
            assert eff[(o, s, "normalised")] > 0.5
            assert eff[(o, s, "corrected")] < 0.25


def test_without_pairing_columns_gt_is_left_alone(tmp_path):
    bp = make_bucket(tmp_path, pairing=False, simulated=False)
    bp["gt"].mkdir(parents=True)
    given = bp["gt"] / "transcriptomics_m1.csv"
    given.write_text("plate_barcode,well_id,gene,fold,measured\nX,A1,g,train,1.0\n")
    sets, gt, written = run(tmp_path)
    assert not gt and "left as they are" in gt.note
    assert given.read_text().endswith("X,A1,g,train,1.0\n")
    assert all(p.parent == tmp_path / "results" for p in written)


def test_real_gt_is_never_replaced(tmp_path):
    bp = make_bucket(tmp_path, pairing=True, simulated=False)
    bp["gt"].mkdir(parents=True)
    given = bp["gt"] / "proteomics_m2.csv"
    given.write_text("plate_barcode,well_id,gene,fold,measured\n")
    _, gt, written = run(tmp_path)
    assert gt and not any(p.parent == bp["gt"] for p in written)
    assert given.read_text() == "plate_barcode,well_id,gene,fold,measured\n"


def test_pairing_with_unknown_omics_plate_raises(tmp_path):
    bp = make_bucket(tmp_path)
    meta = pd.read_csv(bp["metadata"])
    meta.loc[meta["PLATE_ID"] == "IMG_M2_P1_R0", "omics_plate"] = "M2_P9"
    meta.to_csv(bp["metadata"], index=False)
    with pytest.raises(OmicsInputError, match="IMG_M2_P1_R0 .*'M2_P9'"):
        run(tmp_path)


def _rewrite_raw(bp, omics, change):
    a = ad.read_h5ad(bp["omics_raw"] / f"{omics}.h5ad")
    change(a)
    a.write_h5ad(bp["omics_raw"] / f"{omics}.h5ad")


def _set_first(column, *values):
    def change(a):
        col = list(a.obs[column].astype(str))
        col[:len(values)] = values
        a.obs = a.obs.assign(**{column: col})
    return change


def _drop(column):
    def change(a):
        a.obs = a.obs.drop(columns=[column])
    return change


@pytest.mark.parametrize("omics, change, message", [
    ("transcriptomics", _drop("target"), "obs: missing column\\(s\\) \\['target'\\]"),
    ("proteomics", _drop("tmt_batch"), "missing column\\(s\\) \\['tmt_batch'\\]"),
    ("transcriptomics", _set_first("well_id", "A1", "A1"), "duplicated well A1"),
    ("transcriptomics", _set_first("well_id", "XYZ"), "malformed well id 'XYZ'"),
    ("transcriptomics", _set_first("well_id", "Z99"), "well id 'Z99' .*outside a 384-well plate"),
    ("transcriptomics", _set_first("cell_state", "m3"), "cell_state 'm3'"),
])
def test_bad_raw_tables_raise_naming_file(tmp_path, omics, change, message):
    bp = make_bucket(tmp_path)
    _rewrite_raw(bp, omics, change)
    with pytest.raises(OmicsInputError, match=message) as e:
        read_omics_raw(omics, tmp_path)
    assert f"{omics}.h5ad" in str(e.value)


@pytest.mark.parametrize("omics, value, message", [
    ("transcriptomics", 2.5, "non-integer count 2.5 in sample 'RNA_M1_P1:"),
    ("transcriptomics", -3, "negative count"),
    ("proteomics", -3, "negative intensity"),
    ("proteomics", np.inf, "infinite value"),
])
def test_bad_values_raise_before_anything_is_written(tmp_path, omics, value, message):
    bp = make_bucket(tmp_path)

    def change(a):
        x = np.array(a.X)
        x[0, 10] = value
        a.X = x
    _rewrite_raw(bp, omics, change)
    with pytest.raises(OmicsInputError, match=message):
        run(tmp_path)
    assert not (tmp_path / "results").exists() and not bp["gt"].exists()


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    make_bucket(tmp_path)
    raw = read_all_omics_raw(tmp_path)
    sets = preprocess_omics(raw, progress=False)

    def broken(self, path, *args, **kwargs):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(ad.AnnData, "write_h5ad", broken)
    with pytest.raises(OSError, match="disk full"):
        meta = layout.read_metadata(bucket_paths(tmp_path)["metadata"])
        gt = build_ground_truth(sets, meta, split_table=screen_splits(meta, 1, (0.7, 0.1, 0.2), gt_given=False))
        write_outputs(sets, gt, tmp_path / "results", tmp_path)
    assert list((tmp_path / "results").iterdir()) == []


def test_failed_write_replaces_none_of_the_earlier_outputs(tmp_path, monkeypatch):
    from i2o_utils.omics import pipeline

    make_bucket(tmp_path)
    sets, gt, written = run(tmp_path)
    before = {p: (p.stat().st_ino, p.read_bytes()) for p in written}  # a replaced file has a new inode
    assert any(p.parent == bucket_paths(tmp_path)["gt"] for p in before)
    real, calls = pipeline.write_set, []

    def fail_third(adata, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(adata, path, *args, **kwargs)
    monkeypatch.setattr(pipeline, "write_set", fail_third)
    with pytest.raises(OSError, match="disk full"):
        write_outputs(sets, gt, tmp_path / "results", tmp_path)
    assert {p: (p.stat().st_ino, p.read_bytes()) for p in written} == before
    for folder in (tmp_path / "results", bucket_paths(tmp_path)["gt"]):
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in before if p.parent == folder)


def test_missing_raw_file_raises(tmp_path):
    with pytest.raises(OmicsInputError, match="proteomics.h5ad: no such file"):
        read_omics_raw("proteomics", tmp_path)
    assert read_all_omics_raw(tmp_path) == {}


def test_filter_against_simulated_truth(tmp_path):
    from i2o_utils.omics.qc import filter_against_truth

    bp = make_bucket(tmp_path)
    sets = preprocess_omics(read_all_omics_raw(tmp_path), progress=False)
    assert filter_against_truth(sets, tmp_path) is None  # no truth table: real data
    truth = pd.DataFrame({"omics": "transcriptomics", "gene": [f"ENSG{k:011d}" for k in range(60)],
                          "kind": ["low"] * 6 + ["noise"] * 54, "r2_expected": 0.0})
    bp["simulation"].mkdir()
    truth.to_csv(bp["simulation"] / "truth_genes.csv", index=False)
    table = filter_against_truth(sets, tmp_path).set_index(["omics", "stimulus", "kind"])
    assert table.loc[("transcriptomics", "m1", "low"), "filtered"] == 6
    assert table.loc[("transcriptomics", "m1", "noise"), "kept"] == 54
    assert table.loc[("proteomics", "m1", "not in truth table"), "genes"] == 50
