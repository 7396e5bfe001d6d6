"""The Dask graph that computes the kernel tiles.

Layering: this module knows the engine and the tile geometry (``wkdist.tiled.tiles``), not the
store. A tile task is handed a ``write`` callable (``wkdist.tiled.store.TileWriter``, a small
picklable object holding the store path) and calls it with the finished values. The per-tile
functions below are plain functions of plain values: they know nothing about Dask and can be
called directly (the benchmark does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from dask.base import tokenize

from ..engine.api import kernel_block
from ..engine.settings import KernelSettings
from ..engine.structures import pack_structures
from ..kernels.wigner import PackedArrays
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
    "build_graph",
]

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


# --------------------------------------------------------------------------- the graph


def build_graph(
    tiles: Iterable[Tile],
    train_frames: Sequence[Atoms],
    test_frames: Sequence[Atoms],
    *,
    settings: KernelSettings,
    species: np.ndarray,
    tile_size: int,
    threads: int | None,
    write: Callable[[Tile, np.ndarray], int],
    token: str,
) -> tuple[dict, list[str]]:
    """A low-level Dask graph computing ``tiles``; returns (graph, keys of the tile tasks).

    Key layout (``token`` = hash of settings, data and tile size, so keys are deterministic and
    two different stores never share a key):
      ("wkdist-pack-" + token, "train" | "test", I)  packed structures of tile row/column I,
                                                     only for rows/columns some tile needs
      "wkdist-tile-" + tokenize(token, array, I, J)  one tile; depends on its row's and column's
                                                     pack keys; returns a TileResult
    """
    tiles = list(tiles)
    pack_name = "wkdist-pack-" + token
    graph: dict = {}

    def pack_key(side: str, index: int) -> tuple[str, str, int]:
        key = (pack_name, side, index)
        if key not in graph:
            frames = train_frames if side == "train" else test_frames
            rows = tile_bounds(index, tile_size, len(frames))
            graph[key] = (_pack_task, list(frames[rows]), settings, species)
        return key

    keys = []
    for tile in tiles:
        key = "wkdist-tile-" + tokenize(token, tile.array, tile.row, tile.col)
        if is_train(tile.array):
            a = pack_key("train", tile.row)
            b = None if tile.row == tile.col else pack_key("train", tile.col)
        else:
            a, b = pack_key("test", tile.row), pack_key("train", tile.col)
        graph[key] = (_tile_task, tile, a, b, settings, threads, write)
        keys.append(key)
    return graph, keys


# Positional adapters: a low-level graph task is (callable, *args) with no keywords.
def _pack_task(frames, settings, species):
    return pack_block(frames, settings=settings, species=species)


def _tile_task(tile, packed_a, packed_b, settings, threads, write):
    return run_tile(tile, packed_a, packed_b, settings=settings, threads=threads, write=write)
