"""Full-QM9 scale, rehearsed on one machine: the real store, markers, scans, waves, search and
solve code at full size, with a cheap stand-in where the real kernels would take 2,000
core-hours (a script, not a test).

    python benchmarks/scale_rehearsal.py --dir /big/disk/rehearsal [--stages scan waves ...]
        [--n-train 110000 --n-test 20000 --tile-size 256] [--solve-n 20000] [--json out.json]

Stages (each prints its figures and adds them to --json; a stage already recorded there is
skipped, so an interrupted rehearsal resumes stage by stage):

scan    a format-2 store at the full grid (structures written, markers as a run records them
        through MarkerBatch) with a small payload file per tile in place of the 2.6 MB chunk:
        files and directories per tile, the driver's time to record markers, and the resume
        scan (done_tiles) over the whole grid, cold and warm.
waves   every tile task of the full grid through run_in_waves on a LocalCluster (2 worker
        processes), the task a stand-in that returns at once: the driver's time per tile and
        the peak memory of the driver (which holds the scheduler) and of the workers.
solve   the tiled Cholesky and solve (the real code, zarr to zarr with markers) of an
        n = --solve-n kernel with one channel, a Gaussian kernel of random points computed per
        tile from the structures' indices (positive definite): seconds, GFLOP/s, bytes, peak
        worker memory.
search  the mixing search as `wkdist fit` runs it (fit_mixing_store: the fold algebra on 2
        worker processes reading the leading m x m block, m = --search-m, from a store on
        disk; 10 folds, 6 shapes): seconds per eigendecomposition, peak memory of the driver
        and of the workers against the fold task's memory estimate.
predict wkdist's streamed prediction from a saved model of --predict-train structures, 100
        and --predict-new new structures (default 110,000 and 20,000), each run in a fresh
        process and LocalCluster, the kernel block replaced on the workers by a stand-in of
        its shape: peak memory of the driver and of the workers, seconds per task.

Memory: peak resident set sizes from the processes' own counters (ru_maxrss, psutil when
there). Figures depend on the disk and the load: the script prints the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wkdist import KernelSettings  # noqa: E402
from wkdist.tiled.checkpoint import MarkerBatch, chunk_file  # noqa: E402
from wkdist.tiled.store import create_store, done_tiles  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


class _Data:
    """A stand-in data set: n small molecules (a methane-like 5-atom frame shifted per
    index), and what create_store needs of a Dataset."""

    def __init__(self, n_train: int, n_test: int) -> None:
        from ase import Atoms

        base = Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                       [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
        self.train_frames = [base.copy() for _ in range(n_train)]
        self.test_frames = [base.copy() for _ in range(n_test)]
        self.y_train = np.arange(n_train, dtype=np.float64)
        self.y_test = np.arange(n_test, dtype=np.float64)
        self.train_index = np.arange(n_train)
        self.test_index = np.arange(n_test)
        self.target, self.unit = "U0", "eV"
        self.n_train, self.n_test = n_train, n_test

    def fingerprint(self) -> str:
        return f"rehearsal-{self.n_train}-{self.n_test}"


def stage_scan(args: argparse.Namespace) -> dict:
    path = args.dir / "scan.zarr"
    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    data = _Data(args.n_train, args.n_test)
    store = create_store(path, settings=KernelSettings(), dataset=data,
                         tile_size=args.tile_size)
    created = time.perf_counter() - start
    tiles = store.tiles()
    batch = MarkerBatch()
    write_s = record_s = 0.0
    for tile in tiles:
        mark = time.perf_counter()
        file = chunk_file(path, tile.array, (0, tile.row, tile.col))
        file.write_bytes(b"stand-in")  # in place of the 2.6 MB chunk a task writes
        write_s += time.perf_counter() - mark
        mark = time.perf_counter()
        store.record(batch, tile, 0)
        record_s += time.perf_counter() - mark
    mark = time.perf_counter()
    batch.flush()
    record_s += time.perf_counter() - mark
    files = directories = 0
    for name in store.arrays():
        for top in (path / name, path / "markers" / name):
            for _, dirs, names in os.walk(top):
                directories += len(dirs)
                files += sum(1 for f in names if f != "zarr.json")
    os.sync()
    try:  # a cold scan, as after a restart (needs root; otherwise the cache stays warm)
        Path("/proc/sys/vm/drop_caches").write_text("3")
    except OSError:
        pass
    mark = time.perf_counter()
    done = done_tiles(store)
    cold = time.perf_counter() - mark
    mark = time.perf_counter()
    done_tiles(store)
    warm = time.perf_counter() - mark
    assert len(done) == len(tiles)
    figures = {"tiles": len(tiles), "files": files, "directories": directories,
               "per_tile": (files + directories) / len(tiles), "create_s": created,
               "record_ms_per_tile": 1e3 * record_s / len(tiles),
               "scan_cold_s": cold, "scan_warm_s": warm, "driver_peak_mb": _rss_mb()}
    shutil.rmtree(path, ignore_errors=True)
    return figures


def _instant(tile: object) -> tuple:
    return (tile, 0)


class _Call:
    function = staticmethod(_instant)

    def __init__(self, key: str, tile: object) -> None:
        self.key, self.args, self.kwargs = key, (tile,), {}


def stage_waves(args: argparse.Namespace) -> dict:
    from distributed import Client, LocalCluster

    from wkdist.tiled.graph import run_in_waves
    from wkdist.tiled.tiles import all_tiles

    tiles = all_tiles(args.n_train, args.n_test, args.tile_size)
    calls = [_Call(f"rehearsal-{t.array}-{t.row}-{t.col}", t) for t in tiles]
    seen = [0]

    def finished(call: object, result: object) -> None:
        seen[0] += 1

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        start = time.perf_counter()
        run_in_waves(client, calls, on_result=finished)
        wall = time.perf_counter() - start
        workers = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    assert seen[0] == len(tiles)
    return {"tiles": len(tiles), "wall_s": wall, "driver_ms_per_tile": 1e3 * wall / len(tiles),
            "driver_and_scheduler_peak_mb": _rss_mb(),
            "worker_peak_mb": max(workers.values())}


def _gaussian_tile(points: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    a, b = points[rows], points[cols]
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d2)[None]


def stage_solve(args: argparse.Namespace) -> dict:
    import zarr
    from distributed import Client, LocalCluster

    from wkdist.krr import solve

    n, tile = args.solve_n, args.tile_size
    path = args.dir / "solve.zarr"
    shutil.rmtree(path, ignore_errors=True)
    group = zarr.open_group(zarr.storage.LocalStore(path), mode="w")
    karr = group.create_array("K_train", shape=(1, n, n), chunks=(1, tile, tile),
                              dtype="float64", fill_value=np.nan)
    points = np.random.default_rng(0).standard_normal((n, 3)) * 3.0
    start = time.perf_counter()
    for r in range(0, n, tile):
        for c in range(0, n, tile):
            karr[:, r:r + tile, c:c + tile] = _gaussian_tile(points, slice(r, r + tile),
                                                             slice(c, c + tile))
    written = time.perf_counter() - start
    y = np.random.default_rng(1).standard_normal(n)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit="4GB") as cluster, \
            Client(cluster) as client:
        start = time.perf_counter()
        factor = solve.cholesky_factor(group, coefficients=[1.0], regularization=1e-3,
                                       client=client)
        factor_s = time.perf_counter() - start
        start = time.perf_counter()
        solve.solve_weights(factor, y, client=client)
        solve_s = time.perf_counter() - start
        workers = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    shutil.rmtree(path, ignore_errors=True)
    return {"n": n, "factor_tile": factor.tile_size, "kernel_write_s": written,
            "factor_s": factor_s, "factor_gflops": n ** 3 / 3 / factor_s / 1e9,
            "solve_s": solve_s, "store_bytes": size, "worker_peak_mb": max(workers.values()),
            "driver_peak_mb": _rss_mb()}


def stage_search(args: argparse.Namespace) -> dict:
    """The mixing search as `wkdist fit` runs it: fit_mixing_store on the leading m x m block
    of a kernel array on disk (five channels of a stand-in kernel, written tile row by tile
    row), the fold algebra on 2 worker processes; 10-fold CV on a small grid of shapes."""
    import zarr
    from distributed import Client, LocalCluster

    from wkdist.krr import folds, hyper

    m, tile = args.search_m, args.tile_size
    path = args.dir / "search.zarr"
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(2)
    points = rng.standard_normal((m, 3)) * 3.0
    group = zarr.open_group(zarr.storage.LocalStore(path), mode="w")
    array = group.create_array("K_train", shape=(5, m, m), dtype="float64",
                               chunks=(5, tile, tile), fill_value=np.nan)
    for r0 in range(0, m, tile):
        rows = slice(r0, min(m, r0 + tile))
        base = _gaussian_tile(points, rows, slice(0, m))[0]
        array[:, rows, :] = np.stack([np.ones_like(base)]
                                     + [base ** (nu + 1) for nu in range(4)])
    y = np.sin(points[:, 0]) + 0.1 * rng.standard_normal(m)
    before = _rss_mb()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        start = time.perf_counter()
        result = hyper.fit_mixing_store(str(path), "K_train", y, client=client, max_size=m,
                                        folds=10, log10_b=(-1.0, 1.0, 1.0),
                                        log10_r=(-1.0, 0.0, 1.0), polish=False)
        seconds = time.perf_counter() - start
        workers = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    shutil.rmtree(path, ignore_errors=True)
    eigh = result.evaluations * result.folds
    return {"m": m, "folds": result.folds, "shapes": result.evaluations, "seconds": seconds,
            "eigendecompositions": eigh,
            "worker_s_per_eigendecomposition": 2 * seconds / (eigh + result.folds),
            "driver_before_mb": before, "driver_peak_mb": _rss_mb(),
            "worker_peak_mb": max(workers.values()),
            "fold_task_estimate_mb": folds.task_bytes(m) / 2**20}


def stage_predict(args: argparse.Namespace) -> dict:
    """Streamed prediction from a saved model of --predict-train structures, for 100 and for
    --predict-new new structures, each in a fresh process and LocalCluster: peak memory of the
    driver and of the workers, seconds and tasks. Everything is wkdist's code (model directory,
    training blocks read on the workers, packing, tasks in waves, the driver's ordered sums)
    except the kernel block itself, replaced on the workers by a stand-in of the same shape:
    at full size the real one would take 2.2e9 structure pairs (hours on 2 cores), and the
    point here is memory, which does not depend on the block's values."""
    import subprocess

    code = (
        "import json, resource, sys, time, numpy as np\n"
        "from distributed import Client, LocalCluster\n"
        "from wkdist.krr.model import load_model, PREDICT_BLOCK\n"
        "sys.path.insert(0, sys.argv[3])\n"
        "from scale_rehearsal import _Data\n"
        "def standin(a, b, *, settings, lam):\n"
        "    # (q, t, nu_max + 1): a Gaussian of the structures' neighbour-distance sums\n"
        "    # (every stand-in molecule has neighbours)\n"
        "    import numpy as np\n"
        "    sa = np.add.reduceat(a.r, a.nb_ptr[a.frame_ptr[:-1], 0])\n"
        "    sb = np.add.reduceat(b.r, b.nb_ptr[b.frame_ptr[:-1], 0])\n"
        "    base = np.exp(-0.5 * (sa[:, None] - sb[None, :]) ** 2)\n"
        "    return np.stack([base ** nu for nu in range(settings.nu_max + 1)], axis=-1)\n"
        "def use_standin():\n"
        "    import wkdist.krr.model as m\n"
        "    m.kernel_block = standin\n"
        "model = load_model(sys.argv[1]); new = _Data(int(sys.argv[2]), 0).train_frames\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,"
        " dashboard_address=None) as c, Client(c) as client:\n"
        "    client.run(use_standin)\n"
        "    start = time.perf_counter()\n"
        "    y = model.predict(new, client=client)\n"
        "    seconds = time.perf_counter() - start\n"
        "    workers = client.run(lambda: __import__('resource').getrusage("
        "__import__('resource').RUSAGE_SELF).ru_maxrss / 1024)\n"
        "tasks = -(-len(new) // PREDICT_BLOCK) * -(-model.n_train // PREDICT_BLOCK)\n"
        "print(json.dumps({'driver_before_mb': before, 'driver_peak_mb': "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
        "'worker_peak_mb': max(workers.values()), 'finite': bool(np.isfinite(y).all()), "
        "'predict_s': seconds, 'tasks': tasks, 'ms_per_task': 1e3 * seconds / tasks}))\n")
    from wkdist.krr.model import Part, save_model

    settings = KernelSettings(nu_max=4, lambda_max=0, cutoff=1.5, cutoff_smoothing=0.5)
    data = _Data(args.predict_train, 0)
    path = args.dir / "predict-model"
    shutil.rmtree(path, ignore_errors=True)
    part = Part(lam=0, alpha=np.random.default_rng(3).standard_normal(args.predict_train),
                coefficients=np.array([0.1, 1.0, 0.5, 0.2, 0.05]), regularization=1.0)
    save_model(path, parts=[part], train_frames=data.train_frames, settings=settings,
               target="U0", unit="eV", wkdist_version="rehearsal")
    import dask

    # Dask's statistical profiler keeps up to 1,000 one-second profiles per worker (tens of MB
    # after ~17 min, whatever the task); DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False
    # leaves it out of the comparison
    figures: dict = {"n_train": args.predict_train, "kernel_block": "stand-in",
                     "dask_profiler": bool(dask.config.get("distributed.worker.profile.enabled"))}
    for count in (100, args.predict_new):
        out = subprocess.run([sys.executable, "-c", code, str(path), str(count),
                              str(Path(__file__).parent)], capture_output=True, text=True,
                             check=True)
        figures[f"new_{count}"] = json.loads(out.stdout.strip().splitlines()[-1])
    shutil.rmtree(path, ignore_errors=True)
    return figures


STAGES = {"scan": stage_scan, "waves": stage_waves, "solve": stage_solve,
          "search": stage_search, "predict": stage_predict}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="working directory (a disk)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--n-train", type=int, default=110_000)
    parser.add_argument("--n-test", type=int, default=20_000)
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--solve-n", type=int, default=20_000)
    parser.add_argument("--search-m", type=int, default=2_000)
    parser.add_argument("--predict-train", type=int, default=110_000)
    parser.add_argument("--predict-new", type=int, default=20_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    recorded = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    for name in args.stages:
        if name in recorded:
            print(f"{name}: recorded already: {recorded[name]}", flush=True)
            continue
        print(f"{name}: running (load average {_load()})", flush=True)
        figures = {**STAGES[name](args), "load_after": _load()}
        print(f"{name}: {json.dumps(figures)}", flush=True)
        recorded[name] = figures
        if args.json:
            args.json.write_text(json.dumps(recorded, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
