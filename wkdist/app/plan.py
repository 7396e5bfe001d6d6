"""``wkdist plan CONFIG.toml``: what a run would do and cost, without running it.

Prints the tile grid, the task count, the bytes, files and directories the store will hold,
and every stage's projected cost on this machine: the kernels (the engine's rate measured
here on the job's own structures and settings, ``wkdist.app.rates``), the mixing search, the
tiled Cholesky, the triangular solves and the predictions, with the memory of the driver and
of a worker. For ``cluster = "slurm"`` also the worker job script (built by a SLURMCluster
that starts no job) and SLURM's verdict on it (``sbatch --test-only``, which submits nothing).

The projections assume what the README's measurements showed: tile tasks scale with cores
(Dask, zarr and fsync add no measurable time to a tile); the factorization's tasks run at
TILED_DGEMM_SHARE of the measured one-thread DGEMM rate, one per worker process, and it takes
the longer of its flops spread over the worker processes and its longest chain of dependent
tasks (``wkdist.krr.solve.factor_flops``, which walks the graph the run builds); the search's
eigendecompositions run on the workers, one per core at a time, at the measured one-thread
rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

__all__ = ["tile_plan", "plan_lines", "stage_costs"]

GRID_SHAPES = 45  # the coarse (b, r) grid of a default search, evaluated all at once
POLISH_SHAPES = 60  # Nelder-Mead steps after it, one shape at a time (wkdist.krr.hyper)
FREE_SHAPES = 200  # at most, more for mixing = "free"
# The factorization's rate per core as a share of one-thread DGEMM: its tasks read their tiles
# from zarr and write the result durably. Measured by benchmarks/scale_rehearsal.py (solve,
# n = 50,000, factor tiles of 1,024, 2 worker processes): 21.1 GFLOP/s per core against 45.0.
TILED_DGEMM_SHARE = 0.47
# A search fold task reads its m x m block of every K^nu through read_kernels (decode, crc32c,
# markers) before its eigendecomposition: 200-230 MB/s in one process here (leading blocks of
# 500 to 4,000 rows of the 5,000-pool store, page cache warm). Each round of the search (a wave
# of fold tasks, then the profile task of each shape) also costs a scheduler round trip.
SEARCH_READ_BYTES_S = 200e6
ROUND_TRIP_S = 0.05


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# Cost of a structure pair of the lambda kernels relative to lambda = 0 (QM9, the default
# settings, benchmarks/kernel_throughput.py at a load of 6-9: 3,893 / 1,736 / 1,422 atom pairs
# per second per DGEMM GFLOP/s); the plan measures the lambda = 0 rate itself.
LAMBDA_COST = {0: 1.0, 1: 2.24, 2: 2.74}


def tile_plan(n_train: int, n_test: int, tile_size: int, nu_max: int,
              components: int = 1, lambdas: tuple[int, ...] = (0,),
              atoms_per_structure: float = 18.0) -> dict:
    """Tile grid, task and pair counts, and stored bytes of a store for these sizes.

    ``pairs`` counts structure pairs over every kernel order; ``pair_cost`` weighs them by
    LAMBDA_COST (lambda = 0 pairs).
    """
    from ..tiled.tiles import all_tiles, is_train, kernel_tile_size, n_blocks, tile_bounds

    tile = kernel_tile_size(tile_size, n_train, n_test)
    tiles = all_tiles(n_train, n_test, tile, lambdas)
    pairs, cost = 0, 0.0
    for t in tiles:
        rows = tile_bounds(t.row, tile, n_train if is_train(t.array) else n_test)
        cols = tile_bounds(t.col, tile, n_train)
        a, b = rows.stop - rows.start, cols.stop - cols.start
        count = a * (a + 1) // 2 if is_train(t.array) and t.row == t.col else a * b
        pairs += count
        cost += count * LAMBDA_COST[t.lam]
    nt, ns = n_blocks(n_train, tile), n_blocks(n_test, tile)
    channels = nu_max + 1
    kernel_bytes = 0
    for t in tiles:  # only computed tiles are stored (K_train's lower triangle is not)
        d = 2 * t.lam + 1
        kernel_bytes += 8 * channels * tile * d * tile * d + 4  # whole chunks + their crc
    other = 8 * (n_train + n_test) * (components + 1)  # targets and split indices
    # the structures: numbers and positions per atom; pointer, cell and pbc per structure
    other += (n_train + n_test) * (32 * atoms_per_structure + 8 + 72 + 3)
    k = len(lambdas)
    markers = k * (nt + ns)  # one marker file per tile row
    return {
        "tile_size": tile, "grid_train": (nt, nt), "grid_test": (ns, nt),
        "train_tiles": k * nt * (nt + 1) // 2,
        "test_tiles": k * ns * nt, "tasks": len(tiles),
        "pairs": pairs, "pair_cost": cost, "chunks": len(tiles), "lambdas": tuple(lambdas),
        "bytes": kernel_bytes + other + markers * 24 * nt,
        # chunk files, marker files; directories: c/0 and one per tile row of each array
        "files": len(tiles) + markers, "directories": 2 * 2 * k + k * (nt + ns),
    }


def _target_parts(data) -> tuple[str, tuple[int, ...], int]:
    """(kind, lambdas, components) of the target, from the first structure of the data file
    (QM9 targets are scalars)."""
    from ..engine.targets import lambdas_of, target_kind

    if data.source == "qm9":
        return "scalar", (0,), 1
    import ase.io

    from .dataset import read_targets

    path = data.path or data.train
    first = ase.io.read(path, index=0)
    y = read_targets([first], data.target, name=str(path))
    kind = target_kind(y)
    return kind, lambdas_of(kind), 1 if y.ndim == 1 else y.shape[1]


def _sample(data, n: int = 32) -> list:
    """``n`` structures of the data (QM9: seeded random ones, its first molecules are the
    smallest; a file: its first ones), for measuring the engine on them."""
    if data.source == "qm9":
        import numpy as np

        from ..data.qm9 import load_qm9

        qm9 = load_qm9()
        chosen = np.random.default_rng(0).choice(len(qm9), size=n, replace=False)
        return qm9.frames(sorted(chosen.tolist()))
    import ase.io

    return list(ase.io.read(data.path or data.train, index=f":{n}"))


def stage_costs(p: dict, *, n_train: int, n_test: int, nu_max: int, fit, rates,
                cores: int, factor_tile: int, processes: int | None = None) -> dict:
    """Seconds, bytes and memory of every stage of a run (see the module docstring).
    ``processes``: worker processes (default ``cores``); each runs one factorization task at a
    time, on one BLAS thread."""
    from ..krr.folds import task_bytes
    from ..krr.solve import default_tile_size, factor_flops

    processes = cores if processes is None else processes
    depth = nu_max + 1
    out: dict = {}
    kernel_core_s = p["pair_cost"] / rates.pairs_per_core_s
    out["kernels_s"] = kernel_core_s / cores
    out["kernel_core_s"] = kernel_core_s
    rate = TILED_DGEMM_SHARE * rates.dgemm_gflops * 1e9
    tile = min(factor_tile, n_train) if factor_tile else default_tile_size(p["tile_size"],
                                                                            n_train)

    def factorization_s(rows: int) -> float:
        work, chain = factor_flops(rows, tile)
        return max(work / (rate * processes), chain / rate)

    m = min(n_train, fit.max_search)
    search_s, search_bytes, factor_s, factor_bytes = 0.0, 0, 0.0, 0
    for lam in p["lambdas"]:
        d = 2 * lam + 1
        size = m * d * ((fit.folds - 1) / fit.folds if fit.mode == "kfold" else 0.8)
        per_fold = (rates.eigh_800_s * (size / 800) ** 3
                    + 8 * depth * (m * d) ** 2 / SEARCH_READ_BYTES_S + ROUND_TRIP_S)
        folds = fit.folds if fit.mode == "kfold" else 1
        # the grid's shapes x folds spread over the cores, then its profiles; then one shape
        # at a time: its folds, then its profile
        polish = POLISH_SHAPES + (FREE_SHAPES if fit.mixing == "free" else 0)
        waves = -(-GRID_SHAPES * folds // cores) + polish * -(-folds // cores)
        profiles = -(-GRID_SHAPES // cores) + polish
        search_s += 0.0 if fit.coefficients is not None else (
            waves * per_fold + profiles * ROUND_TRIP_S)
        search_bytes = max(search_bytes, task_bytes(m * d))
        n = n_train * d
        factor_s += factorization_s(n)
        if fit.scale_check:  # one factorization of the leading block per factor
            kept = int(n_train * (1 - fit.validation_fraction)) * d
            out["scale_check_s"] = out.get("scale_check_s", 0.0) + len(
                fit.scale_check) * factorization_s(kept)
        factor_bytes += 8 * n * n // 2
    # left-looking: factor tile (I, J) reads the 2 J tiles to its left, so the factorization
    # reads about nt^3 / 3 tiles in all
    nt_factor = -(-n_train // tile)
    out.setdefault("scale_check_s", 0.0)
    out.update(search_s=search_s, search_task_bytes=search_bytes, factor_s=factor_s,
               factor_bytes=factor_bytes, factor_scratch_bytes=factor_bytes,
               factor_read_bytes=nt_factor ** 3 / 3 * 8 * tile * tile * len(p["lambdas"]),
               factor_tile=tile)
    # the solves and the test predictions read the factor (twice) and K_test once
    read = 2 * factor_bytes + 8 * depth * n_test * n_train * sum(
        (2 * lam + 1) ** 2 for lam in p["lambdas"])
    out["solve_read_bytes"] = read
    out["worker_bytes"] = max(4 * 8 * depth * (p["tile_size"] * 5) ** 2 if any(
        p["lambdas"]) else 4 * 8 * depth * p["tile_size"] ** 2, 5 * 8 * tile ** 2)
    return out


def plan_lines(config_path: str | Path, *, check: bool = True,
               remeasure: bool = False) -> Iterator[str]:
    """The report of ``wkdist plan``, line by line (SLURM: ``check`` asks sbatch --test-only;
    ``remeasure`` ignores the cached rates of this machine)."""
    from .config import load_config
    from .rates import measure_rates

    config = load_config(config_path)
    data, compute, fit = config.data, config.compute, config.sections["fit"]
    if data.n_train is not None and data.n_test is not None:
        n_train, n_test, where = data.n_train, data.n_test, "from the configuration"
    else:  # train/test files without counts: count the structures
        from .dataset import load_dataset

        dataset = load_dataset(data)
        n_train, n_test = dataset.n_train, dataset.n_test
        where = "counted in the data files"
    kind, lambdas, components = _target_parts(data)
    sample = _sample(data)
    p = tile_plan(n_train, n_test, compute.tile_size, config.kernel.nu_max, components, lambdas,
                  atoms_per_structure=sum(len(a) for a in sample) / max(1, len(sample)))
    yield f"plan for {config_path}"
    yield (f"data: {n_train} train, {n_test} test structures ({where}); {kind} target, kernel "
           f"orders lambda = {', '.join(map(str, lambdas))}")
    yield (f"tiles: tile_size {p['tile_size']}; K_train grid {p['grid_train'][0]} x "
           f"{p['grid_train'][1]}, K_test grid {p['grid_test'][0]} x {p['grid_test'][1]}")
    yield (f"tiles: {p['train_tiles']} of K_train computed (I <= J; the reader transposes them "
           f"for the lower triangle), {p['test_tiles']} of K_test")
    yield (f"tasks: {p['tasks']} tile tasks, submitted in waves of twice the worker threads; "
           "each reads its own structures from the store")
    yield (f"store: {_bytes(p['bytes'])} in {p['files']:,} files and {p['directories']:,} "
           f"directories ({p['chunks']:,} kernel chunks of float64, nu_max + 1 = "
           f"{config.kernel.nu_max + 1} channels, one marker file per tile row) at "
           f"{config.store.path}")
    yield from _store_state(config)
    rates = measure_rates(sample, config.kernel, refresh=remeasure)
    cores = _cores(compute)
    yield (f"machine: {rates.cpu}; the engine {rates.pairs_per_core_s:,.0f} structure pairs "
           f"per core-second at these settings on {rates.measured_pairs} pairs of this data"
           + (f" (measured at lambda_max {rates.measured_lambda_max}, scaled by "
              f"x{rates.scale:,.3g} for lambda_max {config.kernel.lambda_max})"
              if rates.scale != 1 else "")
           + f"; DGEMM {rates.dgemm_gflops:.1f} GFLOP/s per core"
           + (" (cached)" if rates.cached else ""))
    c = stage_costs(p, n_train=n_train, n_test=n_test, nu_max=config.kernel.nu_max, fit=fit,
                    rates=rates, cores=cores, factor_tile=0,
                    processes=compute.adaptive_maximum or compute.workers)
    yield (f"cost: kernels {p['pairs']:,} structure pairs = {c['kernel_core_s'] / 3600:,.2f} "
           f"core-hours: about {_hours(c['kernels_s'])} on {cores} cores "
           f"({_workers(compute)} x threads_per_worker {compute.threads_per_worker})")
    if fit.coefficients is not None:
        yield "cost: search none ([fit] coefficients given)"
    else:
        m = min(n_train, fit.max_search)
        how = f"{fit.folds}-fold" if fit.mode == "kfold" else "one holdout split"
        yield (f"cost: search of (c0, a, b) on {m:,} structures on the workers ({how}): about "
               f"{_hours(c['search_s'])} ({GRID_SHAPES} grid shapes in parallel, then "
               f"{POLISH_SHAPES} polish steps of one eigendecomposition per fold), "
               f"{_bytes(c['search_task_bytes'])} per fold task (a worker runs as many at once "
               "as fit in 60 % of its memory limit; the driver holds no kernel block); "
               "checkpointed in the store")
    if fit.scale_check:
        yield (f"cost: scale check {len(fit.scale_check)} x a tiled Cholesky of "
               f"{1 - fit.validation_fraction:.0%} of the training rows: "
               f"{_hours(c['scale_check_s'])} of arithmetic at least")
    yield (f"cost: tiled Cholesky {_hours(c['factor_s'])} of arithmetic at least (the longer of "
           "its flops over the worker processes, one single-threaded task each, and its longest "
           f"chain of dependent tasks, at {TILED_DGEMM_SHARE:.0%} of the DGEMM rate per core), "
           f"factor tiles of {c['factor_tile']:,}; it reads about "
           f"{_bytes(c['factor_read_bytes'])} of factor tiles, writes the factor "
           f"({_bytes(c['factor_bytes'])}) and a look-ahead scratch of the same size")
    yield (f"cost: triangular solves and test predictions read {_bytes(c['solve_read_bytes'])} "
           "(their flops are negligible; the time is the disk's)")
    yield (f"memory: about {_bytes(c['worker_bytes'])} per worker task (a kernel tile or "
           "factor tiles) on top of the worker process itself (about 300 MB), whatever n")
    total = c["kernels_s"] + c["search_s"] + c["factor_s"] + c["scale_check_s"]
    yield (f"total: about {_hours(total)} of wall time on {cores} cores, not counting queue "
           "waits and disk reads")
    if compute.cluster == "slurm":
        yield from _plan_slurm(config, check=check)
        return
    yield f"cluster: {compute.cluster}"


def _workers(compute) -> str:
    if compute.adaptive_maximum is not None:
        return f"up to {compute.adaptive_maximum} workers"
    return f"{compute.workers} workers"


def _cores(compute) -> int:
    return (compute.adaptive_maximum or compute.workers) * compute.threads_per_worker


def _store_state(config) -> Iterator[str]:
    from ..errors import StoreError
    from ..tiled.store import open_store, progress_counts

    if not config.store.path.exists():
        yield ("store: does not exist yet (a run creates it)")
        return
    try:
        counts = progress_counts(open_store(config.store.path))
    except StoreError as error:
        yield (f"store: {error}")
        return
    yield ("store: exists; " + ", ".join(f"{name} {done}/{total} tiles done"
                                        for name, (done, total) in counts.items())
          + " (a run computes only the rest)")


def _plan_slurm(config, *, check: bool) -> Iterator[str]:
    from ..errors import SlurmError
    from .cluster import (
        check_commands,
        check_job_script,
        describe_walltime,
        slurm_cluster,
        slurm_options,
    )

    compute = config.compute
    options = slurm_options(compute)
    if compute.adaptive_maximum is not None:
        scale = (f"adaptive, {compute.adaptive_minimum or 1} to {compute.adaptive_maximum} "
                 "worker processes")
    else:
        scale = f"{compute.workers} worker processes"
    yield (f"cluster: slurm; {scale}, {options.processes} per job: {options.jobs} job(s) of "
          f"{options.kwargs['job_cpu']} CPUs and {options.kwargs['memory']}")
    yield (f"cluster: {describe_walltime(options)}; jobs that end are resubmitted; the driver "
          f"gives up after {compute.pending_timeout:g} s without any worker")
    with slurm_cluster(compute, dashboard_port=None, options=options) as cluster:
        script = cluster.job_script()
        yield ("worker job script (certificate paths and the scheduler port change every run):")
        yield ("-" * 72)
        yield (script.rstrip())
        yield ("-" * 72)
        if not check:
            return
        try:
            check_commands()
        except SlurmError as error:
            yield (f"sbatch --test-only: not run ({error})")
            return
        answer = check_job_script(script, cluster.wkdist_tls_dir)  # SlurmError: exit 2
    yield (f"sbatch --test-only: accepted ({answer})")

