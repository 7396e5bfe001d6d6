"""The mixing search on the workers (wkdist.krr.folds.StoreFolds via fit_mixing_store) against
the in-process search (fit_mixing) on the same kernels, and the per-worker memory budget."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import zarr
from distributed import get_task_stream

from wkdist.krr import folds
from wkdist.krr.hyper import fit_mixing, fit_mixing_store

N, CHUNK = 150, 32


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


def _problem(rng, n: int = N, block: int = 1):
    """PSD K^0..K^2 of n points (block rows each) and targets that need K^1 and K^2."""
    x = rng.standard_normal((n, 4))
    gram = x @ x.T / 4
    sq = np.diag(gram)
    gauss = np.exp(-0.5 * (sq[:, None] + sq[None, :] - 2 * gram))
    stack = np.stack([np.ones((n, n)), gauss, gauss ** 2])
    if block > 1:  # each point owns `block` rows: K (x) I_block keeps it PSD
        stack = np.kron(stack, np.eye(block)[None])
        stack[0] = 0.0  # equivariant parts have no K^0
    y = np.sin(x[:, 0]) + 0.3 * x[:, 1] * x[:, 2] + 0.05 * rng.standard_normal(n)
    if block > 1:
        y = np.repeat(y, block) * np.tile(np.linspace(0.5, 1.5, block), n)
    return stack, y


def _store(path: Path, k_train: np.ndarray) -> str:
    group = zarr.open_group(zarr.storage.LocalStore(path), mode="w")
    array = group.create_array("K_train", shape=k_train.shape, dtype="float64",
                               chunks=(k_train.shape[0], CHUNK, CHUNK), fill_value=np.nan)
    array[...] = k_train
    return str(path)


@pytest.mark.parametrize("block, mixing", [(1, "exponential"), (3, "exponential"),
                                           (1, "free")])
def test_workers_search_equals_in_process(tmp_path, rng, client, block, mixing):
    stack, y = _problem(rng, block=block)
    store = _store(tmp_path / "store", stack)
    m = 120  # the first m structures: the store's rows are in random order already
    rows = m * block
    options = {"folds": 5, "seed": 3, "block": block, "mixing": mixing, "max_free": 40}
    local = fit_mixing(stack[:, :rows, :rows], y[:rows], **options)
    with get_task_stream(client) as stream:
        remote = fit_mixing_store(store, "K_train", y, client=client, max_size=m, **options)
    ran = [str(t["key"]) for t in stream.data]
    assert any(k.startswith("wkdist-search-parts_task") for k in ran)
    assert any(k.startswith("wkdist-search-residuals_task") for k in ran)
    assert remote.n_used == local.n_used == m
    assert remote.folds == local.folds == 5
    # the same search up to the eigensolver's last bits
    np.testing.assert_allclose(remote.coefficients, local.coefficients, rtol=1e-6, atol=0)
    assert remote.cv_mae == pytest.approx(local.cv_mae, rel=1e-8)
    assert remote.cv_rmse == pytest.approx(local.cv_rmse, rel=1e-8)
    assert abs(remote.evaluations - local.evaluations) <= 2


def test_workers_search_resumes_from_its_checkpoint(tmp_path, rng, client):
    stack, y = _problem(rng)
    store = _store(tmp_path / "store", stack)

    class Memory:
        content = None

        def load(self):
            return self.content

        def save(self, content):
            self.content = content

    saved = Memory()
    first = fit_mixing_store(store, "K_train", y, client=client, max_size=100, folds=4,
                             checkpoint=saved)
    assert len(saved.content["cache"]) == first.evaluations
    # a second run finds every shape in the checkpoint: no eigendecomposition task runs
    with get_task_stream(client) as stream:
        again = fit_mixing_store(store, "K_train", y, client=client, max_size=100, folds=4,
                                 checkpoint=saved)
    ran = [str(t["key"]) for t in stream.data]
    assert ran and not [k for k in ran if "parts_task" in k]
    assert again.coefficients == first.coefficients


class _Info:
    """A stand-in client whose workers have the given (threads, memory limit)."""

    def __init__(self, workers):
        self.workers = workers

    def scheduler_info(self, n_workers=-1):
        return {"workers": {f"tcp://w{i}": {"nthreads": t, "memory_limit": limit}
                            for i, (t, limit) in enumerate(self.workers)}}


def test_slots_and_threads_follow_each_workers_memory():
    rows = 4000
    need = folds.task_bytes(rows)
    workers = [(8, int(10 * need / folds.MEMORY_SHARE)),  # room for 10: 8 threads, 8 slots
               (8, int(2.5 * need / folds.MEMORY_SHARE)),  # room for 2: 2 slots of 4 threads
               (4, int(0.5 * need / folds.MEMORY_SHARE)),  # room for none: 1 slot, 4 threads
               (2, 0)]                                     # no limit: one slot per thread
    slots = folds.worker_slots(_Info(workers), rows)
    assert list(slots.values()) == [(8, 1), (2, 4), (1, 4), (2, 1)]
    # one Dask thread per worker process that owns 4 cores (numba threads): one task, 4 BLAS
    slots = folds.worker_slots(_Info([(1, int(10 * need / folds.MEMORY_SHARE)), (1, 0)]),
                               rows, cores=4)
    assert list(slots.values()) == [(1, 4), (1, 4)]


def test_search_size_is_lowered_to_the_smallest_workers_memory():
    budget = 2 * 2**30  # 2 GiB workers
    info = _Info([(4, budget), (4, 8 * budget)])
    rows = folds.rows_that_fit(info, 50_000, 3)
    assert rows % 3 == 0
    assert folds.task_bytes(rows) <= folds.MEMORY_SHARE * budget
    assert folds.task_bytes(rows + 3) > folds.MEMORY_SHARE * budget
    assert folds.rows_that_fit(info, 900, 3) == 900  # small searches are left alone
    assert folds.rows_that_fit(_Info([(4, 0)]), 50_000, 1) == 50_000  # no limits known


def test_a_search_too_large_for_the_workers_warns_and_shrinks(tmp_path, rng, caplog,
                                                             monkeypatch):
    from distributed import Client, LocalCluster

    stack, y = _problem(rng, n=300)
    store = _store(tmp_path / "store", stack)
    limit = 10**9
    # a share of the worker's limit that holds a fold task of 150 rows, not of 300
    share = (folds.task_bytes(150) + 1) / limit
    monkeypatch.setattr(folds, "MEMORY_SHARE", share)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=":0", memory_limit=limit) as cluster, \
            Client(cluster) as c, caplog.at_level(logging.WARNING, logger="wkdist"):
        assert folds.worker_slots(c, 150) == {next(iter(c.scheduler_info()["workers"])):
                                              (1, 2)}
        result = fit_mixing_store(store, "K_train", y, client=c, max_size=300, folds=3)
    assert result.n_used == 150
    assert "searching on the first 150" in caplog.text
