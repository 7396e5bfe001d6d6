"""The tiled, checkpointed Cholesky KRR solve (wkdist.krr.solve) against dense LAPACK."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import zarr

from wkdist import NotPositiveDefiniteError
from wkdist.krr import solve
from wkdist.tiled.checkpoint import Markers

N, CHUNK, TILE, DEPTH = 203, 32, 50, 3  # n is a multiple of neither the chunk nor the tile
COEFFICIENTS = [0.7, 0.05, 0.3]


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


def _kernels(rng, n=N, m=None, depth=DEPTH):
    """Random PSD K^nu (stacked) for n training points and, if m, test rows against them."""
    total = n + (m or 0)
    x = rng.standard_normal((total, 6))
    gram = x @ x.T
    sq = np.diag(gram)
    stack = [gram / 6, np.exp(-0.25 * (sq[:, None] + sq[None, :] - 2 * gram)), (gram / 6) ** 2]
    stack = np.stack(stack[:depth])
    stack[:, :n, :n] = 0.5 * (stack[:, :n, :n] + stack[:, :n, :n].transpose(0, 2, 1))
    return stack[:, :n, :n].copy(), stack[:, n:, :n].copy()


def _store(path: Path, k_train: np.ndarray, k_test: np.ndarray | None = None) -> zarr.Group:
    group = zarr.open_group(zarr.storage.LocalStore(path), mode="w")
    for name, values in (("K_train", k_train), ("K_test", k_test)):
        if values is None:
            continue
        array = group.create_array(name, shape=values.shape, dtype="float64",
                                   chunks=(values.shape[0], CHUNK, CHUNK), fill_value=np.nan)
        array[...] = values
    return group


def _dense_alpha(k_train, y, coefficients=COEFFICIENTS, regularization=1.0):
    a = sum(c * k for c, k in zip(coefficients, k_train))
    a[np.diag_indices_from(a)] += regularization
    return scipy.linalg.cho_solve(scipy.linalg.cho_factor(a, lower=True), y)


def _factor_dir(group: zarr.Group) -> Path:
    (name,) = list(group["solve"].group_keys())
    return Path(group.store.root) / "solve" / name


def test_tile_kernels_match_numpy(rng):
    a, b = rng.standard_normal((37, 11)), rng.standard_normal((23, 11))
    acc = rng.standard_normal((37, 23))
    expected = acc - a @ b.T
    solve.gemm_update(acc, a, b)
    np.testing.assert_allclose(acc, expected, rtol=1e-13, atol=1e-13)

    s = rng.standard_normal((19, 19))
    s = s @ s.T + 100 * np.eye(19)
    c = rng.standard_normal((19, 7))
    expected = np.tril(s - c @ c.T)
    solve.syrk_update(s, c)
    np.testing.assert_allclose(np.tril(s), expected, rtol=1e-13, atol=1e-12)
    full = np.tril(s) + np.tril(s, -1).T
    assert solve.potrf_lower(s) == 0
    np.testing.assert_allclose(s, np.linalg.cholesky(full), rtol=1e-12, atol=1e-12)
    assert not np.triu(s, 1).any()

    rhs = rng.standard_normal((5, 19))
    expected = np.linalg.solve(s, rhs.T).T  # rhs @ L^-T
    solve.trsm_right_lower_t(rhs, s)
    np.testing.assert_allclose(rhs, expected, rtol=1e-11, atol=1e-12)


def test_tiled_solve_equals_cho_solve(tmp_path, rng, client):
    k_train, _ = _kernels(rng)
    group = _store(tmp_path / "store", k_train)
    y = rng.standard_normal((N, 2))
    factor = solve.cholesky_factor(group, coefficients=COEFFICIENTS, regularization=1.0,
                                   client=client, tile_size=TILE)
    assert (factor.computed, factor.reused) == (15, 0)  # 5 tile rows: 15 lower tiles
    alpha = solve.solve_weights(factor, y, client=client)
    expected = _dense_alpha(k_train, y)
    assert np.abs(alpha - expected).max() <= 1e-10 * np.abs(expected).max()
    alpha1 = solve.solve_weights(factor, y[:, 0], client=client)
    assert alpha1.shape == (N,)
    assert np.abs(alpha1 - expected[:, 0]).max() <= 1e-10 * np.abs(expected[:, 0]).max()

    lower = factor.array[...]
    dense = np.linalg.cholesky(sum(c * k for c, k in zip(COEFFICIENTS, k_train)) + np.eye(N))
    np.testing.assert_allclose(np.tril(np.nan_to_num(lower)), dense, rtol=0, atol=1e-12)
    for i in range(5):  # tiles above the diagonal are never written
        for j in range(i + 1, 5):
            assert np.isnan(lower[i * TILE, j * TILE])
    assert "W" not in group[f"solve/{_factor_dir(group).name}"]  # scratch removed

    # the same graph in this process (client=None) gives bitwise the same weights
    other = _store(tmp_path / "other", k_train)
    local = solve.cholesky_factor(other, coefficients=COEFFICIENTS, client=None, tile_size=TILE)
    assert np.array_equal(solve.solve_weights(local, y), alpha)
    assert np.array_equal(local.array[...], lower, equal_nan=True)

    # a second call finds every tile done; other coefficients get their own factor
    again = solve.cholesky_factor(group, coefficients=COEFFICIENTS, client=client, tile_size=TILE)
    assert (again.computed, again.reused) == (0, 15)
    other_c = solve.cholesky_factor(group, coefficients=[0.7, 0.05, 0.31], client=client,
                                    tile_size=TILE)
    assert other_c.computed == 15 and other_c.path != factor.path


def test_default_tile_is_a_chunk_multiple(tmp_path, rng, client):
    k_train, _ = _kernels(rng, n=90)
    group = _store(tmp_path / "store", k_train)
    factor = solve.cholesky_factor(group, coefficients=COEFFICIENTS, client=client)
    assert factor.tile_size == 96  # n rounded up to the chunk (32), below the 1024 target
    y = rng.standard_normal(90)
    expected = _dense_alpha(k_train, y)
    alpha = solve.solve_weights(factor, y, client=client)
    assert np.abs(alpha - expected).max() <= 1e-10 * np.abs(expected).max()
    assert solve.default_tile_size(256, 100_000) == 1024
    assert solve.default_tile_size(300, 100_000) == 1200


def test_predictions_equal_dense(tmp_path, rng, client):
    k_train, k_test = _kernels(rng, m=77)
    group = _store(tmp_path / "store", k_train, k_test)
    y = rng.standard_normal((N, 3))
    alpha, factor = solve.fit_weights(group, y, coefficients=COEFFICIENTS, client=client,
                                      tile_size=TILE)
    predicted = solve.predict(group, "K_test", alpha, coefficients=COEFFICIENTS, client=client,
                              rows_per_task=32)
    expected = sum(c * k for c, k in zip(COEFFICIENTS, k_test)) @ _dense_alpha(k_train, y)
    assert predicted.shape == (77, 3)
    assert np.abs(predicted - expected).max() <= 1e-10 * np.abs(expected).max()
    np.testing.assert_allclose(
        solve.predict(group, "K_test", alpha[:, 0], coefficients=COEFFICIENTS, client=None),
        sum(c * k for c, k in zip(COEFFICIENTS, k_test)) @ alpha[:, 0], rtol=1e-12, atol=1e-12)
    # training-set predictions: K_mix alpha = y - reg * alpha
    fitted = solve.predict(group, "K_train", alpha, coefficients=COEFFICIENTS, client=client)
    np.testing.assert_allclose(fitted + alpha, y, rtol=0, atol=1e-9)


def test_leading_block_fit_and_row_range_prediction(tmp_path, rng, client):
    """size= factors the leading block only; rows= predicts a row range of an array: together
    a held-out check on the training kernel itself, against dense LAPACK."""
    k_train, _ = _kernels(rng)
    group = _store(tmp_path / "s.zarr", k_train)
    y = rng.standard_normal(N)
    kept = 150
    alpha, factor = solve.fit_weights(group, y[:kept], coefficients=COEFFICIENTS,
                                      client=client, tile_size=TILE, size=kept)
    assert factor.n == kept
    np.testing.assert_allclose(alpha, _dense_alpha(k_train[:, :kept, :kept], y[:kept]),
                               rtol=1e-9, atol=1e-12)
    held = solve.predict(group, "K_train", alpha, coefficients=COEFFICIENTS, client=client,
                         columns=kept, rows=(kept, N))
    mixed = sum(c * k for c, k in zip(COEFFICIENTS, k_train))
    np.testing.assert_allclose(held, mixed[kept:, :kept] @ alpha, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="size: expected 1 .. 203"):
        solve.cholesky_factor(group, coefficients=COEFFICIENTS, size=N + 1)
    with pytest.raises(ValueError, match="rows: expected"):
        solve.predict(group, "K_train", alpha, coefficients=COEFFICIENTS, columns=kept,
                      rows=(10, N + 5))


def test_not_positive_definite_names_the_tile(tmp_path, rng, client):
    k_train, _ = _kernels(rng)
    k_train[0][120, 120] -= 1e4  # rows 100:150 form factor tile (2, 2)
    group = _store(tmp_path / "store", k_train)
    with pytest.raises(NotPositiveDefiniteError) as info:
        solve.cholesky_factor(group, coefficients=COEFFICIENTS, regularization=1.0,
                              client=client, tile_size=TILE)
    message = str(info.value)
    assert "tile (2, 2)" in message and "rows 100:150" in message
    assert "regularization" in message and "\n" not in message
    assert isinstance(info.value, np.linalg.LinAlgError)
    with pytest.raises(NotPositiveDefiniteError, match=r"tile \(2, 2\)"):
        solve.cholesky_factor(group, coefficients=COEFFICIENTS, client=None, tile_size=TILE)


def test_resume_after_lost_markers_and_tiles(tmp_path, rng, client):
    k_train, _ = _kernels(rng)
    group = _store(tmp_path / "store", k_train)
    y = rng.standard_normal(N)
    factor = solve.cholesky_factor(group, coefficients=COEFFICIENTS, client=client,
                                   tile_size=TILE)
    alpha = solve.solve_weights(factor, y, client=client)
    reference = factor.array[...]
    base = _factor_dir(group)
    # as if the run had died: markers of panel 3 and tile (4, 4) never written, tile (4, 3)
    # marked but its chunk lost, and an orphan temporary from an interrupted zarr write
    for i, j in ((3, 3), (4, 4)):
        Markers(base, "markers").unmark(i, j)
    (base / "L" / "c" / "4" / "3").unlink()
    (base / "L" / "c" / "4" / "4").write_bytes(b"garbage: rewritten because not marked")
    orphan = base / "L" / "c" / "2" / "2.0123.partial"
    orphan.write_bytes(b"x" * 100)
    resumed = solve.cholesky_factor(group, coefficients=COEFFICIENTS, client=client,
                                    tile_size=TILE)
    assert (resumed.computed, resumed.reused) == (3, 12)
    assert not orphan.exists()
    assert np.array_equal(resumed.array[...], reference, equal_nan=True)
    assert np.array_equal(solve.solve_weights(resumed, y, client=client), alpha)


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import zarr
    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import WorkerPlugin

    class Slow(WorkerPlugin):
        def setup(self, worker):
            import wkdist.krr.solve as s
            original = s._task_fin
            def slow(*args):
                time.sleep(0.4)
                return original(*args)
            s._task_fin = slow

    if __name__ == "__main__":
        from wkdist.krr import solve
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            client.register_plugin(Slow())
            group = zarr.open_group(zarr.storage.LocalStore(sys.argv[1]), mode="r+")
            print("started", flush=True)
            solve.cholesky_factor(group, coefficients=[0.7, 0.05, 0.3], client=client,
                                  tile_size=int(sys.argv[2]))
            print("finished", flush=True)
""")


