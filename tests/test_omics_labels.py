"""The label protocol (two wells per perturbation and stimulus, one draw per seed) and z-scores."""

import numpy as np
import pandas as pd
import pytest

from i2o_utils.data.layout import GT_MEASURED

from i2o_utils.omics import (OmicsInputError, apply_zscore, compute_labels, fit_zscore, invert_zscore,
                             label_wells)


def omics_wells():
    targets = ["NT"] * 6 + ["STAT1"] * 4 + ["IRF5"] * 1
    samples = [f"RNA_P{1 + i % 2}:A{i + 1}" for i in range(len(targets))]
    values = pd.DataFrame(np.arange(len(targets) * 3, dtype=float).reshape(-1, 3) ** 1.5,
                          index=samples, columns=["g1", "g2", "g3"])
    return values, targets


def test_label_is_mean_of_two_drawn_wells_of_the_group():
    values, targets = omics_wells()
    lab = compute_labels(values, targets, seeds=[0, 1])
    assert lab.targets == ["IRF5", "NT", "STAT1"]
    for si, seed in enumerate([0, 1]):
        for ti, t in enumerate(lab.targets):
            drawn = lab.draws.query("seed == @seed and target == @t")["sample"].tolist()
            assert len(drawn) == (1 if t == "IRF5" else 2) and len(set(drawn)) == len(drawn)
            assert all(targets[list(values.index).index(s)] == t for s in drawn)
            np.testing.assert_allclose(lab.values[si, ti], values.loc[drawn].mean().to_numpy())


def test_draws_follow_the_documented_rng_sequence():
    values, targets = omics_wells()
    lab = compute_labels(values, targets, seeds=[5])
    rng = np.random.default_rng(5)
    members = {t: [s for s, tt in zip(values.index, targets) if tt == t] for t in ["IRF5", "NT", "STAT1"]}
    expect = []
    for t in ["IRF5", "NT", "STAT1"]:
        pick = rng.choice(len(members[t]), size=min(2, len(members[t])), replace=False)
        expect += [members[t][i] for i in pick]
    assert lab.draws["sample"].tolist() == expect


def test_seeds_give_different_draws_and_are_reproducible():
    values, targets = omics_wells()
    a = compute_labels(values, targets, seeds=[0, 1])
    b = compute_labels(values, targets, seeds=[0, 1])
    np.testing.assert_array_equal(a.values, b.values)
    nt = a.targets.index("NT")
    assert not np.allclose(a.values[0, nt], a.values[1, nt])


def test_missing_values_fall_back_to_group_then_gene_minimum():
    values, targets = omics_wells()
    values.iloc[:, 1] = np.nan  # g2 missing everywhere except ...
    values.iloc[6:10, 1] = 3.0  # ... in the STAT1 wells
    values.iloc[:, 2] = np.where(np.arange(11) == 0, 7.0, np.nan)  # g3 only in the first NT well
    lab = compute_labels(values, targets, seeds=[0])
    nt, irf = lab.targets.index("NT"), lab.targets.index("IRF5")
    assert lab.values[0, nt, 1] == 3.0 and lab.values[0, irf, 1] == 3.0  # gene minimum
    assert lab.values[0, nt, 2] == 7.0  # group mean (whatever was drawn)
    assert lab.n_fallback_min >= 2 and not np.isnan(lab.values).any()


def test_label_wells_uses_the_replicate_seed_and_split_folds():
    values, targets = omics_wells()
    lab = compute_labels(values, targets, seeds=[10, 20])
    imaging = pd.DataFrame({
        "PLATE_ID": ["IMG2", "IMG1", "IMG1", "IMG2", "IMG1"],
        "well_id": ["B2", "A1", "A2", "B3", "A3"],
        "target": ["NT", "NT", "STAT1", "IRF5", "UNMEASURED"],
        "replicate": [1, 0, 0, 1, 0],
    })
    fold = pd.Series({"NT": "train", "STAT1": "test", "IRF5": "val", "UNMEASURED": "train"})
    gt = label_wells(lab, imaging, seeds=[10, 20], fold=fold).frame().rename(columns={GT_MEASURED: "measured"})
    assert list(gt.columns) == ["plate_barcode", "well_id", "gene/protein", "train/test/val fold", "measured"]
    assert gt.groupby(["plate_barcode", "well_id"], observed=True).size().to_dict() == {
        ("IMG1", "A1"): 3, ("IMG1", "A2"): 3, ("IMG2", "B2"): 3, ("IMG2", "B3"): 3}
    nt = lab.targets.index("NT")
    got = gt.query("plate_barcode == 'IMG2' and well_id == 'B2'")["measured"].to_numpy()
    np.testing.assert_allclose(got, lab.values[1, nt], rtol=1e-6)  # replicate 1 -> seed 20
    got = gt.query("plate_barcode == 'IMG1' and well_id == 'A1'")["measured"].to_numpy()
    np.testing.assert_allclose(got, lab.values[0, nt], rtol=1e-6)
    assert set(gt.loc[gt["well_id"] == "A2", "train/test/val fold"]) == {"test"}


def test_label_wells_rejects_unknown_replicate():
    values, targets = omics_wells()
    lab = compute_labels(values, targets, seeds=[0, 1])
    imaging = pd.DataFrame({"PLATE_ID": ["IMG1"], "well_id": ["A1"], "target": ["NT"], "replicate": [2]})
    with pytest.raises(OmicsInputError, match="replicate 2 of plate IMG1 well A1"):
        label_wells(lab, imaging, seeds=[0, 1], fold=pd.Series({"NT": "train"}))


def test_zscore_round_trip_with_ddof_1():
    rng = np.random.default_rng(0)
    y = rng.normal(3, 2, (20, 4))
    mean, std = fit_zscore(y[:15])
    np.testing.assert_allclose(std, y[:15].std(axis=0, ddof=1))
    z = apply_zscore(y, mean, std)
    np.testing.assert_allclose(z[:15].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z[:15].std(axis=0, ddof=1), 1)
    np.testing.assert_allclose(invert_zscore(z, mean, std), y)


def test_zscore_of_constant_gene_raises_naming_it():
    y = pd.DataFrame({"g1": [1.0, 2.0, 3.0], "g2": [5.0, 5.0, 5.0]})
    with pytest.raises(OmicsInputError, match="gene 'g2' is constant"):
        fit_zscore(y)
