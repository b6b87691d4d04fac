"""Cell-centred tiles (border rule), the TILES files and the tile store."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pandas as pd
import pytest

from i2o_utils.data import layout
from i2o_utils.imaging.tiles import extract_tiles, intensity_scale, tile_corners, to_tile_dtype
from i2o_utils.imaging.tilestore import (TileStore, TileStoreError, finalise_store,
                                         write_plate_tiles)


def _field(h=64, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 1000, (3, h, w)).astype(np.float32)


def test_border_rule_drop():
    s = 16
    centres = np.array([[32, 40], [7, 40], [8, 40], [56, 40], [57, 40], [32, 8], [32, 72], [32, 73]])
    corners, kept = tile_corners(centres, (64, 80), s, border="drop")
    # a tile must fit: s/2 <= row <= H - s/2 and s/2 <= col <= W - s/2 (8..56 and 8..72)
    assert kept.tolist() == [0, 2, 3, 5, 6]
    assert (corners >= 0).all() and (corners[:, 0] + s <= 64).all() and (corners[:, 1] + s <= 80).all()
    np.testing.assert_array_equal(corners, centres[kept] - s // 2)
    field = _field()
    tiles = extract_tiles(field, corners, s)
    assert tiles.shape == (5, 3, s, s)
    for t, (r0, c0), (r, c) in zip(tiles, corners, centres[kept]):
        np.testing.assert_array_equal(t, field[:, r0:r0 + s, c0:c0 + s])
        assert t[0, s // 2, s // 2] == field[0, r, c]  # the nucleus is at the tile's centre pixel


def test_border_rule_pad():
    s = 16
    centres = np.array([[2, 3], [32, 40], [63, 79]])
    corners, kept = tile_corners(centres, (64, 80), s, border="pad")
    assert kept.tolist() == [0, 1, 2]
    field = _field()
    tiles = extract_tiles(field, corners, s, pad_value=0)
    assert tiles.shape == (3, 3, s, s)
    # the part of the first tile outside the field is zero, the rest is the field
    assert (tiles[0, :, : s // 2 - 2] == 0).all() and (tiles[0, :, :, : s // 2 - 3] == 0).all()
    np.testing.assert_array_equal(tiles[0, :, s // 2 - 2:, s // 2 - 3:], field[:, : s // 2 + 2, : s // 2 + 3])
    assert tiles[2, 0, s // 2, s // 2] == field[0, 63, 79]
    with pytest.raises(ValueError, match="border"):
        tile_corners(centres, (64, 80), s, border="wrap")


def test_tiles_file_round_trip(tmp_path):
    s = 16
    field = _field()
    centres = [np.array([[20, 20], [40, 60]]), np.array([[30, 30]])]
    per_field = [tile_corners(c, field.shape[1:], s)[0] for c in centres]
    path = layout.write_well_tiles(tmp_path / "TILES.X1.Y2.h5", 1, 2, "data/ICF/ICF.X1.Y2.h5", per_field, plate_barcode="E_P1")
    wt = layout.read_well_tiles(path)
    assert wt.n_tiles == 3
    np.testing.assert_array_equal(wt.fovs_indices, [[0, 0], [0, 1], [1, 0]])
    r0, c0 = wt.tile_coords[1]
    # the authors' reader: img[x:x+s, y:y+s] with (x, y) = tile_coords[i], first then second axis
    np.testing.assert_array_equal(field[0, r0:r0 + s, c0:c0 + s], extract_tiles(field, per_field[0], s)[1, 0])
    assert (r0 + s // 2, c0 + s // 2) == (40, 60)


def test_scaling_to_integers():
    x = np.array([[[[0.0, 5.0], [10.0, 20.0]]] * 3], np.float32)  # (1, 3, 2, 2)
    scale = np.array([10.0, 20.0, 5.0])
    u8 = to_tile_dtype(x, scale, "uint8")
    assert u8.dtype == np.uint8
    assert u8[0, 0].tolist() == [[0, 128], [255, 255]]  # clipped at scale
    assert u8[0, 1].tolist() == [[0, 64], [128, 255]]
    u16 = to_tile_dtype(x, scale, "uint16")
    assert u16[0, 1, 1, 1] == 65535
    with pytest.raises(ValueError, match="uint8 or uint16"):
        to_tile_dtype(x, scale, "float32")
    q = intensity_scale(np.random.default_rng(0).random((4, 3, 10, 10)) * np.array([1, 2, 3])[:, None, None])
    assert q.shape == (3,) and q[0] < q[1] < q[2]


def _write_store(root, n_per_well=(5, 2, 9), plate_of=("P1", "P1", "P2"), s=8, dtype="uint8"):
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 255, (n, 3, s, s)).astype(dtype) for n in n_per_well]
    for k, t in enumerate(tiles):
        t[:, 0, 0, 0] = np.arange(len(t))  # tile number, to check what comes back
        t[:, 1, 0, 0] = k                  # well number
    wells, index, files = [], [], {}
    for plate in sorted(set(plate_of)):
        ks = [k for k, p in enumerate(plate_of) if p == plate]
        placed = write_plate_tiles(root / f"plates/{plate}.h5", ((f"W{k}", tiles[k]) for k in ks),
                                   sum(n_per_well[k] for k in ks), s, dtype)
        files[plate] = f"plates/{plate}.h5"
        for (w, start, n), k in zip(placed, ks):
            wells.append({"plate": plate, "well_id": w, "target": "NT", "cell_state": "m1", "n_tiles": n,
                          "start": start})
            index += [{"plate": plate, "well_id": w, "fov": 0, "row": j, "col": j, "r0": 0, "c0": 0,
                       "i": start + j} for j in range(n)]
    finalise_store(root, pd.DataFrame(wells), pd.DataFrame(index), files, s, dtype, [1.0, 2.0, 3.0],
                   ["a", "b", "c"])
    return tiles


def test_tile_store_reads(tmp_path, caplog):
    tiles = _write_store(tmp_path)
    store = TileStore(tmp_path)
    assert len(store) == 3 and store.tile_size == 8 and store.dtype == np.uint8
    assert store.wells[["plate", "well_id", "n_tiles"]].values.tolist() == [["P1", "W0", 5], ["P1", "W1", 2],
                                                                            ["P2", "W2", 9]]
    np.testing.assert_array_equal(store.read_well(1), tiles[1])
    rng = np.random.default_rng(1)
    x = store.sample([0, 2, 0], 4, rng)
    assert x.shape == (3, 4, 3, 8, 8) and x.dtype == np.uint8
    for k, well in enumerate([0, 2, 0]):
        assert (x[k, :, 1, 0, 0] == well).all()                   # tiles of the right well
        assert len(set(x[k, :, 0, 0, 0].tolist())) == 4          # without replacement
        for t in x[k]:
            np.testing.assert_array_equal(t, tiles[well][t[0, 0, 0]])
    with caplog.at_level("INFO"):
        y = store.sample([1], 5, rng)  # 2 tiles < 5: with replacement, logged
    assert y.shape == (1, 5, 3, 8, 8) and set(y[0, :, 0, 0, 0].tolist()) <= {0, 1}
    assert "with replacement" in caplog.text
    f = store.to_float(x)
    assert f.dtype == np.float32 and f.max() <= 1.0
    torch = pytest.importorskip("torch")
    tf = store.to_float(torch.from_numpy(x))
    assert tf.dtype == torch.float32 and torch.allclose(tf, torch.from_numpy(f))
    clone = pickle.loads(pickle.dumps(store))  # data-loader workers get a copy without open files
    np.testing.assert_array_equal(clone.read_well(2), tiles[2])
    assert len(store.index) == 16


def test_tile_store_sampling_is_seeded(tmp_path):
    tiles = _write_store(tmp_path / "mapped")
    store = TileStore(tmp_path / "mapped")
    assert isinstance(store._dataset("P1"), np.memmap)
    a = store.sample([2, 0], 3, np.random.default_rng(5))
    b = store.sample([2, 0], 3, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(store.read_tiles(2, [4, 1, 4]), tiles[2][[4, 1, 4]])  # any order, repeats


def test_unmappable_plate_array_is_named(tmp_path):
    _write_store(tmp_path)
    path = tmp_path / "plates" / "P2.h5"
    with h5py.File(path, "r") as f:
        data = f["tiles"][()]
    with h5py.File(path, "w") as f:  # the same tiles, chunked and compressed
        f.create_dataset("tiles", data=data, chunks=(1, 3, 8, 8), compression="lzf")
    store = TileStore(tmp_path)
    np.testing.assert_array_equal(store.read_well(0).shape, (5, 3, 8, 8))  # plate P1 is still read
    with pytest.raises(TileStoreError, match=r"P2\.h5: the tile array is not contiguous"):
        store.read_well(2)


def test_unfinished_store_is_refused(tmp_path):
    with pytest.raises(TileStoreError, match="store.json"):
        TileStore(tmp_path)
    with pytest.raises(TileStoreError, match="announced"):
        write_plate_tiles(tmp_path / "p.h5", [("W", np.zeros((2, 3, 4, 4), np.uint8))], 3, 4)
    assert not (tmp_path / "p.h5").exists() and not list(tmp_path.glob("*.part"))
