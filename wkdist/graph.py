"""Tiles of the kernel matrices and the Dask graph that computes them.

Layering: this module knows the engine and the tile geometry, not the store. A tile task is
handed a ``write`` callable (``wkdist.store.TileWriter``, a small picklable object holding the
store path) and calls it with the finished values; the store imports this module for the tile
geometry, never the other way round. The per-tile functions below are plain functions of plain
values: they know nothing about Dask and can be called directly (the benchmark does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from dask.base import tokenize

from .engine import kernel_block
from .kernels.wigner import PackedArrays
from .settings import KernelSettings
from .structures import pack_structures

__all__ = [
    "TRAIN",
    "TEST",
    "kernel_array",
    "array_lambda",
    "is_train",
    "Tile",
    "tile_bounds",
    "matrix_bounds",
    "all_tiles",
    "pack_block",
    "tile_values",
    "run_tile",
    "TileResult",
    "build_graph",
]

TRAIN = "K_train"  # (nu_max + 1, n_train, n_train): tiles I <= J computed, the rest mirrored
TEST = "K_test"  # (nu_max + 1, n_test, n_train): every tile computed
# Equivariant kernels (vector and tensor targets) of order lambda >= 1 live in
# K_train_lambda<L> / K_test_lambda<L>: each structure owns 2L + 1 consecutive rows and columns
# (row = structure * (2L + 1) + mu), so a tile of T structures is a (T (2L+1))^2 block.


def kernel_array(side: str, lam: int) -> str:
    """Array name of the train or test kernels of order ``lam``."""
    base = TRAIN if side == "train" else TEST
    return base if lam == 0 else f"{base}_lambda{lam}"


def array_lambda(name: str) -> int:
    """lambda of a kernel array name (0 for K_train / K_test)."""
    _, _, suffix = name.partition("_lambda")
    return int(suffix) if suffix else 0


def is_train(name: str) -> bool:
    return name.startswith(TRAIN)


@dataclass(frozen=True, order=True)
class Tile:
    """Tile (row, col) of ``array``: structures row*T .. against structures col*T .."""

    array: str
    row: int
    col: int

    @property
    def mirrored(self) -> bool:
        """True for a train tile above the diagonal: its task also writes (col, row)."""
        return is_train(self.array) and self.row != self.col

    @property
    def lam(self) -> int:
        return array_lambda(self.array)

    def __str__(self) -> str:
        return f"{self.array}[{self.row},{self.col}]"


def tile_bounds(index: int, tile_size: int, n: int) -> slice:
    """Structures of tile row/column ``index``; the last one may be shorter."""
    return slice(index * tile_size, min((index + 1) * tile_size, n))


def n_blocks(n: int, tile_size: int) -> int:
    return -(-n // tile_size)


def matrix_bounds(index: int, tile_size: int, n: int, lam: int) -> slice:
    """Matrix rows/columns of tile row/column ``index`` in an array of order ``lam``."""
    d = 2 * lam + 1
    structures = tile_bounds(index, tile_size, n)
    return slice(structures.start * d, structures.stop * d)


def all_tiles(n_train: int, n_test: int, tile_size: int,
              lambdas: Sequence[int] = (0,)) -> list[Tile]:
    """Every tile a complete store needs, in a fixed order: per lambda, the train upper
    triangle, then the test tiles."""
    nt, ns = n_blocks(n_train, tile_size), n_blocks(n_test, tile_size)
    tiles = []
    for lam in lambdas:
        train, test = kernel_array("train", lam), kernel_array("test", lam)
        tiles += [Tile(train, i, j) for i in range(nt) for j in range(i, nt)]
        tiles += [Tile(test, i, j) for i in range(ns) for j in range(nt)]
    return tiles


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


def run_tile(tile: Tile, packed_a: PackedArrays, packed_b: PackedArrays | None, *,
             settings: KernelSettings, threads: int | None,
             write: Callable[[Tile, np.ndarray], None]) -> TileResult:
    """Compute one tile and hand it to ``write``. Pure and idempotent: rerunning rewrites the
    same bytes, so a task Dask retries after a lost worker is harmless."""
    start = time.perf_counter()
    values = tile_values(packed_a, packed_b, settings=settings, threads=threads, lam=tile.lam)
    computed = time.perf_counter()
    write(tile, values)
    n_a = packed_a.n_structures
    pairs = n_a * (n_a + 1) // 2 if packed_b is None else n_a * packed_b.n_structures
    return TileResult(tile, computed - start, time.perf_counter() - computed, pairs)


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
    write: Callable[[Tile, np.ndarray], None],
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
