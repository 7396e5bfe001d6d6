import os
import signal

import numpy as np
import pytest
from store_helpers import ASE_SHAPE_WARNING, read_kernels, reference, write_case

from wkdist import KernelSettings
from wkdist.app.compute import compute_kernels, prepare_store
from wkdist.app.config import load_config
from wkdist.app.dataset import load_dataset
from wkdist.tiled.graph import run_in_waves, tile_tasks
from wkdist.tiled.store import missing_tiles
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


def test_task_keys_are_deterministic_and_carry_no_structures(tmp_path):
    """Keys depend on the token and the tile only; a task's arguments are a few hundred bytes
    whatever the number or size of the structures (they are read from the store)."""
    import pickle

    kwargs = dict(root=tmp_path, settings=KernelSettings(nu_max=2),
                  species=np.array([1, 6, 7, 8]), tile_size=3, threads=1, write=print,
                  token="abc")
    small, large = all_tiles(5, 2, 3), all_tiles(5000, 2000, 3)
    t1, t2 = tile_tasks(small, **kwargs), tile_tasks(small, **kwargs)
    assert [t.key for t in t1] == [t.key for t in t2] and len({t.key for t in t1}) == len(small)
    assert not {t.key for t in t1} & {t.key for t in tile_tasks(small, **{**kwargs,
                                                                          "token": "abd"})}
    sizes = [len(pickle.dumps(t)) for t in tile_tasks(large[:50] + large[-50:], **kwargs)]
    assert max(sizes) < 2000


def test_waves_bound_the_tasks_in_flight(tmp_path, client):
    """run_in_waves keeps at most ``in_flight`` tile tasks submitted at once and reports every
    one; the scheduler never sees the whole run."""
    config = load_config(write_case(tmp_path, n_train=14, n_test=5, tile_size=3))
    store = prepare_store(config, load_dataset(config.data))
    tasks = tile_tasks(missing_tiles(store), root=store.path, settings=config.kernel,
                       species=np.array([1, 6, 7, 8]), tile_size=store.tile_size, threads=1,
                       write=store.writer(), token=store.params_hash[:32])
    seen, processing, known = [], [], []

    def on_result(task, result):
        seen.append(result.tile)
        processing.append(sum(len(keys) for keys in client.processing().values()))
        known.append(client.run_on_scheduler(
            lambda dask_scheduler: sum(str(k).startswith("wkdist-tile-")
                                       for k in dask_scheduler.tasks)))

    run_in_waves(client, tasks, on_result=on_result, in_flight=3)
    assert sorted(seen) == sorted(t.tile for t in tasks) and len(tasks) == 15 + 10
    assert max(processing) <= 3
    # the scheduler holds the tasks in flight and, briefly, finished ones being released
    assert max(known) <= 3 + 2


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


def test_a_tile_repaired_in_the_same_session_is_computed_again(tmp_path, client):
    """After a tile is damaged and unmarked, a second compute_kernels on the same client
    computes it again (new task keys), not an answer the scheduler still holds."""
    from wkdist.tiled.checkpoint import Markers

    config = load_config(write_case(tmp_path, n_train=10, n_test=4, tile_size=4))
    compute_kernels(config, client=client, progress=False)
    chunk = config.store.path / "K_train" / "c" / "0" / "0" / "1"
    chunk.write_bytes(b"damaged")
    Markers(config.store.path, "markers/K_train").unmark(0, 1)
    again = compute_kernels(config, client=client, progress=False)
    assert again.computed_tiles == 1
    k_train, k_test = read_kernels(config.store.path)
    r_train, r_test = reference(config.store.path, tmp_path / "mols.xyz", config.kernel)
    np.testing.assert_array_equal(k_train, r_train)
