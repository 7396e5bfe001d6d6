"""``wkdist plan CONFIG.toml``: what a run would do, without computing anything.

Prints the tile grid, the task count, the bytes the store will hold, the projected cost, and
for ``cluster = "slurm"`` the worker job script (built by a SLURMCluster that starts no job)
and SLURM's verdict on it (``sbatch --test-only``, which submits nothing).

The projected cost uses one measured throughput constant, ``PAIRS_PER_CORE_SECOND``: about 525
QM9 structure pairs per core-second, measured by ``benchmarks/tile_scaling.py`` at nu_max = 4,
lambda_max = 3 (one numba thread per worker process, Dask + zarr + fsync included). Other
data (bigger structures, periodic cells) and settings (higher nu_max or lambda_max) cost more
per pair; the cost is scaled for lambda_max by ``wkdist.app.config.lambda_cost`` (the engine's
measured growth), other settings not: scale the figure with a short measured run
(`wkdist kernels` prints the pairs/s it reached).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

__all__ = ["PAIRS_PER_CORE_SECOND", "tile_plan", "plan_lines"]

# Measured by benchmarks/tile_scaling.py on QM9 at nu_max = 4, lambda_max = 3 (see above).
PAIRS_PER_CORE_SECOND = 525.0


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


# Cost of a structure pair of the lambda kernels relative to lambda = 0 (QM9, nu_max 4,
# lambda_max 3, measured with the engine on 100 molecules: 1,753 / 959 / 761 pairs/s).
LAMBDA_COST = {0: 1.0, 1: 1.83, 2: 2.30}


def tile_plan(n_train: int, n_test: int, tile_size: int, nu_max: int,
              components: int = 1, lambdas: tuple[int, ...] = (0,)) -> dict:
    """Tile grid, task and pair counts, and stored bytes of a store for these sizes.

    ``pairs`` counts structure pairs over every kernel order; ``pair_cost`` weighs them by
    LAMBDA_COST (lambda = 0 pairs).
    """
    from ..tiled.tiles import all_tiles, is_train, n_blocks, tile_bounds

    tile = min(tile_size, max(n_train, n_test))
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
    k = len(lambdas)
    markers = k * (nt + ns)  # one marker file per tile row
    return {
        "tile_size": tile, "grid_train": (nt, nt), "grid_test": (ns, nt),
        "train_tiles": k * nt * (nt + 1) // 2,
        "test_tiles": k * ns * nt, "tasks": len(tiles), "pack_tasks": nt + ns,
        "pairs": pairs, "pair_cost": cost, "chunks": len(tiles),
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


def plan_lines(config_path: str | Path, *, check: bool = True) -> Iterator[str]:
    """The report of ``wkdist plan``, line by line (SLURM: ``check`` asks sbatch --test-only)."""
    from .config import LAMBDA_COST_POWER, lambda_cost, load_config

    config = load_config(config_path)
    data, compute = config.data, config.compute
    if data.n_train is not None and data.n_test is not None:
        n_train, n_test, where = data.n_train, data.n_test, "from the configuration"
    else:  # train/test files without counts: count the structures
        from .dataset import load_dataset

        dataset = load_dataset(data)
        n_train, n_test = dataset.n_train, dataset.n_test
        where = "counted in the data files"
    kind, lambdas, components = _target_parts(data)
    p = tile_plan(n_train, n_test, compute.tile_size, config.kernel.nu_max, components, lambdas)
    yield (f"plan for {config_path}")
    yield (f"data: {n_train} train, {n_test} test structures ({where}); {kind} target, kernel "
        f"orders lambda = {', '.join(map(str, lambdas))}")
    yield (f"tiles: tile_size {p['tile_size']}; K_train grid {p['grid_train'][0]} x "
        f"{p['grid_train'][1]}, K_test grid {p['grid_test'][0]} x {p['grid_test'][1]}")
    yield (f"tiles: {p['train_tiles']} of K_train computed (I <= J; the reader transposes them "
           f"for the lower triangle), {p['test_tiles']} of K_test")
    yield (f"tasks: {p['tasks']} tile tasks + {p['pack_tasks']} packing tasks")
    yield (f"store: {_bytes(p['bytes'])} in {p['files']:,} files and {p['directories']:,} "
           f"directories ({p['chunks']:,} kernel chunks of float64, nu_max + 1 = "
           f"{config.kernel.nu_max + 1} channels, one marker file per tile row) at "
           f"{config.store.path}")
    yield from _store_state(config)
    pairs = p["pairs"]
    scale = lambda_cost(config.kernel.lambda_max)
    core_s = p["pair_cost"] * scale / PAIRS_PER_CORE_SECOND
    cores = _cores(compute)
    yield (f"cost: {pairs:,} structure pairs = {core_s / 3600:,.2f} core-hours at "
        f"{PAIRS_PER_CORE_SECOND:.0f} pairs per core-second (QM9, nu_max 4, lambda_max 3, "
        "benchmarks/tile_scaling.py; lambda >= 1 pairs weighted by their measured extra cost; "
        "other data and settings differ)")
    if config.kernel.lambda_max != 3:
        yield (f"cost: includes x{scale:,.3g} per pair for lambda_max {config.kernel.lambda_max} "
            f"(about ((lambda_max + 1) / 4)^{LAMBDA_COST_POWER:g}, measured at lambda_max 3, "
            "6 and 9)")
    yield (f"cost: about {_hours(core_s / cores)} of wall time on {cores} cores "
        f"({_workers(compute)} x threads_per_worker {compute.threads_per_worker}), not "
        "counting queue waits")
    if compute.cluster == "slurm":
        yield from _plan_slurm(config, check=check)
        return
    yield (f"cluster: {compute.cluster}")


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

