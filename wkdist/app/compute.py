"""Fill a kernel store on a Dask cluster: the driver behind ``wkdist kernels`` (and later run).

It sits above both the graph (what to compute) and the store (where it goes): it loads the
data, opens or creates the store, asks the store which tiles are missing, submits only those,
and reports progress and timings. Tile values never pass through the driver.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from dask.base import tokenize

from ..engine.structures import check_frames, species_of
from ..errors import StoreError
from ..tiled.checkpoint import MarkerBatch
from ..tiled.graph import TileResult, run_in_waves, tile_tasks
from ..tiled.store import (
    KernelStore,
    check_store,
    create_store,
    ensure_structures,
    missing_tiles,
    remove_partials,
    verify_tiles,
)
from ..tiled.tiles import kernel_tile_size
from .config import Config
from .dataset import Dataset, load_dataset
from .progress import Progress, format_duration

__all__ = ["KernelSummary", "compute_kernels", "prepare_store", "preflight"]

log = logging.getLogger("wkdist")


@dataclass
class KernelSummary:
    """What a run did. Times in seconds; ``compute_s``/``write_s`` are summed over tiles."""

    store: str
    total_tiles: int
    computed_tiles: int
    skipped_tiles: int
    damaged_tiles: int = 0
    removed_partials: int = 0
    wall_s: float = 0.0
    load_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    pairs: int = 0
    results: list[TileResult] = field(default_factory=list, repr=False)

    def lines(self) -> list[str]:
        out = [f"store {self.store}: computed {self.computed_tiles} of {self.total_tiles} tiles "
               f"({self.skipped_tiles} already done)"]
        if self.damaged_tiles:
            out.append(f"{self.damaged_tiles} damaged tiles found and recomputed")
        if self.computed_tiles:
            per_tile_write = 1e3 * self.write_s / self.computed_tiles
            rate = self.pairs / self.compute_s if self.compute_s else 0.0
            out.append(f"time: wall {format_duration(self.wall_s)} ({self.wall_s:.1f} s), data "
                       f"{self.load_s:.1f} s, tile compute {self.compute_s:.1f} s summed "
                       f"({rate:,.0f} structure pairs/s per worker), write+fsync "
                       f"{per_tile_write:.1f} ms per tile")
        return out


def prepare_store(config: Config, dataset: Dataset) -> KernelStore:
    """Validate the frames, warn about test-only elements, open or create the store."""
    check_frames(dataset.train_frames, "train")
    check_frames(dataset.test_frames, "test")
    absent = dataset.absent_test_elements()
    if absent:
        # logging, not warnings.warn: a data property worth telling, not a code problem (and
        # test suites turn Python warnings into errors). Printed to stderr by default.
        log.warning("test structures contain elements absent from the training set "
                    "(atomic numbers %s): their kernel contributions are zero",
                    ", ".join(map(str, absent)))
    source = ("qm9" if config.data.source == "qm9"
              else str(config.data.path or f"{config.data.train} {config.data.test}"))
    return create_store(config.store.path, settings=config.kernel, dataset=dataset,
                        tile_size=_tile_size(config, dataset), source=source)


def _tile_size(config: Config, dataset: Dataset) -> int:
    return kernel_tile_size(config.compute.tile_size, dataset.n_train, dataset.n_test)


def preflight(config: Config, dataset: Dataset) -> None:
    """The checks that need no cluster, run before one starts and before a store is created:
    every structure (named by its file and position in it) and an existing store made for
    other settings or data."""
    dataset.check_structures()
    check_store(config.store.path, settings=config.kernel, dataset=dataset,
                tile_size=_tile_size(config, dataset))


def compute_kernels(
    config: Config,
    *,
    client: Any,
    numba_threads: int | None = None,
    verify: bool = False,
    progress: bool = True,
    stream: TextIO | None = None,
    progress_interval: float = 10.0,
    on_result: Callable[[TileResult], None] | None = None,
    dataset: Dataset | None = None,
) -> KernelSummary:
    """Compute every tile the store at ``config.store.path`` still lacks; block until done.

    ``client``: a connected ``distributed.Client``. ``numba_threads``: threads per tile task
    (default ``config.compute.threads_per_worker``). ``verify``: check every done tile's
    checksums first and recompute damaged ones. ``on_result`` is called in the driver with each
    finished tile's TileResult. Raises WkdistError subclasses for bad data or a stale store.
    """
    stream = stream if stream is not None else sys.stderr
    start = time.perf_counter()
    dataset = dataset if dataset is not None else load_dataset(config.data)
    store = prepare_store(config, dataset)
    loaded = time.perf_counter()
    partials = remove_partials(store.path)
    damaged = verify_tiles(store, client=client) if verify else []  # on the workers
    todo = missing_tiles(store)
    if todo:
        ensure_structures(store, dataset)
    total = len(store.tiles())
    summary = KernelSummary(str(store.path), total, 0, total - len(todo),
                            damaged_tiles=len(damaged), removed_partials=partials,
                            load_s=loaded - start)
    if todo:
        tasks = tile_tasks(
            todo, root=store.path, settings=config.kernel,
            species=species_of(dataset.train_frames, dataset.test_frames),
            tile_size=store.tile_size,
            threads=numba_threads if numba_threads is not None
            else config.compute.threads_per_worker,
            # the keys name what is still missing too: tiles computed again after a repair
            # must not be answered from results the scheduler still holds
            write=store.writer(), token=tokenize(store.params_hash,
                                                 [(t.array, t.row, t.col) for t in todo]),
        )
        bar = Progress(total, done=summary.skipped_tiles, stream=stream,
                       interval=progress_interval, enabled=progress)
        bar.update(summary.skipped_tiles)
        batch = MarkerBatch()

        def finished(_: object, result: TileResult) -> None:
            store.record(batch, result.tile, result.crc)
            summary.results.append(result)
            summary.computed_tiles += 1
            summary.compute_s += result.compute_s
            summary.write_s += result.write_s
            summary.pairs += result.pairs
            bar.update(summary.skipped_tiles + summary.computed_tiles)
            if on_result is not None:
                on_result(result)

        bar.start()
        try:
            run_in_waves(client, tasks, on_result=finished)
        finally:
            batch.flush()  # every tile that finished is marked, whatever stopped the run
            bar.stop()
        bar.close()
    summary.wall_s = time.perf_counter() - start
    left = missing_tiles(store)
    if left:
        raise StoreError(f"{store.path}: {len(left)} tiles still missing after the run "
                         f"(first: {left[0]})")
    return summary
