import dataclasses

import numpy as np
import pytest
from store_helpers import ASE_SHAPE_WARNING, molecules, read_kernels, reference

from wkdist import KernelSettings
from wkdist.app.config import DataConfig
from wkdist.app.dataset import load_dataset
from wkdist.engine.structures import species_of
from wkdist.errors import StoreError
from wkdist.tiled.checkpoint import MarkerBatch
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
    batch = MarkerBatch()
    for tile in tiles:
        a_frames = data.train_frames if tile.array == TRAIN else data.test_frames
        a = pack_block(a_frames[tile_bounds(tile.row, t, len(a_frames))], settings=SETTINGS,
                       species=species)
        b = None if tile.array == TRAIN and tile.row == tile.col else pack_block(
            data.train_frames[tile_bounds(tile.col, t, data.n_train)], settings=SETTINGS,
            species=species)
        store.record(batch, tile, write(tile, tile_values(a, b, settings=SETTINGS)))
    batch.flush()


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
    np.testing.assert_array_equal(k_train, r_train)  # bitwise, the lower triangle included
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
    # a flipped byte in the chunk of tile (0, 2): --verify finds it and unmarks the tile
    chunk = tmp_path / "s.zarr" / "K_train" / "c" / "0" / "0" / "2"
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


def test_format_2_files_per_tile_and_the_full_matrix_reader(case):
    """One file per computed tile, one directory per tile row, one marker file per tile row;
    nothing below the diagonal of K_train; the reader gives the whole symmetric matrix and
    checks the stored tile behind every block it reads."""
    import os

    from wkdist import read_kernels as reader
    from wkdist.errors import DamagedTileError

    tmp_path, data = case
    store = create_store(tmp_path / "s.zarr", settings=SETTINGS, dataset=data, tile_size=4)
    fill(store, data, store.tiles())
    computed = len(store.tiles())
    entries = 0
    for name in ("K_train", "K_test"):
        for _, dirs, files in os.walk(store.path / name / "c"):
            entries += len(dirs) + len(files)
        for _, dirs, files in os.walk(store.path / "markers" / name):
            entries += len(dirs) + len([f for f in files if f != "zarr.json"])
    rows = 3 + 1  # tile rows of K_train and K_test
    # chunk files + directories (c/0 and one per tile row) + one marker file per tile row
    assert entries == computed + 2 + rows + rows
    lower = [(r, c) for r in range(3) for c in range(3) if r > c]
    for row, col in lower:
        assert not (store.path / "K_train" / "c" / "0" / str(row) / str(col)).exists()
    full = reader(store.path, "K_train")[...]
    np.testing.assert_array_equal(full, np.swapaxes(full, 1, 2))
    r_train, _ = reference(store.path, tmp_path / "m.xyz", SETTINGS)
    np.testing.assert_array_equal(full, r_train)
    np.testing.assert_array_equal(reader(store.path, "K_train")[1, 5:11, 2:7],
                                  r_train[1, 5:11, 2:7])
    chunk = store.path / "K_train" / "c" / "0" / "0" / "2"
    raw = bytearray(chunk.read_bytes())
    raw[-20] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(DamagedTileError, match=r"K_train \(0, 2\) \(read as chunk \(2, 0\)\)"):
        reader(store.path, "K_train")[:, 8:11, 0:4]


def _as_format_1(store, data) -> None:
    """Rewrite a finished format-2 store in wkdist 0.1's layout: mirrors of the off-diagonal
    K_train tiles, per-tile marker chunks [hash, crc, mirror crc, 1] under tiles/, format 1."""
    import shutil
    import zlib

    import zarr

    from wkdist.tiled.checkpoint import Markers
    from wkdist.tiled.tiles import n_blocks

    root = store.path
    group = zarr.open_group(zarr.storage.LocalStore(root), mode="r+")
    nt, ns = n_blocks(store.n_train, 4), n_blocks(store.n_test, 4)
    tiles_group = group.create_group("tiles")
    for name, rows in (("K_train", nt), ("K_test", ns)):
        table = Markers(root, f"markers/{name}").table()
        old = tiles_group.create_array(name, shape=(rows, nt, 4), chunks=(1, 1, 4),
                                       dtype="uint64", fill_value=0,
                                       config={"write_empty_chunks": True})
        for row in range(rows):
            for col in range(nt):
                tag, crc, done = (int(v) for v in table[row, col])
                if not done:
                    continue
                mirror = 0
                if name == "K_train" and row != col:
                    values = group[name][:, row * 4:(row + 1) * 4, col * 4:(col + 1) * 4]
                    group[name][:, col * 4:(col + 1) * 4, row * 4:(row + 1) * 4] = np.swapaxes(
                        values, 1, 2)
                    mirror = zlib.crc32((root / name / "c" / "0" / str(col) / str(row))
                                        .read_bytes())
                old[row, col] = np.array([tag, crc, mirror, 1], dtype=np.uint64)
    shutil.rmtree(root / "markers")
    group.attrs["wkdist"] = {**group.attrs["wkdist"], "format": 1, "version": "0.1.0"}


