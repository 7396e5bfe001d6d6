"""The Dask graph that computes the kernel tiles.

Layering: this module knows the engine and the tile geometry (``wkdist.tiled.tiles``), not the
store. A tile task is handed a ``write`` callable (``wkdist.tiled.store.TileWriter``, a small
picklable object holding the store path) and calls it with the finished values. The per-tile
functions below are plain functions of plain values: they know nothing about Dask and can be
called directly (the benchmark does).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from dask.base import tokenize

from ..engine.api import kernel_block
from ..engine.settings import KernelSettings
from ..engine.structures import pack_structures
from ..kernels.wigner import PackedArrays
from .frames import frame_count, read_frames
from .tiles import (
    Tile,
    is_train,
    tile_bounds,
)

__all__ = [
    "pack_block",
    "tile_values",
    "run_tile",
    "TileResult",
    "TileTask",
    "store_tile",
    "tile_tasks",
    "run_in_waves",
]

_TRAIN_FRAMES = "structures/train_"
_TEST_FRAMES = "structures/test_"

# --------------------------------------------------------------------------- per-tile functions


def pack_block(frames: Sequence[Atoms], *, settings: KernelSettings,
               species: np.ndarray) -> PackedArrays:
    """Pack one tile row/column of structures (done once per row, shared by its tiles)."""
    return pack_structures(frames, settings, species=species, name="frames")


def tile_values(packed_a: PackedArrays, packed_b: PackedArrays | None, *,
                settings: KernelSettings, threads: int | None = None,
                lam: int = 0) -> np.ndarray:
    """Kernel values of one tile as stored: (nu_max + 1, n_a d, n_b d) float64, d = 2 lam + 1,
    row a d + mu, column b d + mu'.

    ``packed_b=None`` is a diagonal tile. ``threads`` caps numba's threads in this process so
    that several worker processes on one node do not oversubscribe its cores; values do not
    depend on it (the engine's reduction order is fixed).
    """
    if threads is not None:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    block = kernel_block(packed_a, packed_b, settings=settings, lam=lam)
    if lam == 0:
        return np.ascontiguousarray(block.transpose(2, 0, 1))
    n_a, n_b, depth, d, _ = block.shape
    return np.ascontiguousarray(block.transpose(2, 0, 3, 1, 4)).reshape(depth, n_a * d, n_b * d)


@dataclass(frozen=True)
class TileResult:
    """What a tile task returns to the driver (the values themselves go to the store)."""

    tile: Tile
    compute_s: float
    write_s: float
    pairs: int
    crc: int  # of the tile's chunk file, for its marker


def run_tile(tile: Tile, packed_a: PackedArrays, packed_b: PackedArrays | None, *,
             settings: KernelSettings, threads: int | None,
             write: Callable[[Tile, np.ndarray], int]) -> TileResult:
    """Compute one tile and hand it to ``write`` (which stores it and returns its crc32). Pure
    and idempotent: rerunning rewrites the same bytes, so a task Dask retries after a lost
    worker is harmless."""
    start = time.perf_counter()
    values = tile_values(packed_a, packed_b, settings=settings, threads=threads, lam=tile.lam)
    computed = time.perf_counter()
    crc = write(tile, values)
    n_a = packed_a.n_structures
    pairs = n_a * (n_a + 1) // 2 if packed_b is None else n_a * packed_b.n_structures
    return TileResult(tile, computed - start, time.perf_counter() - computed, pairs, crc)


# --------------------------------------------------------------------------- tile tasks


def store_tile(tile: Tile, *, root: str, settings: KernelSettings, species: np.ndarray,
               tile_size: int, threads: int | None,
               write: Callable[[Tile, np.ndarray], int]) -> TileResult:
    """One tile task: read the tile's structures from the store, pack them, compute, write.

    Packing here (about 0.1 % of a tile's time) rather than in shared tasks means no packed
    block outlives its tile and no structure travels through the scheduler."""
    rows_prefix = _TRAIN_FRAMES if is_train(tile.array) else _TEST_FRAMES
    rows = tile_bounds(tile.row, tile_size, frame_count(root, rows_prefix))
    a = pack_block(read_frames(root, rows_prefix, rows.start, rows.stop), settings=settings,
                   species=species)
    b = None
    if not (is_train(tile.array) and tile.row == tile.col):
        cols = tile_bounds(tile.col, tile_size, frame_count(root, _TRAIN_FRAMES))
        b = pack_block(read_frames(root, _TRAIN_FRAMES, cols.start, cols.stop),
                       settings=settings, species=species)
    return run_tile(tile, a, b, settings=settings, threads=threads, write=write)


# Key layout: "wkdist-tile-" + tokenize(token, array, I, J), one independent task per tile
# (``token`` = hash of the store's parameters and of the tiles still missing, so keys are
# deterministic, two stores never share one, and tiles computed again after a repair get new
# keys instead of results the scheduler may still hold). A task's arguments are the tile, the
# store path and a few numbers (about a kilobyte pickled): its structures are read from the
# store inside the task.
def tile_tasks(tiles: Iterable[Tile], *, root: str | Path, settings: KernelSettings,
               species: np.ndarray, tile_size: int, threads: int | None,
               write: Callable[[Tile, np.ndarray], int], token: str) -> list[TileTask]:
    """The tasks computing ``tiles``, in the order given."""
    options = {"root": str(root), "settings": settings, "species": np.asarray(species),
               "tile_size": tile_size, "threads": threads, "write": write}
    return [TileTask("wkdist-tile-" + tokenize(token, tile.array, tile.row, tile.col), tile,
                     options) for tile in tiles]


@dataclass(frozen=True)
class TileTask:
    key: str
    tile: Tile
    options: dict

    function = staticmethod(store_tile)

    @property
    def args(self) -> tuple:
        return (self.tile,)

    @property
    def kwargs(self) -> dict:
        return self.options


def run_in_waves(client: Any, calls: Iterable[Any], *,
                 on_result: Callable[[Any, Any], None], in_flight: int | None = None) -> None:
    """Run independent calls on a distributed Client, a bounded number submitted at a time
    (default: twice the cluster's worker threads, counted again as workers come and go), and
    call ``on_result(call, result)`` in the driver as each finishes. The scheduler never holds
    more than that many of them, whatever their number.

    A call is a TileTask, or any object with ``key``, ``function``, ``args`` and ``kwargs``.
    """
    from distributed import as_completed

    def limit() -> int:
        if in_flight is not None:
            return max(1, in_flight)
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
        return max(2, 2 * sum(w.get("nthreads", 1) for w in workers.values()))

    pending = iter(calls)
    futures = as_completed()
    submitted: dict[Any, Any] = {}

    def submit(count: int) -> None:
        for call in itertools.islice(pending, count):
            future = client.submit(call.function, *call.args, key=call.key, pure=False,
                                   **call.kwargs)
            submitted[future] = call
            futures.add(future)

    try:
        submit(limit())
        for future in futures:
            result = future.result()  # re-raises a task's error here
            call = submitted.pop(future)
            on_result(call, result)
            submit(max(0, limit() - futures.count()))
    finally:
        client.cancel(list(submitted))
