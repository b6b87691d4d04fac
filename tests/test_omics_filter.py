"""The expression filter: both readings of "in each plate", the threshold as a fraction of wells."""

import numpy as np
import pandas as pd
import pytest

from i2o_utils.omics import OmicsInputError, filter_low_expression


def plate_matrix(detected_per_plate: list[list[int]], wells: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Genes x plates counts of detected wells -> (wells x genes detection, plate labels)."""
    counts = np.array(detected_per_plate).T  # plates x genes
    blocks = []
    for row in counts:
        block = np.zeros((wells, len(row)), dtype=bool)
        for j, c in enumerate(row):
            block[:c, j] = True
        blocks.append(block)
    plates = np.repeat([f"P{i + 1}" for i in range(len(counts))], wells)
    return np.vstack(blocks), plates


def test_rules_all_and_any():
    # genes: passes both plates, passes only P1, passes neither (threshold 3 of 10 wells)
    det, plates = plate_matrix([[5, 9], [4, 1], [2, 0]])
    strict = filter_low_expression(det, plates, min_fraction=0.3, rule="all", genes=["a", "b", "c"])
    lenient = filter_low_expression(det, plates, min_fraction=0.3, rule="any", genes=["a", "b", "c"])
    assert strict["kept"].tolist() == [True, False, False]
    assert lenient["kept"].tolist() == [True, True, False]
    assert strict.loc["b", "reason"] == "detected in < 30.0% of wells on 1 of 2 plates"
    assert strict.loc["c", "reason"] == "detected in < 30.0% of wells on every plate"
    assert strict.loc["a", "reason"] == ""
    assert strict["n_plates_passed"].tolist() == [2, 1, 0]


def test_default_is_the_stricter_reading_and_paper_threshold():
    # 50 of 384 wells passes, 49 does not (13 %): 50/384 must not round below 50
    det = np.zeros((384, 2), dtype=bool)
    det[:50, 0] = True
    det[:49, 1] = True
    out = filter_low_expression(det, ["P1"] * 384)
    assert out["kept"].tolist() == [True, False]
    det2, plates = plate_matrix([[60, 40]], wells=384)
    assert not filter_low_expression(det2, plates)["kept"].iloc[0]  # fails on one plate of two


def test_fraction_scales_with_plate_size():
    # plates of 8 and 16 wells; threshold 25 %: 2 of 8 and 4 of 16
    det = np.zeros((24, 2), dtype=bool)
    det[:2, 0] = True
    det[8:12, 0] = True
    det[:2, 1] = True
    det[8:11, 1] = True
    plates = np.array(["small"] * 8 + ["large"] * 16)
    out = filter_low_expression(det, plates, min_fraction=0.25)
    assert out["kept"].tolist() == [True, False]
    assert out["min_detected_fraction"].tolist() == [4 / 16, 3 / 16]
    assert out["max_detected_fraction"].tolist() == [2 / 8, 2 / 8]


def test_dataframe_input_keeps_gene_names():
    det = pd.DataFrame([[True, False], [True, True]], index=["w1", "w2"], columns=["g1", "g2"])
    out = filter_low_expression(det, pd.Series(["P1", "P1"], index=["w1", "w2"]), min_fraction=0.75)
    assert list(out.index) == ["g1", "g2"] and out["kept"].tolist() == [True, False]


@pytest.mark.parametrize("kwargs, message", [
    ({"rule": "most"}, "filter rule must be one of"),
    ({"min_fraction": 1.5}, "min_fraction must be in"),
    ({"plates": ["P1"]}, "1 labels for 2 samples"),
])
def test_bad_arguments_raise(kwargs, message):
    args = {"detected": np.ones((2, 3), dtype=bool), "plates": ["P1", "P2"], **kwargs}
    with pytest.raises(OmicsInputError, match=message):
        filter_low_expression(**args)