def test_a_format_1_store_is_refused_then_converted_keeping_its_tiles(case, capsys):
    from store_helpers import wkdist_cli

    tmp_path, data = case
    store = create_store(tmp_path / "s.zarr", settings=SETTINGS, dataset=data, tile_size=4)
    fill(store, data, store.tiles())
    before = read_kernels(store.path)
    _as_format_1(store, data)
    with pytest.raises(StoreError, match=r"format 1\); convert it once with `wkdist convert "):
        open_store(store.path)
    status, out, err = wkdist_cli("status", store.path)
    assert status == 2 and "wkdist convert" in err and "\n" == err[-1] and err.count("\n") == 1
    # a damaged tile is not carried over: it counts as missing after the conversion
    chunk = store.path / "K_test" / "c" / "0" / "0" / "1"
    chunk.write_bytes(chunk.read_bytes()[:40])
    status, out, err = wkdist_cli("convert", store.path)
    assert status == 0, err
    assert "8 finished tiles kept, 3 mirror chunks and 9 marker files removed" in out, out
    converted = open_store(store.path, mode="r+")
    assert missing_tiles(converted) == [Tile(TEST, 0, 1)]
    assert not (store.path / "tiles").exists()
    # 0.1 kept no structures: the next run writes them before its tile tasks read them
    import shutil

    from wkdist.tiled.frames import read_frames
    from wkdist.tiled.store import ensure_structures

    shutil.rmtree(store.path / "structures")
    ensure_structures(converted, data)
    frames = read_frames(store.path, "structures/train_")
    assert [a.get_chemical_formula() for a in frames] == [
        a.get_chemical_formula() for a in data.train_frames]
    fill(converted, data, missing_tiles(converted))
    for a, b in zip(before, read_kernels(store.path)):
        np.testing.assert_array_equal(a, b)
    status, out, err = wkdist_cli("convert", store.path)  # again: nothing to do, no harm
    assert status == 0 and "0 finished tiles kept" in out, out + err


def test_the_plan_counts_the_files_directories_and_bytes_of_a_real_store(case):
    import os

    from wkdist.app.plan import tile_plan

    tmp_path, data = case
    store = create_store(tmp_path / "s.zarr", settings=SETTINGS, dataset=data, tile_size=4)
    fill(store, data, store.tiles())
    files = directories = size = 0
    for name in ("K_train", "K_test"):
        for top in (store.path / name, store.path / "markers" / name):
            for _, dirs, names in os.walk(top):
                directories += len(dirs)
                for file in names:
                    if file != "zarr.json":
                        files += 1
    for where, _, names in os.walk(store.path):  # bytes: every array, targets included
        size += sum(os.path.getsize(os.path.join(where, f)) for f in names if f != "zarr.json")
    frames = data.train_frames + data.test_frames
    plan = tile_plan(data.n_train, data.n_test, 4, SETTINGS.nu_max,
                     atoms_per_structure=sum(len(a) for a in frames) / len(frames))
    assert (plan["files"], plan["directories"]) == (files, directories)
    assert plan["chunks"] == len(store.tiles())
    assert abs(plan["bytes"] - size) <= 0.05 * size


def test_damaged_structures_are_one_store_error(case):
    """A tile task reads its structures from the store: a damaged chunk there is a StoreError
    naming the arrays, not a codec traceback."""
    from wkdist.tiled.frames import read_frames

    tmp_path, data = case
    store = create_store(tmp_path / "s.zarr", settings=SETTINGS, dataset=data, tile_size=4)
    assert len(read_frames(store.path, "structures/train_", 0, 4)) == 4
    chunk = store.path / "structures" / "train_positions" / "c" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[10] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"structures/train_\*: structures 0:4 cannot be read, "
                                         r"damaged"):
        read_frames(store.path, "structures/train_", 0, 4)
