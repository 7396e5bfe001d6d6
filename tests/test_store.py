import dataclasses

import numpy as np
import pytest
from store_helpers import ASE_SHAPE_WARNING, molecules, read_kernels, reference

from wkdist import KernelSettings
from wkdist.app.config import DataConfig
from wkdist.app.dataset import load_dataset
from wkdist.engine.structures import species_of
from wkdist.errors import StoreError
from wkdist.tiled.graph import pack_block, tile_values
from wkdist.tiled.store import (
    create_store,
    missing_tiles,
    open_store,
    remove_partials,
    strict_reads,
    verify_tiles,
)
from wkdist.tiled.tiles import TEST, TRAIN, Tile, tile_bounds

pytestmark = ASE_SHAPE_WARNING
SETTINGS = KernelSettings(nu_max=2, lambda_max=2)


@pytest.fixture
def case(tmp_path):
    import ase.io

    ase.io.write(tmp_path / "m.xyz", molecules(16), format="extxyz")
    data = load_dataset(DataConfig(path=tmp_path / "m.xyz", target="U", n_train=11, n_test=4,
                                   seed=2))
    return tmp_path, data


def fill(store, data, tiles):
    """Compute ``tiles`` in this process, the way a tile task does."""
    species = species_of(data.train_frames, data.test_frames)
    write, t = store.writer(), store.tile_size
    for tile in tiles:
        a_frames = data.train_frames if tile.array == TRAIN else data.test_frames
        a = pack_block(a_frames[tile_bounds(tile.row, t, len(a_frames))], settings=SETTINGS,
                       species=species)
        b = None if tile.array == TRAIN and tile.row == tile.col else pack_block(
            data.train_frames[tile_bounds(tile.col, t, data.n_train)], settings=SETTINGS,
            species=species)
        write(tile, tile_values(a, b, settings=SETTINGS))


def test_layout_and_tiles_equal_reference(case):
    tmp_path, data = case
    store = create_store(tmp_path / "s.zarr", settings=SETTINGS, dataset=data, tile_size=4)
    group = store.group
    assert group["K_train"].shape == (3, 11, 11) and group["K_train"].chunks == (3, 4, 4)
    assert group["K_test"].shape == (3, 4, 11)
    np.testing.assert_array_equal(group["y_train"][...], data.y_train)
    np.testing.assert_array_equal(group["test_index"][...], data.test_index)
    tiles = store.tiles()
    assert len(tiles) == 6 + 3  # 3 x 3 upper triangle, 1 x 3 test
    assert missing_tiles(store) == tiles
    with strict_reads(), pytest.raises(Exception, match="not found"):
        group["K_train"][...]
    fill(store, data, tiles[:4])
    assert missing_tiles(store) == tiles[4:]
    fill(store, data, tiles[4:])
    assert missing_tiles(store) == []
    k_train, k_test = read_kernels(store.path)
    r_train, r_test = reference(store.path, tmp_path / "m.xyz", SETTINGS)
    np.testing.assert_array_equal(k_train, r_train)  # bitwise, mirrored tiles included
    np.testing.assert_array_equal(k_test, r_test)
    assert verify_tiles(store) == []


def test_other_settings_data_or_tile_size_refused(case):
    tmp_path, data = case
    create_store(tmp_path / "s.zarr", settings=SETTINGS, dataset=data, tile_size=4)
    other = dataclasses.replace(SETTINGS, cutoff=SETTINGS.cutoff + 0.5)
    with pytest.raises(StoreError, match=rf"kernel cutoff {SETTINGS.cutoff} in the store, "
                                         rf"{other.cutoff} now"):
        create_store(tmp_path / "s.zarr", settings=other,
                     dataset=data, tile_size=4)
    with pytest.raises(StoreError, match=r"tile_size 4 in the store, 5 now"):
        create_store(tmp_path / "s.zarr", settings=SETTINGS, dataset=data, tile_size=5)
    other = load_dataset(DataConfig(path=tmp_path / "m.xyz", target="U", n_train=11, n_test=4,
                                    seed=3))
    with pytest.raises(StoreError, match="the data differ"):
        create_store(tmp_path / "s.zarr", settings=SETTINGS, dataset=other, tile_size=4)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x").write_text("x")
    with pytest.raises(StoreError, match="not a zarr group"):
        create_store(tmp_path / "plain", settings=SETTINGS, dataset=data, tile_size=4)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create the store"):
        create_store(tmp_path / "file" / "s.zarr", settings=SETTINGS, dataset=data, tile_size=4)


def test_damage_partials_and_foreign_markers(case):
    tmp_path, data = case
    store = create_store(tmp_path / "s.zarr", settings=SETTINGS, dataset=data, tile_size=4)
    fill(store, data, store.tiles())
    # a flipped byte in the mirror chunk of tile (0, 2): --verify finds it and unmarks the tile
    chunk = tmp_path / "s.zarr" / "K_train" / "c" / "0" / "2" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[100] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    assert missing_tiles(store) == []  # the cheap check cannot see it
    assert verify_tiles(open_store(store.path, mode="r+")) == [Tile(TRAIN, 0, 2)]
    assert missing_tiles(store) == [Tile(TRAIN, 0, 2)]
    # a truncated test chunk
    chunk = tmp_path / "s.zarr" / "K_test" / "c" / "0" / "0" / "1"
    chunk.write_bytes(chunk.read_bytes()[:50])
    assert verify_tiles(store) == [Tile(TEST, 0, 1)]
    # a chunk file deleted behind the marker's back
    (tmp_path / "s.zarr" / "K_test" / "c" / "0" / "0" / "2").unlink()
    assert missing_tiles(store) == [Tile(TRAIN, 0, 2), Tile(TEST, 0, 1), Tile(TEST, 0, 2)]
    (tmp_path / "s.zarr" / "K_train" / "c" / "x.abc.partial").write_bytes(b"junk")
    assert remove_partials(store.path) == 1
    fill(store, data, missing_tiles(store))
    k_train, k_test = read_kernels(store.path)
    r_train, r_test = reference(store.path, tmp_path / "m.xyz", SETTINGS)
    np.testing.assert_array_equal(k_train, r_train)
    np.testing.assert_array_equal(k_test, r_test)


def test_open_store_errors(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "absent")
    import zarr

    zarr.open_group(tmp_path / "g", mode="w")
    with pytest.raises(StoreError, match="not a wkdist kernel store"):
        open_store(tmp_path / "g")
