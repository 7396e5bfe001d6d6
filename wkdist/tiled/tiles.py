"""Tile geometry of the kernel matrices: array names, tiles and their bounds.

Index names: tiles (I, J) of T structures each; train tiles I <= J are computed (the rest is
their transpose), test tiles (I, J) all are. Plain Python: reading a store's state needs no
numba, ase or dask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TILE_SIZE",
    "kernel_tile_size",
    "TRAIN",
    "TEST",
    "kernel_array",
    "array_lambda",
    "is_train",
    "Tile",
    "tile_bounds",
    "n_blocks",
    "matrix_bounds",
    "all_tiles",
]

# The kernel tile: structures per tile side ([compute] tile_size). 256 keeps a tile task at
# tens of seconds on QM9 (Dask's per-task overhead is milliseconds) and a chunk at 2.6 MB
# (nu_max = 4). The factor tile (wkdist.krr.solve.FACTOR_TILE) and the prediction block
# (wkdist.krr.model.PREDICT_BLOCK) are other parameters with their own defaults.
DEFAULT_TILE_SIZE = 256


def kernel_tile_size(tile_size: int, n_train: int, n_test: int) -> int:
    """The tile size a store of these sizes uses: at most the larger set (one tile)."""
    return max(1, min(tile_size, max(n_train, n_test)))


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
