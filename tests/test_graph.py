import os
import signal

import numpy as np
import pytest
from store_helpers import ASE_SHAPE_WARNING, molecules, read_kernels, reference, write_case

from wkdist import KernelSettings
from wkdist.app.compute import compute_kernels
from wkdist.app.config import load_config
from wkdist.tiled.graph import build_graph
from wkdist.tiled.tiles import TEST, TRAIN, Tile, all_tiles

pytestmark = ASE_SHAPE_WARNING


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        yield client


def test_tiles_cover_the_upper_triangle_and_test_block():
    tiles = all_tiles(10, 5, 4)  # 3 train blocks (4, 4, 2), 2 test blocks (4, 1)
    assert [t for t in tiles if t.array == TRAIN] == [
        Tile(TRAIN, i, j) for i in range(3) for j in range(i, 3)]
    assert len([t for t in tiles if t.array == TEST]) == 6
    assert all_tiles(4, 4, 4) == [Tile(TRAIN, 0, 0), Tile(TEST, 0, 0)]


def test_graph_keys_are_deterministic_and_packs_shared():
    frames = molecules(7)
    kwargs = dict(settings=KernelSettings(nu_max=2), species=np.array([1, 6, 7, 8]),
                  tile_size=3, threads=1, write=print, token="abc")
    tiles = all_tiles(5, 2, 3)
    g1, k1 = build_graph(tiles, frames[:5], frames[5:], **kwargs)
    g2, k2 = build_graph(tiles, frames[:5], frames[5:], **kwargs)
    assert k1 == k2 and len(set(k1)) == len(tiles)
    packs = [k for k in g1 if isinstance(k, tuple)]
    assert sorted(p[1:] for p in packs) == [("test", 0), ("train", 0), ("train", 1)]
    _, k3 = build_graph(tiles, frames[:5], frames[5:], **{**kwargs, "token": "abd"})
    assert not set(k1) & set(k3)


def test_store_equals_structure_kernels_and_rerun_is_free(tmp_path, client):
    config = load_config(write_case(tmp_path, n_train=14, n_test=5, tile_size=4))
    first = compute_kernels(config, client=client, progress=False)
    assert first.computed_tiles == first.total_tiles == 10 + 8
    k_train, k_test = read_kernels(config.store.path)
    r_train, r_test = reference(config.store.path, tmp_path / "mols.xyz", config.kernel)
    np.testing.assert_array_equal(k_train, r_train)
    np.testing.assert_array_equal(k_test, r_test)
    again = compute_kernels(config, client=client, progress=False)
    assert again.computed_tiles == 0 and again.skipped_tiles == again.total_tiles


def test_worker_killed_mid_run_still_finishes(tmp_path, client):
    config = load_config(write_case(tmp_path, n=40, n_train=30, n_test=8, tile_size=3))
    killed = []
    pids = client.run(os.getpid)  # {worker address: pid of the worker process}

    def kill_one(result):  # after the first finished tile, SIGKILL one worker process
        if not killed:
            pid = pids[sorted(pids)[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    summary = compute_kernels(config, client=client, progress=False, on_result=kill_one)
    assert killed and summary.computed_tiles == summary.total_tiles
    k_train, k_test = read_kernels(config.store.path)
    r_train, r_test = reference(config.store.path, tmp_path / "mols.xyz", config.kernel)
    np.testing.assert_array_equal(k_train, r_train)
    np.testing.assert_array_equal(k_test, r_test)
    # the nanny restarts the killed worker: a fresh process importing numba, slow under load
    client.wait_for_workers(2, timeout=600)