def test_sigkilled_factorization_resumes_bitwise(tmp_path, rng, client):
    k_train, _ = _kernels(rng)
    tile = 30  # 7 tile rows, 28 tiles: ~6 s of slowed tasks, killed after a few
    group = _store(tmp_path / "killed", k_train)
    clean = _store(tmp_path / "clean", k_train)
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    log = tmp_path / "run.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "killed"),
                                    str(tile)], stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 600  # a loaded machine starts the cluster slowly
        marked = 0
        while time.monotonic() < deadline and process.poll() is None:
            solve_dir = tmp_path / "killed" / "solve"
            factors = [Markers(d, "markers") for d in solve_dir.glob("*")] if (
                solve_dir.exists()) else []
            marked = sum(int((m.table()[:, :, 2] == 1).sum()) for m in factors if m.exists())
            if marked >= 4:
                break
            time.sleep(0.05)
        assert process.poll() is None, log.read_text()
        assert marked >= 4
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver, the nannies and the workers
        process.wait()
    resumed = solve.cholesky_factor(group, coefficients=COEFFICIENTS, client=client,
                                    tile_size=tile)
    assert resumed.reused >= 4 and resumed.computed >= 1
    assert resumed.reused + resumed.computed == 28
    reference = solve.cholesky_factor(clean, coefficients=COEFFICIENTS, client=client,
                                      tile_size=tile)
    assert reference.path == resumed.path  # same kernels, same parameters: same factor name
    assert np.array_equal(resumed.array[...], reference.array[...], equal_nan=True)
    y = rng.standard_normal((N, 2))
    alpha = solve.solve_weights(resumed, y, client=client)
    assert np.array_equal(alpha, solve.solve_weights(reference, y, client=client))
    expected = _dense_alpha(k_train, y)
    assert np.abs(alpha - expected).max() <= 1e-10 * np.abs(expected).max()
    shutil.rmtree(tmp_path / "killed", ignore_errors=True)


def test_bad_arguments(tmp_path, rng):
    k_train, _ = _kernels(rng, n=40)
    group = _store(tmp_path / "store", k_train)
    with pytest.raises(ValueError, match="coefficients: expected 3 values"):
        solve.cholesky_factor(group, coefficients=[1.0, 2.0])
    with pytest.raises(ValueError, match="regularization"):
        solve.cholesky_factor(group, coefficients=COEFFICIENTS, regularization=float("nan"))
    factor = solve.cholesky_factor(group, coefficients=COEFFICIENTS)
    with pytest.raises(ValueError, match="y: expected shape"):
        solve.solve_weights(factor, np.zeros(41))
    from wkdist import StoreError

    with pytest.raises(StoreError, match="K_nope"):
        solve.cholesky_factor(group, coefficients=COEFFICIENTS, kernel="K_nope")
