"""Tiled Cholesky (wkdist.krr.solve) against in-memory LAPACK and dask.array.linalg.cholesky.

    python benchmarks/cholesky.py                      # n = 8000, tile 1000, 2 workers x 1 thread
    python benchmarks/cholesky.py --n 16000 --tile 2000 --repeat 1
    python benchmarks/cholesky.py --n 40000 --tile 2000 --memory-limit 4GB --repeat 1 \
        --skip-lapack --skip-dask --dir /big/disk       # out of core (12.8 GB per matrix)

The matrix is a Gaussian kernel on random points plus 1 * I (well conditioned, SPD), stored as a
K_train-like (1, n, n) zarr array with chunks (1, T, T) (``--nu`` stacks more slices, mixed with
coefficients 1/(nu+1) each: same matrix, more mixing work). Rates count n^3 / 3 flops. LAPACK runs
in memory with ``--lapack-threads`` BLAS threads (default: the machine's cores, its best) and with
one thread. The tiled factorization starts from an empty factor every repeat (markers removed);
dask's runs zarr to zarr on a copy padded with identity rows to a tile multiple (its chunks must
be equal squares). Every figure is the median over ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr


def gflops(n: int, seconds: float) -> float:
    return n ** 3 / 3 / seconds / 1e9


def make_matrix(path: Path, n: int, tile: int, depth: int, n_pad: int | None, seed: int) -> None:
    """Write K_train (depth, n, n) and, if n_pad, A_pad (n_pad, n_pad) tile by tile."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)) * 2.0
    group = zarr.open_group(zarr.storage.LocalStore(path), mode="w")
    k = group.create_array("K_train", shape=(depth, n, n), chunks=(depth, tile, tile),
                           dtype="float64", compressors=None)
    pad = None
    if n_pad:
        pad = group.create_array("A_pad", shape=(n_pad, n_pad), chunks=(tile, tile),
                                 dtype="float64", compressors=None)
    for i0 in range(0, n, tile):
        for j0 in range(0, n, tile):
            xi, xj = x[i0:i0 + tile], x[j0:j0 + tile]
            d2 = ((xi[:, None, :] - xj[None, :, :]) ** 2).sum(-1)
            block = np.exp(-0.5 * d2)
            k[:, i0:i0 + tile, j0:j0 + tile] = np.broadcast_to(block, (depth,) + block.shape)
            if pad is not None:
                if i0 == j0:
                    block = block + np.eye(len(block))  # the regularization, as in the fit
                pad[i0:i0 + tile, j0:j0 + tile] = block
    if pad is not None:
        for i0 in range(n, n_pad, tile):  # identity rows/columns beyond n: L stays block diagonal
            pad[i0:i0 + tile, :] = 0.0
            pad[:, i0:i0 + tile] = 0.0
        for i in range(n, n_pad):
            pad[i, i] = 1.0


def bench_lapack(path: Path, n: int, threads: int, repeat: int) -> list[float]:
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    a = zarr.open_array(zarr.storage.LocalStore(path), path="K_train", mode="r")
    k = np.asarray(a[0], order="F")
    k[np.diag_indices_from(k)] += 1.0
    times = []
    with threadpool_limits(threads):
        for _ in range(repeat):
            work = k.copy(order="F")
            t = time.perf_counter()
            scipy.linalg.cholesky(work, lower=True, overwrite_a=True, check_finite=False)
            times.append(time.perf_counter() - t)
            del work
    return times


def bench_tiled(path: Path, client, tile: int, depth: int, repeat: int) -> list[float]:
    from wkdist.krr import solve

    coefficients = [1.0 / depth] * depth
    times = []
    group = zarr.open_group(zarr.storage.LocalStore(path), mode="r+")
    for _ in range(repeat):
        if "solve" in group:
            shutil.rmtree(path / "solve")
        t = time.perf_counter()
        factor = solve.cholesky_factor(group, coefficients=coefficients, regularization=1.0,
                                       client=client, tile_size=tile)
        times.append(time.perf_counter() - t)
        assert factor.reused == 0
    return times


def bench_dask(path: Path, client, repeat: int) -> list[float]:
    import dask.array as da

    times = []
    for _ in range(repeat):
        out = path / "dask_L"
        shutil.rmtree(out, ignore_errors=True)
        a = da.from_zarr(str(path), component="A_pad")
        lower = da.linalg.cholesky(a, lower=True)
        t = time.perf_counter()
        da.to_zarr(lower, str(out), compute=True)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=8000)
    parser.add_argument("--tile", type=int, default=1000)
    parser.add_argument("--nu", type=int, default=0, help="nu_max: stacked kernel slices - 1")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--memory-limit", default="auto", help="per worker, e.g. 4GB")
    parser.add_argument("--lapack-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the matrices go (default: a temp dir)")
    parser.add_argument("--skip-lapack", action="store_true")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the matrices")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    base = Path(tempfile.mkdtemp(prefix="wkdist-chol-", dir=args.dir))
    n, tile = args.n, args.tile
    n_pad = -(-n // tile) * tile
    print(f"n = {n}, tile = {tile} ({-(-n // tile)} tiles a side), nu_max = {args.nu}, "
          f"{args.workers} workers x {args.threads} thread(s), memory limit {args.memory_limit}; "
          f"store {base}", flush=True)
    t = time.perf_counter()
    make_matrix(base, n, tile, args.nu + 1, None if args.skip_dask else n_pad, seed=0)
    print(f"matrix written in {time.perf_counter() - t:.1f} s", flush=True)
    rows = []
    try:
        if not args.skip_lapack:
            for threads in sorted({args.lapack_threads, 1}, reverse=True):
                times = bench_lapack(base, n, threads, args.repeat)
                rows.append((f"scipy LAPACK in memory, {threads} thread(s)", n, times))
                print(f"  {rows[-1][0]}: {statistics.median(times):.2f} s", flush=True)
        with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads,
                          processes=True, memory_limit=args.memory_limit,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            client.run(lambda: __import__("wkdist.krr.solve"))  # imports are not factorization
            times = bench_tiled(base, client, tile, args.nu + 1, args.repeat)
            rows.append(("wkdist tiled (zarr -> zarr, fsync + markers)", n, times))
            print(f"  {rows[-1][0]}: {statistics.median(times):.2f} s", flush=True)
            if not args.skip_dask:
                times = bench_dask(base, client, args.repeat)
                rows.append((f"dask.array.linalg.cholesky (padded to {n_pad})", n, times))
                print(f"  {rows[-1][0]}: {statistics.median(times):.2f} s", flush=True)
        print()
        print(f"load average while running: {os.getloadavg()} on {os.cpu_count()} cores "
              "(other processes share them)")
        print(f"{'method':<52} {'median s':>9} {'GFLOP/s':>8}  (n^3/3 flops at n = {n})")
        lapack = [gflops(size, statistics.median(times)) for name, size, times in rows
                  if name.startswith("scipy")]
        reference = max(lapack) if lapack else None
        for name, size, times in rows:
            med = statistics.median(times)
            rate = gflops(size, med)
            ratio = f"  {rate / reference:.2f}x of best LAPACK" if reference else ""
            print(f"{name:<52} {med:9.2f} {rate:8.1f}{ratio}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
