"""Perturbation retrieval (copairs mAP) against a direct computation; plate mixing."""

import numpy as np
import pandas as pd
import pytest

from i2o_utils.analysis.embedding import (average_precision_direct, distinct_perturbations, perturbation_map,
                                          plate_mixing, retrieval_summary)


def _fixture(seed=0, plate_shift=0.0, noise=1.0):
    rng = np.random.default_rng(seed)
    d = 6
    centres = {"NT": np.zeros(d), "A": np.array([3.0, -3.0, 0, 0, 0, 0]), "B": np.array([0, 0, 1.0, 0, 0, -1.0]),
               "C": np.zeros(d)}
    rows, emb = [], []
    for stim in ("m1", "m2"):
        for p in range(3):
            shift = rng.normal(size=d) * plate_shift
            for t, c in centres.items():
                for _ in range(4 if t == "NT" else 2):
                    rows.append((f"P{p}_{stim}", f"{t}{p}", t, stim))
                    emb.append(3.0 + c + shift + rng.normal(size=d) * noise)
    wells = pd.DataFrame(rows, columns=["plate", "well_id", "target", "cell_state"])
    return wells, np.array(emb)


@pytest.mark.parametrize("negatives", ["controls", "others"])
def test_map_equals_direct_computation(negatives):
    wells, emb = _fixture()
    res = perturbation_map(emb, wells, negatives=negatives, null_size=200, seed=0)
    direct = average_precision_direct(emb, wells, negatives=negatives)
    want = direct.groupby("perturbation")["average_precision"].mean()
    got = res.set_index("perturbation")["mean_average_precision"]
    assert set(got.index) == set(want.index) == {f"{t} {s}" for t in "ABC" for s in ("M1", "M2")}
    np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=1e-6)
    assert (res["n_wells"] == 6).all()
    assert res["p_value"].between(0, 1).all()


def test_strong_perturbation_is_retrieved_and_null_is_not():
    wells, emb = _fixture(seed=1, noise=0.5)
    res = perturbation_map(emb, wells, null_size=2000, seed=0).set_index("perturbation")
    assert res.loc["A M1", "below_corrected_p"] and res.loc["A M2", "below_corrected_p"]
    assert res.loc["A M1", "mean_average_precision"] > res.loc["C M1", "mean_average_precision"]
    assert not res.loc["C M1", "below_corrected_p"]  # C has no effect: indistinguishable from NT
    top = distinct_perturbations(res.reset_index(), n=1)
    assert list(top["target"]) == ["A"]


def test_plate_mixing_sees_plate_effects():
    wells, emb = _fixture(plate_shift=0.0)
    mixed = plate_mixing(emb, wells, k=5)
    wells2, emb2 = _fixture(plate_shift=3.0)
    separate = plate_mixing(emb2, wells2, k=5)
    assert abs(mixed["excess"]) < 0.15
    assert separate["excess"] > 0.4
    assert mixed["expected"] == pytest.approx((10 - 1) / (30 - 1))  # 10 wells a plate, 3 plates a stimulus
    s = retrieval_summary({"raw": perturbation_map(emb, wells, null_size=100)}, {"raw": mixed})
    assert list(s.columns[:3]) == ["embedding", "perturbations", "mean_mAP"]


def test_map_needs_replicates_on_two_plates():
    wells, emb = _fixture()
    one_plate = wells.assign(plate="P0")
    with pytest.raises(ValueError, match="two plates"):
        perturbation_map(emb, one_plate, null_size=50)
    with pytest.raises(ValueError, match="negatives must be"):
        perturbation_map(emb, wells, negatives="all")


def test_stimulus_separation():
    from i2o_utils.analysis.embedding import stimulus_separation

    wells, emb = _fixture(noise=0.5)
    mixed = stimulus_separation(emb, wells, k=5)
    apart = emb + np.where(wells["cell_state"].to_numpy()[:, None] == "m2", 10.0, -10.0) * np.eye(6)[0]
    sep = stimulus_separation(apart, wells, k=5)
    assert sep["same_stimulus"] == 1.0 and mixed["same_stimulus"] < 0.8
    assert sep["expected"] == pytest.approx(29 / 59)
