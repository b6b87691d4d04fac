"""The split table: drawn once (notebook 10), read by notebooks 40 and 50, checked against the GT fold column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from i2o_utils.data import layout, splits
from i2o_utils.data.layout import LayoutError

TARGETS = ["NT"] + [f"KO{i}" for i in range(9)]
PLATE = "ELN1_P1"


def test_split_perturbations_fractions_and_determinism():
    s = splits.split_perturbations(TARGETS, seed=4)
    assert list(s.index) == sorted(TARGETS)
    assert s.value_counts().to_dict() == {"train": 7, "test": 2, "val": 1}
    assert s.equals(splits.split_perturbations(list(reversed(TARGETS)), seed=4))
    table = splits.make_splits(TARGETS, 3)
    assert table.groupby("split").size().tolist() == [10, 10, 10]
    assert table[table["split"] == 2].set_index("target")["fold"].equals(splits.split_perturbations(TARGETS, 2))
    with pytest.raises(ValueError, match="at least 3"):
        splits.split_perturbations(["NT", "KO1"], 0)


def test_given_split0_replaces_the_drawn_one():
    given = pd.Series({t: "test" if t == "KO3" else "train" for t in TARGETS[:-1]})  # the last has no label
    table = splits.make_splits(TARGETS, 2, split0=given)
    s0 = table[table["split"] == 0].set_index("target")["fold"]
    assert s0["KO3"] == "test" and (s0.drop(["KO3", TARGETS[-1]]) == "train").all()
    assert s0[TARGETS[-1]] == splits.split_perturbations(TARGETS, 0)[TARGETS[-1]]
    assert table[table["split"] == 1].set_index("target")["fold"].equals(splits.split_perturbations(TARGETS, 1))


def test_read_split_table_round_trip_and_faults(tmp_path):
    path = tmp_path / "splits.csv"
    table = splits.make_splits(TARGETS, 3)
    layout.write_csv_atomic(table, path)
    pd.testing.assert_frame_equal(splits.read_split_table(path, 3), table)
    with pytest.raises(LayoutError, match=r"splits \[0, 1, 2\], expected \[0, 1, 2, 3\]"):
        splits.read_split_table(path, 4)
    bad = table.copy()
    bad.loc[4, "fold"] = "holdout"
    layout.write_csv_atomic(bad, path)
    with pytest.raises(LayoutError, match=f"splits.csv: split 0, perturbation {bad.loc[4, 'target']}: fold 'holdout'"):
        splits.read_split_table(path)
    layout.write_csv_atomic(pd.concat([table, table.iloc[[12]]]), path)
    with pytest.raises(LayoutError, match=f"perturbation {table.loc[12, 'target']} appears twice in split 1"):
        splits.read_split_table(path)
    layout.write_csv_atomic(table.drop(index=15), path)
    with pytest.raises(LayoutError, match="split 1 does not hold the perturbations of split 0"):
        splits.read_split_table(path)
    layout.write_csv_atomic(table.drop(columns="fold"), path)
    with pytest.raises(LayoutError, match=r"missing column\(s\) \['fold'\]"):
        splits.read_split_table(path)
    with pytest.raises(LayoutError, match="no such file"):
        splits.read_split_table(tmp_path / "absent.csv")


def _screen(root, fold_of: dict[str, str], fmt: str = "csv") -> pd.DataFrame:
    """metadata.csv with two wells per perturbation, and GT tables whose fold column is ``fold_of``."""
    wells = [layout.format_well_id(1 + i // 20, 1 + i % 20) for i in range(2 * len(TARGETS))]
    meta = pd.DataFrame({"well_id": wells, "PLATE_ID": "P1", "target": np.repeat(TARGETS, 2),
                         "cell_state": "m1", "Column": [int(w[1:]) for w in wells]})
    layout.write_metadata(meta, root / "data" / "metadata.csv")
    gt = pd.DataFrame([(PLATE, w, g, fold_of[t], 1.0) for w, t in zip(wells, meta["target"]) for g in ("G1", "G2")],
                      columns=list(layout.GT_COLUMNS))
    for omics in ("transcriptomics", "proteomics"):
        path = layout.gt_path(omics, "m1", root, fmt=fmt)
        path.parent.mkdir(parents=True, exist_ok=True)
        gt.to_parquet(path, index=False) if fmt == "parquet" else layout.write_gt(gt, path)
    return layout.read_metadata(root / "data" / "metadata.csv")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_split0_is_checked_against_every_gt_table(tmp_path, fmt):
    table = splits.make_splits(TARGETS, 2)
    fold0 = table[table["split"] == 0].set_index("target")["fold"].to_dict()
    meta = _screen(tmp_path, fold0, fmt)
    checked = splits.check_split_table(table, meta, tmp_path)
    assert sorted(p.name for p in checked) == [f"proteomics_m1.{fmt}", f"transcriptomics_m1.{fmt}"]
    # split 1 as split 0: some perturbation changes fold, and the error names the file, well and perturbation
    other = table.assign(split=1 - table["split"])
    fold1 = other[other["split"] == 0].set_index("target")["fold"]
    moved = next(t for t in TARGETS if fold0[t] != fold1[t])
    well = meta.loc[meta["target"] == moved, "well_id"].iloc[0]
    with pytest.raises(LayoutError, match=rf"transcriptomics_m1\.{fmt}: well {well} of plate {PLATE} \(perturbation "
                                          rf"{moved}\) has fold '{fold0[moved]}', but the perturbation is in fold"):
        splits.check_split_table(other, meta, tmp_path)
    # a perturbation the table does not list
    with pytest.raises(LayoutError, match=f"perturbation {TARGETS[-1]}.*has no fold in split 0"):
        splits.check_split_table(table[table["target"] != TARGETS[-1]], meta, tmp_path)


def test_given_gt_folds_become_split0_and_conflicts_are_named(tmp_path):
    fold_of = {t: ("test" if t in ("KO1", "KO2") else "val" if t == "KO3" else "train") for t in TARGETS}
    meta = _screen(tmp_path, fold_of)
    table = splits.screen_splits(meta, 3, (0.7, 0.1, 0.2), gt_given=True, root=tmp_path)
    assert table[table["split"] == 0].set_index("target")["fold"].to_dict() == fold_of
    assert splits.check_split_table(table, meta, tmp_path)
    drawn = splits.screen_splits(meta, 3, (0.7, 0.1, 0.2), gt_given=False, root=tmp_path)
    pd.testing.assert_frame_equal(drawn, splits.make_splits(TARGETS, 3))
    # one well of KO1 in another fold: a perturbation in two folds
    gt_file = layout.gt_path("proteomics", "m1", tmp_path)
    gt = layout.read_gt(gt_file)
    ko1_well = meta.loc[meta["target"] == "KO1", "well_id"].iloc[1]
    gt.loc[gt["well_id"] == ko1_well, layout.GT_FOLD] = "train"
    layout.write_gt(gt, gt_file)
    with pytest.raises(LayoutError, match=f"well {ko1_well} of plate {PLATE} puts perturbation KO1 in fold 'train'"):
        splits.gt_perturbation_folds(meta, tmp_path)


def test_load_split_table_checks_the_gt(tmp_path):
    table = splits.make_splits(TARGETS, 2)
    _screen(tmp_path, table[table["split"] == 1].set_index("target")["fold"].to_dict())  # GT from another split
    path = layout.write_csv_atomic(table, tmp_path / "splits.csv")
    with pytest.raises(LayoutError, match="transcriptomics_m1.csv: well"):
        splits.load_split_table(2, path, data_root=tmp_path)
    assert splits.load_split_table(2, path, data_root=tmp_path, check_gt=False).equals(table)


def test_folds_of_names_an_unknown_perturbation():
    table = splits.make_splits(TARGETS, 1)
    assert list(splits.folds_of(table, 0, pd.Series(["NT", "KO1"]), "x")) == list(
        table.set_index("target").loc[["NT", "KO1"], "fold"])
    with pytest.raises(LayoutError, match=r"labels.csv: perturbation\(s\) \['KO99'\] have no fold in split 0"):
        splits.folds_of(table, 0, pd.Series(["NT", "KO99"]), "labels.csv")
