"""Kernel ridge regression at data-set scale: a tiled Cholesky factorization that runs as a Dask
graph from zarr to zarr, checkpoints every factor tile and resumes after a crash.

The fitted model (README, "Outputs of `wkdist run` / `wkdist fit`")::

    K_mix = sum_nu coefficients[nu] * K^nu          (the stored, unmodified K^nu)
    alpha = (K_mix(train, train) + regularization * I)^-1 y
    y_hat = K_mix(test, train) @ alpha

Layout inside the kernel store (``T`` = factor tile size, ``nt = ceil(n / T)``)::

    STORE/solve/<h>/           attributes["wkdist_solve"]: coefficients, regularization, tile_size,
                               n, fingerprint (written once by the driver). ``h`` is a hash of
                               exactly these, so other coefficients get another factor.
    STORE/solve/<h>/L          (n, n) float64, chunks (T, T): the lower Cholesky factor; tiles
                               above the diagonal are never written (read back as NaN)
    STORE/solve/<h>/markers    (nt, nt, 3) uint64: completion markers [tag of h, crc32 of the
                               L chunk file, done], one chunk per tile row
    STORE/solve/<h>/W          (n, n) scratch: look-ahead partial updates (deleted at the end)

Algorithm: left-looking block Cholesky with a one-panel look-ahead, every tile written once:

    pre(I, J)  (J >= 2):  W[I,J] = Kmix[I,J] (+ reg I if I == J) - sum_{K <= J-2} L[I,K] L[J,K]^T
    fin(I, J):            A = W[I,J] (or Kmix[I,J] (+ reg) for J < 2) - L[I,J-1] L[J,J-1]^T
                          I == J: L[J,J] = chol(A);  I > J: L[I,J] = A L[J,J]^-T

``pre`` holds almost all the flops and needs only panels <= J-2, so it runs while panel J-1 is
being finished; the critical path is one syrk + potrf + gemm + trsm per panel. Every task reads
its inputs tile by tile from zarr (never through Dask's memory) and accumulates the sum over K
in a fixed order in one buffer, so a worker holds at most the K^nu chunk being mixed plus three
tiles, whatever n, and results do not depend on the schedule or the number of workers.

Checkpoints: the protocol of the kernel store (``wkdist.tiled.checkpoint``). A ``fin`` task
writes its L chunk durably and returns its crc; the driver records the marker. A tile is done
iff its marker names this factor and its chunk file exists; a resumed run drops done tiles from
the graph and recomputes only the rest. Tiles are write-once with deterministic values, so
recomputing one that was written but not marked is harmless and the result is bitwise
identical. Every read of a factor tile first checks its chunk against its crc: the crc a
dependency task returned (a tile of this run, which the driver may not have marked yet) or else
the marker; every read of a kernel chunk goes through ``read_kernels``. A damaged factor tile
is unmarked by the driver and recomputed (``_repair``), a damaged kernel tile is the caller's
to report.

The per-tile functions (``mix_tile``, ``gemm_update``, ...) are plain numpy/BLAS; the ``_task_*``
wrappers open the arrays; ``_factor_graph``/``_solve_graph``/``_predict_graph`` build the graphs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import zarr
from scipy.linalg import blas, lapack
from threadpoolctl import threadpool_limits
from zarr.codecs import Crc32cCodec

from ..errors import DamagedTileError, NotPositiveDefiniteError, StoreError
from ..tiled.checkpoint import (
    MarkerBatch,
    Markers,
    check_chunk,
    chunk_file,
    create_markers,
    listed_tiles,
    make_row_dirs,
    open_array,
    remove_partials,
    unmark,
    write_tile,
)
from ..tiled.durable import fsync_path
from ..tiled.store import read_kernels
from .hyper import check_regularization

__all__ = [
    "CholeskyFactor",
    "cholesky_factor",
    "solve_weights",
    "fit_weights",
    "predict",
    "verify_factors",
    "default_tile_size",
    "factor_flops",
    "FACTOR_TILE",
    "mix_dense",
    "solve_dense",
    "predict_dense",
    "mix_tile",
]

log = logging.getLogger("wkdist")

FORMAT = 2  # 1: per-tile marker chunks written by the tasks (wkdist 0.1)
SOLVE_GROUP = "solve"
# The factor tile: side aimed at (a multiple of the kernel tile, default_tile_size); a tile
# gemm is then ~2 GFLOP (~40 ms on one core), long against Dask's per-task overhead.
FACTOR_TILE = 1024
# Damaged factor tiles a fit recomputes by itself before it gives up (each is found at its read,
# unmarked by the driver and recomputed with the tiles that depend on nothing else).
_REPAIRS = 3


# =========================================================================== per-tile kernels
# Pure numpy / BLAS on C-ordered tiles. A C-ordered X is the Fortran-ordered X^T, which is what
# the BLAS wrappers take without copying, hence the transposes below.


def mix_tile(karr: Any, coefficients: Sequence[float], rows: tuple[int, int],
             cols: tuple[int, int]) -> np.ndarray:
    """sum_nu coefficients[nu] * karr[nu, rows, cols], reading one stored chunk at a time.

    ``karr`` is a (nu_max + 1, m, n) array (zarr or numpy). Sub-blocks follow karr's chunk grid,
    so each chunk is decoded once and memory is the output plus one chunk.
    """
    coefficients = np.asarray(coefficients, dtype=np.float64)
    (r0, r1), (c0, c1) = rows, cols
    out = np.empty((r1 - r0, c1 - c0), dtype=np.float64)
    chunks = getattr(karr, "chunks", None) or karr.shape
    for a0, a1 in _split(r0, r1, chunks[1]):
        for b0, b1 in _split(c0, c1, chunks[2]):
            block = np.asarray(karr[:, a0:a1, b0:b1], dtype=np.float64)
            # fixed order over nu: out = c_0 K^0 + c_1 K^1 + ...
            target = out[a0 - r0:a1 - r0, b0 - c0:b1 - c0]
            np.multiply(block[0], coefficients[0], out=target)
            for nu in range(1, len(coefficients)):
                target += coefficients[nu] * block[nu]
    return out


def _split(start: int, stop: int, step: int) -> list[tuple[int, int]]:
    """[start, stop) cut at multiples of ``step``."""
    edges = [start] + list(range((start // step + 1) * step, stop, step)) + [stop]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def gemm_update(acc: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """acc -= a @ b.T in place (dgemm; all C-ordered)."""
    out = blas.dgemm(-1.0, b.T, a.T, beta=1.0, c=acc.T, trans_a=1, overwrite_c=1)
    if not np.shares_memory(out, acc):  # never expected: f2py copied
        acc[...] = out.T


def syrk_update(acc: np.ndarray, a: np.ndarray) -> None:
    """Lower triangle of acc -= a @ a.T in place (dsyrk); the upper triangle is not touched."""
    out = blas.dsyrk(-1.0, a.T, beta=1.0, c=acc.T, trans=1, lower=0, overwrite_c=1)
    if not np.shares_memory(out, acc):
        acc[...] = out.T


def potrf_lower(acc: np.ndarray) -> int:
    """acc (its lower triangle) := L with acc = L L^T in place, upper triangle zeroed (dpotrf).

    Returns LAPACK's info: 0 on success, k > 0 when the leading minor of order k is not PD.
    """
    out, info = lapack.dpotrf(acc.T, lower=0, clean=1, overwrite_a=1)
    if not np.shares_memory(out, acc):
        acc[...] = out.T
    return int(info)


def trsm_right_lower_t(acc: np.ndarray, ljj: np.ndarray) -> None:
    """acc := acc @ ljj^-T in place (dtrsm), ljj lower triangular."""
    out = blas.dtrsm(1.0, ljj.T, acc.T, side=0, lower=0, trans_a=1, overwrite_b=1)
    if not np.shares_memory(out, acc):
        acc[...] = out.T


# =========================================================================== factor spec & I/O


@dataclass(frozen=True)
class _Spec:
    """Everything a task needs to find its arrays (small and picklable)."""

    root: str            # LocalStore root directory
    kernel: str          # path of K_train inside the store
    base: str            # path of solve/<h>
    coefficients: tuple[float, ...]
    regularization: float
    tile: int
    n: int
    tag: int             # hash64 of the factor, written into markers

    @property
    def nt(self) -> int:
        return -(-self.n // self.tile)

    def bounds(self, i: int) -> tuple[int, int]:
        return i * self.tile, min(self.n, (i + 1) * self.tile)


def _open(root: str, path: str, writable: bool) -> zarr.Array:
    return open_array(root, path, writable=writable)


def _markers(spec: _Spec) -> Markers:
    return Markers(spec.root, spec.base + "/markers")


# Factor tiles of this run a task may read, {(i, k): crc}: what its dependencies returned.
Known = dict[tuple[int, int], int]


def _read_l(spec: _Spec, i: int, j: int, known: Known | None = None) -> np.ndarray:
    """Factor tile (i, j), its chunk checked against its crc first."""
    (r0, r1), (c0, c1) = spec.bounds(i), spec.bounds(j)
    _check_l(spec, i, j, known)
    return _open(spec.root, spec.base + "/L", False)[r0:r1, c0:c1]


def _check_l(spec: _Spec, i: int, j: int, known: Known | None = None) -> None:
    """Raise DamagedTileError unless factor tile (i, j) matches the crc a dependency returned
    or, for a tile of an earlier run, its marker."""
    markers = _markers(spec)
    expected = (known or {}).get((i, j))
    if expected is None:
        expected = markers.expected(i, j, spec.tag)
    check_chunk(chunk_file(spec.root, spec.base + "/L", (i, j)), expected, kind="factor",
                what=f"store {spec.root}: factor tile {spec.base}/L ({i}, {j})",
                marker=markers.ref(i, j))


def _known(dependencies: Sequence[Any]) -> Known:
    known: Known = {}
    for result in dependencies:
        if isinstance(result, dict):
            known.update(result)
    return known


def _start(spec: _Spec, i: int, j: int) -> np.ndarray:
    """The mixed tile, with the regularization on the diagonal of a diagonal tile."""
    acc = mix_tile(read_kernels(spec.root, spec.kernel), spec.coefficients,
                   spec.bounds(i), spec.bounds(j))
    if i == j:
        acc[np.diag_indices_from(acc)] += spec.regularization
    return acc


def _update(spec: _Spec, acc: np.ndarray, i: int, j: int, k: int, known: Known) -> None:
    """acc -= L[i,k] L[j,k]^T, reading the factor tiles from zarr."""
    lik = _read_l(spec, i, k, known)
    if i == j:
        syrk_update(acc, lik)
    else:
        gemm_update(acc, lik, _read_l(spec, j, k, known))


# =========================================================================== tasks


def _task_pre(spec: _Spec, i: int, j: int, *dependencies: Any) -> None:
    """W[i,j] = mixed tile - sum_{k <= j-2} L[i,k] L[j,k]^T (scratch, not fsynced)."""
    known = _known(dependencies)
    with threadpool_limits(1):
        acc = _start(spec, i, j)
        for k in range(j - 1):
            _update(spec, acc, i, j, k, known)
    (r0, r1), (c0, c1) = spec.bounds(i), spec.bounds(j)
    _open(spec.root, spec.base + "/W", True)[r0:r1, c0:c1] = acc


def _task_fin(spec: _Spec, i: int, j: int, *dependencies: Any) -> Known:
    """Finish factor tile (i, j) and write it durably. Returns the crcs of row i's tiles known
    so far, this one included ({(i, k): crc}): the tasks of later panels read them."""
    known = _known(dependencies)
    (r0, r1), (c0, c1) = spec.bounds(i), spec.bounds(j)
    with threadpool_limits(1):
        if j >= 2:
            acc = np.array(_open(spec.root, spec.base + "/W", False)[r0:r1, c0:c1])
        else:
            acc = _start(spec, i, j)
        if j >= 1:
            _update(spec, acc, i, j, j - 1, known)
        if i == j:
            info = potrf_lower(acc)
            if info != 0:
                raise NotPositiveDefiniteError(
                    f"the regularized kernel matrix is not positive definite: factor tile "
                    f"({i}, {j}) (rows {r0}:{r1}) fails at its leading minor of order {info} "
                    f"(matrix row {r0 + info - 1}); use a larger `regularization` "
                    f"(now {spec.regularization!r}) or check the kernel coefficients")
        else:
            trsm_right_lower_t(acc, _read_l(spec, j, j, known))
    crc = write_tile(_open(spec.root, spec.base + "/L", True), (slice(r0, r1), slice(c0, c1)),
                     acc, chunk_file(spec.root, spec.base + "/L", (i, j)))
    return {**{key: value for key, value in known.items() if key[0] == i}, (i, j): crc}


# =========================================================================== driver side


@dataclass(frozen=True)
class CholeskyFactor:
    """A finished factor in the store. ``array`` is L (read only; upper tiles are NaN)."""

    array: zarr.Array
    root: str
    path: str            # solve/<h>
    tile_size: int
    n: int
    coefficients: tuple[float, ...]
    regularization: float
    computed: int        # factor tiles computed by this call
    reused: int          # factor tiles found done in the store
    tag: int = 0         # hash64 of the factor, as its markers record it

    @property
    def spec(self) -> _Spec:
        return _Spec(self.root, "", self.path, self.coefficients, self.regularization,
                     self.tile_size, self.n, self.tag)


def _locate(group: Any) -> tuple[str, str]:
    """(store root directory, group path) of a zarr group on a LocalStore, or a store path."""
    if isinstance(group, (str, os.PathLike)):
        return str(Path(group).resolve()), ""
    store = getattr(group, "store", None)
    if not isinstance(store, zarr.storage.LocalStore):
        raise StoreError(f"the tiled solve needs a zarr group on a local directory store "
                         f"(LocalStore), got {type(store).__name__}")
    return str(Path(store.root).resolve()), group.path


def _token(*parts: Any) -> str:
    from dask.base import tokenize

    return tokenize(*parts)[:20]


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def default_tile_size(kernel_chunk: int, n: int) -> int:
    """The smallest multiple of the kernel chunk side >= 1024 (so tasks read whole chunks and a
    tile gemm is long against Dask's per-task overhead), at most n rounded up to a chunk."""
    tile = kernel_chunk * max(1, math.ceil(FACTOR_TILE / kernel_chunk))
    return max(1, min(tile, kernel_chunk * math.ceil(n / kernel_chunk)))


def _fingerprint(root: str, kernel_path: str, karr: zarr.Array) -> str:
    """Identity of the kernel values: the store's params_hash when it is a wkdist store, else the
    array's metadata plus the last 64 bytes of every chunk file (its CRC32C when present)."""
    group = zarr.open_group(zarr.storage.LocalStore(root, read_only=True), mode="r")
    parent = group
    if "/" in kernel_path:
        parent = group[kernel_path.rsplit("/", 1)[0]]
    meta = parent.attrs.get("wkdist")
    digest = hashlib.sha256(json.dumps(
        [list(karr.shape), list(karr.chunks), str(karr.dtype)]).encode())
    if isinstance(meta, dict) and isinstance(meta.get("params_hash"), str):
        digest.update(b"params_hash:" + meta["params_hash"].encode())
        return digest.hexdigest()
    grid = [-(-s // c) for s, c in zip(karr.shape, karr.chunks)]
    for a in range(grid[1]):
        for b in range(grid[2]):
            file = Path(root, kernel_path, "c", "0", str(a), str(b))
            try:
                with open(file, "rb") as handle:
                    size = handle.seek(0, os.SEEK_END)
                    handle.seek(max(0, size - 64))
                    digest.update(handle.read())
            except FileNotFoundError:
                raise StoreError(f"{kernel_path}: chunk ({a}, {b}) is missing; compute the "
                                 f"kernels before the fit") from None
    return digest.hexdigest()


def _factor_hash(coefficients: tuple[float, ...], regularization: float, tile: int, n: int,
                 fingerprint: str) -> str:
    blob = json.dumps({"format": FORMAT, "coefficients": [c.hex() for c in coefficients],
                       "regularization": regularization.hex(), "tile_size": tile, "n": n,
                       "fingerprint": fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _check_coefficients(coefficients: Any, depth: int) -> tuple[float, ...]:
    values = np.asarray(coefficients, dtype=np.float64).reshape(-1)
    if values.size != depth:
        raise ValueError(f"coefficients: expected {depth} values (nu = 0 .. {depth - 1}), "
                         f"got {values.size}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"coefficients: expected finite numbers, got {values.tolist()}")
    return tuple(float(v) for v in values)


def _prepare(group: Any, coefficients: Any, regularization: float, tile_size: int | None,
             kernel: str, size: int | None = None) -> tuple[_Spec, str, zarr.Group]:
    root, gpath = _locate(group)
    kernel_path = _join(gpath, kernel)
    try:
        karr = _open(root, kernel_path, False)
    except (FileNotFoundError, zarr.errors.ArrayNotFoundError, KeyError):
        raise StoreError(f"{root}: no array {kernel_path!r} (compute the kernels first)") from None
    if karr.ndim != 3 or karr.shape[1] != karr.shape[2]:
        raise StoreError(f"{kernel_path}: expected shape (nu_max + 1, n, n), got {karr.shape}")
    coefficients = _check_coefficients(coefficients, karr.shape[0])
    regularization = check_regularization(regularization)
    n = karr.shape[1] if size is None else int(size)
    if not 0 < n <= karr.shape[1]:
        raise ValueError(f"size: expected 1 .. {karr.shape[1]} leading rows, got {size!r}")
    tile = default_tile_size(karr.chunks[1], n) if tile_size is None else int(tile_size)
    if tile <= 0:
        raise ValueError(f"tile_size: expected a positive integer, got {tile_size!r}")
    fingerprint = _fingerprint(root, kernel_path, karr)
    digest = _factor_hash(coefficients, regularization, tile, n, fingerprint)
    base = _join(gpath, SOLVE_GROUP, digest[:20])
    spec = _Spec(root, kernel_path, base, coefficients, regularization, tile, n,
                 int(digest[:16], 16))
    attrs = {"format": FORMAT, "coefficients": list(coefficients),
             "regularization": regularization, "tile_size": tile, "n": n,
             "kernel": kernel_path, "fingerprint": fingerprint}
    _discard_unreadable(Path(root, _join(gpath, SOLVE_GROUP)), Path(root, base))
    writable = zarr.open_group(zarr.storage.LocalStore(root), mode="r+")
    solve_group = writable.require_group(_join(gpath, SOLVE_GROUP))
    name = digest[:20]
    if name not in solve_group:
        solve_group.create_group(name, attributes={"wkdist_solve": attrs})
    fgroup = solve_group[name]
    nt = spec.nt
    if "L" not in fgroup:
        fgroup.create_array("L", shape=(n, n), chunks=(tile, tile), dtype="float64",
                            fill_value=np.nan, compressors=[Crc32cCodec()],
                            config={"write_empty_chunks": True})
        make_row_dirs(root, base + "/L", nt)
    if "markers" not in fgroup:
        create_markers(fgroup, "markers", nt, nt)
    if "W" not in fgroup and nt > 2:
        fgroup.create_array("W", shape=(n, n), chunks=(tile, tile), dtype="float64",
                            fill_value=np.nan, compressors=None,
                            config={"write_empty_chunks": True})
    for name_ in ("L", "markers", "W"):
        directory = Path(root, base, name_)
        if directory.exists():
            fsync_path(directory / "zarr.json")
    fsync_path(Path(root, base), directory=True)
    return spec, digest, fgroup


def _discard_unreadable(solve_dir: Path, factor_dir: Path) -> None:
    """A factor is derived data: when its metadata is truncated or edited, delete it (here, in
    the driver, before any task runs) so it is computed again instead of failing every fit."""
    for directory, files in ((solve_dir, ["zarr.json"]),
                             (factor_dir, ["zarr.json", "L/zarr.json", "markers/zarr.json",
                                           "W/zarr.json"])):
        for name in files:
            file = directory / name
            if not file.exists():
                continue
            try:
                node = json.loads(file.read_bytes())
                if not isinstance(node, dict) or "node_type" not in node:
                    raise ValueError("not zarr metadata")
            except ValueError:
                log.warning("%s is unreadable (truncated or edited): deleting %s, the factor "
                            "is computed again", file, directory)
                shutil.rmtree(directory)
                break


def _done_tiles(spec: _Spec, verify: bool = False) -> set[tuple[int, int]]:
    """Tiles whose marker names this factor and whose chunk file exists (``verify``: and whose
    file checksum matches the marker): one marker file and one listing per tile row."""
    if not _markers(spec).exists():
        return set()
    table = _markers(spec).table()
    found: set[tuple[int, int]] = set()
    for i, j in listed_tiles(spec.root, spec.base + "/L"):
        if i >= spec.nt or j > i:
            continue
        tag, crc, done = (int(v) for v in table[i, j])
        if done != 1 or tag != spec.tag:
            continue
        file = chunk_file(spec.root, spec.base + "/L", (i, j))
        if verify and zlib.crc32(file.read_bytes()) != crc:
            continue
        found.add((i, j))
    return found


# Dask key layout of the factorization (``t`` = tokenize of the factor hash, a deterministic
# sha256 of coefficients, regularization, tile size, n and the store fingerprint, and of the
# tiles already done, so a graph resubmitted after a repair gets new keys):
#     ("wkdist-chol-pre-<t>", I, J)   J >= 2, I >= J: look-ahead partial update into W[I,J]
#     ("wkdist-chol-fin-<t>", I, J)   I >= J: final factor tile L[I,J] + marker; returns its crc
# Dependencies: pre(I,J) <- fin(I,J-2), fin(J,J-2);  fin(I,J) <- pre(I,J), fin(I,J-1),
# fin(J,J-1), fin(J,J) (I > J). Tiles already done are left out and so are edges to them
# (their data is read from the store). A fin's result is the crcs of its row's tiles of this run
# ({(I, K): crc}, K <= J: what later panels read), never tile data; the driver marks each.
def _factor_graph(spec: _Spec, done: set[tuple[int, int]], token: str
                  ) -> tuple[dict, list, dict]:
    pre_name, fin_name = f"wkdist-chol-pre-{token}", f"wkdist-chol-fin-{token}"
    dsk: dict = {}
    priority: dict = {}
    nt = spec.nt

    def fin(i: int, j: int) -> list:
        return [] if (i, j) in done else [(fin_name, i, j)]

    for j in range(nt):
        for i in range(j, nt):
            if (i, j) in done:
                continue
            deps: list = []
            if j >= 2:
                pre_deps = fin(i, j - 2) + ([] if i == j else fin(j, j - 2))
                dsk[(pre_name, i, j)] = (_task_pre, spec, i, j, *pre_deps)
                priority[(pre_name, i, j)] = 0
                deps.append((pre_name, i, j))
            if j >= 1:
                deps += fin(i, j - 1) + ([] if i == j else fin(j, j - 1))
            if i > j:
                deps += fin(j, j)
            dsk[(fin_name, i, j)] = (_task_fin, spec, i, j, *deps)
            # the critical path first: diagonal tiles, then the panel below them
            priority[(fin_name, i, j)] = 2 if i == j else 1
    keys = [k for k in dsk if k[0] == fin_name]
    return dsk, keys, priority


def factor_flops(n: int, tile: int) -> tuple[float, float]:
    """(flops of the whole factorization, flops on its longest chain of dependent tasks) for
    an n x n matrix in factor tiles of ``tile``, walking the graph ``cholesky_factor`` runs:
    the first is spread over the cores, the second is what no number of cores shortens (each
    ``pre`` task sums its updates in one task, in a fixed order). ``wkdist plan`` prices the
    factorization by the larger of the two."""
    spec = _Spec("", "", "", (1.0,), 1.0, int(tile), int(n), 0)
    dsk, _, _ = _factor_graph(spec, set(), "plan")
    size = [hi - lo for lo, hi in map(spec.bounds, range(spec.nt))]

    def update(i: int, j: int, k: int) -> float:  # syrk on the diagonal, else gemm
        return size[j] ** 2 * size[k] if i == j else 2.0 * size[i] * size[j] * size[k]

    done: dict = {}
    total = 0.0
    for key, (function, _, i, j, *dependencies) in dsk.items():  # columns in order: topological
        if function is _task_pre:
            cost = sum(update(i, j, k) for k in range(j - 1))
        else:
            cost = (update(i, j, j - 1) if j >= 1 else 0.0) + (
                size[j] ** 3 / 3 if i == j else float(size[i] * size[j] ** 2))
        total += cost
        done[key] = cost + max((done[d] for d in dependencies), default=0.0)
    return total, max(done.values(), default=0.0)


def _run(dsk: dict, keys: list, client: Any, priority: dict | None = None,
         on_result: Callable[[Any, Any], None] | None = None) -> list:
    """Compute ``keys`` of a raw graph on a distributed Client, or in this process (client None,
    BLAS on one thread so the values are those the workers would compute). ``on_result(key,
    value)`` is called in the driver as each key finishes (in this process: at the end)."""
    if not keys:
        return []
    if client is None:
        import dask.local

        with threadpool_limits(1):
            results = list(dask.local.get_sync(dsk, keys))
        for key, value in zip(keys, results):
            if on_result is not None:
                on_result(key, value)
        return results
    graph: Any = dsk
    if priority:
        from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

        layers, deps = {}, {}
        for level in sorted(set(priority.values())):
            name = f"wkdist-priority-{level}"
            layers[name] = MaterializedLayer(
                {k: v for k, v in dsk.items() if priority.get(k, 0) == level},
                annotations={"priority": level})
            deps[name] = set()
        rest = {k: v for k, v in dsk.items() if k not in priority}
        if rest:
            layers["wkdist-rest"] = MaterializedLayer(rest)
            deps["wkdist-rest"] = set()
        graph = HighLevelGraph(layers, deps)
    if on_result is None:
        return list(client.get(graph, keys))
    from distributed import as_completed

    futures = client.get(graph, keys, sync=False)
    try:
        for future in as_completed(futures):
            on_result(future.key, future.result())  # re-raises a task's error here
    except BaseException:
        # only on failure: cancelling a finished graph's keys trips an assertion in the
        # scheduler (distributed 2026.8, stimulus_cancel: ts.who_wants)
        client.cancel(futures)
        raise
    return [future.result() for future in futures]


def cholesky_factor(group: Any, *, coefficients: Sequence[float], regularization: float = 1.0,
                    client: Any = None, tile_size: int | None = None, kernel: str = "K_train",
                    verify: bool = False, size: int | None = None) -> CholeskyFactor:
    """Factor ``sum_nu coefficients[nu] K^nu + regularization I`` (from ``group[kernel]``) into
    tiles of ``solve/<h>/L`` in the same store, resuming from the tiles already done.

    ``group``: a zarr group on a LocalStore (or the store's directory). ``client``: a
    ``distributed.Client``; None runs the same graph in this process. ``tile_size``: side of a
    factor tile (default: a multiple of the kernel chunk >= 1024). ``verify``: also check the
    crc32 of every done tile before trusting it (reads the whole factor). ``size``: factor
    the leading size x size block only (a model of the first ``size`` training structures).

    Raises NotPositiveDefiniteError naming the failing tile; StoreError for a missing kernel.
    Only one driver at a time should resume a given factor (it deletes orphan temporaries).
    """
    spec, digest, fgroup = _prepare(group, coefficients, regularization, tile_size, kernel,
                                    size)
    remove_partials(Path(spec.root, spec.base))
    computed = 0
    markers = _markers(spec)
    batch = MarkerBatch()

    def mark(key: Any, result: Known) -> None:
        _, i, j = key
        batch.add(markers, spec.tag, i, j, result[(i, j)])

    for attempt in range(_REPAIRS + 1):
        done = _done_tiles(spec, verify=verify)
        # keys name the store's state too: a graph submitted again after a repair must not
        # be answered from results the scheduler still holds for the same keys
        dsk, keys, priority = _factor_graph(spec, done, _token(digest[:20], sorted(done)))
        try:
            _run(dsk, keys, client, priority, on_result=mark)
        except DamagedTileError as error:
            batch.flush()
            _repair(error, attempt)
            continue
        finally:
            batch.flush()  # every finished tile is marked, whatever stopped the graph
        computed += len(keys)
        break
    total = spec.nt * (spec.nt + 1) // 2
    if "W" in fgroup:
        del fgroup["W"]
    array = zarr.open_array(zarr.storage.LocalStore(spec.root, read_only=True),
                            path=spec.base + "/L", mode="r")
    return CholeskyFactor(array, spec.root, spec.base, spec.tile, spec.n, spec.coefficients,
                          spec.regularization, computed=computed,
                          reused=max(0, total - computed), tag=spec.tag)


def _repair(error: DamagedTileError, attempt: int) -> None:
    """Unmark a damaged factor tile found by a read, so the next attempt recomputes it; a
    damaged kernel tile, or too many attempts, is the caller's to report."""
    if error.kind != "factor" or attempt >= _REPAIRS:
        raise error
    log.warning("%s; recomputing it", error)
    unmark(error.marker)


def verify_factors(root: Path | str, *, repair: bool = True) -> list[str]:
    """Check every marked factor tile under ``root/solve`` against its marker's crc; return
    the damaged ones as "solve/<h>/L (i, j)". With ``repair`` their markers are cleared, so
    the next fit recomputes them."""
    solve_dir = Path(root, SOLVE_GROUP)
    damaged: list[str] = []
    if not solve_dir.is_dir():
        return damaged
    for factor in sorted(p for p in solve_dir.iterdir() if (p / "markers" / "zarr.json").is_file()):
        base = f"{SOLVE_GROUP}/{factor.name}"
        markers = Markers(str(root), base + "/markers")
        table = markers.table()
        for i, j in zip(*np.nonzero(table[:, :, 2] == 1)):
            try:
                check_chunk(chunk_file(root, base + "/L", (i, j)), int(table[i, j, 1]),
                            kind="factor", what=f"store {root}: factor tile {base}/L ({i}, {j})",
                            marker=markers.ref(i, j))
            except DamagedTileError as error:
                damaged.append(f"{base}/L ({i}, {j})")
                log.debug("%s", error)
                if repair:
                    unmark(error.marker)
    return damaged


# --------------------------------------------------------------------------- triangular solves


def _fwd_prod(spec: _Spec, i: int, k: int, zk: np.ndarray) -> np.ndarray:
    with threadpool_limits(1):
        return _read_l(spec, i, k) @ zk


def _fwd(spec: _Spec, i: int, yi: np.ndarray, *products: np.ndarray) -> np.ndarray:
    with threadpool_limits(1):
        r = np.array(yi, dtype=np.float64)
        for p in products:  # fixed order k = 0 .. i-1
            r -= p
        return scipy.linalg.solve_triangular(_read_l(spec, i, i), r, lower=True,
                                             check_finite=False)


def _bwd_prod(spec: _Spec, k: int, i: int, ak: np.ndarray) -> np.ndarray:
    with threadpool_limits(1):
        return _read_l(spec, k, i).T @ ak


def _bwd(spec: _Spec, i: int, zi: np.ndarray, *products: np.ndarray) -> np.ndarray:
    with threadpool_limits(1):
        r = np.array(zi, dtype=np.float64)
        for p in products:  # fixed order k = nt-1 .. i+1
            r -= p
        return scipy.linalg.solve_triangular(_read_l(spec, i, i), r, lower=True, trans="T",
                                             check_finite=False)


# Dask key layout of the solves (``t`` = tokenize(factor path, y)):
#     ("wkdist-fwd-prod-<t>", I, K) = L[I,K] @ z_K          K < I
#     ("wkdist-fwd-<t>", I)         = z_I = L[I,I]^-1 (y_I - sum_K prod(I,K))
#     ("wkdist-bwd-prod-<t>", K, I) = L[K,I]^T @ alpha_K    K > I
#     ("wkdist-bwd-<t>", I)         = alpha_I = L[I,I]^-T (z_I - sum_K prod(K,I))
# Blocks of y, z and alpha (n/T x k each) travel through Dask; factor tiles are read from zarr.
def _solve_graph(spec: _Spec, y: np.ndarray, token: str) -> tuple[dict, list]:
    nt = spec.nt
    fp, fw = f"wkdist-fwd-prod-{token}", f"wkdist-fwd-{token}"
    bp, bw = f"wkdist-bwd-prod-{token}", f"wkdist-bwd-{token}"
    dsk: dict = {}
    for i in range(nt):
        r0, r1 = spec.bounds(i)
        for k in range(i):
            dsk[(fp, i, k)] = (_fwd_prod, spec, i, k, (fw, k))
        dsk[(fw, i)] = (_fwd, spec, i, y[r0:r1].copy(), *[(fp, i, k) for k in range(i)])
    for i in reversed(range(nt)):
        for k in range(i + 1, nt):
            dsk[(bp, k, i)] = (_bwd_prod, spec, k, i, (bw, k))
        dsk[(bw, i)] = (_bwd, spec, i, (fw, i), *[(bp, k, i) for k in reversed(range(i + 1, nt))])
    return dsk, [(bw, i) for i in range(nt)]


def solve_weights(factor: CholeskyFactor, y: Any, *, client: Any = None) -> np.ndarray:
    """alpha = (K_mix + regularization I)^-1 y by forward and back substitution over the factor
    tiles. ``y``: (n,) or (n, k). Returns an array of the same shape."""
    from dask.base import tokenize

    y = np.asarray(y, dtype=np.float64)
    if y.shape[:1] != (factor.n,) or y.ndim not in (1, 2):
        raise ValueError(f"y: expected shape ({factor.n},) or ({factor.n}, k), got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y: expected finite values")
    spec = factor.spec
    token = tokenize(spec.root, spec.base, y, _markers(spec).table())
    dsk, keys = _solve_graph(spec, y, token)
    blocks = _run(dsk, keys, client)
    return np.concatenate(blocks, axis=0)


def fit_weights(group: Any, y: Any, *, coefficients: Sequence[float],
                regularization: float = 1.0, client: Any = None, tile_size: int | None = None,
                kernel: str = "K_train", size: int | None = None
                ) -> tuple[np.ndarray, CholeskyFactor]:
    """cholesky_factor + solve_weights: (alpha, factor)."""
    attempt = 0
    while True:
        factor = cholesky_factor(group, coefficients=coefficients,
                                 regularization=regularization, client=client,
                                 tile_size=tile_size, kernel=kernel, size=size)
        try:
            return solve_weights(factor, y, client=client), factor
        except DamagedTileError as error:  # a factor tile damaged since it was written
            _repair(error, attempt)
            attempt += 1


# --------------------------------------------------------------------------- prediction


def _predict_rows(root: str, path: str, coefficients: tuple[float, ...], rows: tuple[int, int],
                  col_step: int, alpha: np.ndarray) -> np.ndarray:
    karr = read_kernels(root, path)
    n = alpha.shape[0]  # the first n columns (all of them, or a learning-curve subset)
    out = np.zeros((rows[1] - rows[0],) + alpha.shape[1:], dtype=np.float64)
    with threadpool_limits(1):
        for c0, c1 in _split(0, n, col_step):  # fixed order over column blocks
            out += mix_tile(karr, coefficients, rows, (c0, c1)) @ alpha[c0:c1]
    return out


# Dask key layout of prediction (``t`` = tokenize(array, coefficients, alpha)):
#     ("wkdist-alpha-<t>",)   alpha (n_train[, k]), shipped once
#     ("wkdist-pred-<t>", R)  rows block R of K_mix(array) @ alpha, reading one chunk at a time
def predict(group: Any, array_name: str, alpha: Any, *, coefficients: Sequence[float],
            client: Any = None, rows_per_task: int | None = None,
            columns: int | None = None, rows: tuple[int, int] | None = None) -> np.ndarray:
    """y_hat = (sum_nu coefficients[nu] group[array_name][nu]) @ alpha, tile by tile.

    ``array_name``: e.g. "K_test" (nu_max + 1, m, n_train). ``columns``: use only the first
    ``columns`` columns (a model of the first training structures; alpha has that length).
    ``rows``: only rows [start, stop) (e.g. held-out training rows of "K_train").
    Returns (m,) or (m, k).
    """
    from dask.base import tokenize

    root, gpath = _locate(group)
    path = _join(gpath, array_name)
    try:
        karr = _open(root, path, False)
    except (FileNotFoundError, zarr.errors.ArrayNotFoundError, KeyError):
        raise StoreError(f"{root}: no array {path!r}") from None
    coefficients = _check_coefficients(coefficients, karr.shape[0])
    alpha = np.asarray(alpha, dtype=np.float64)
    n = karr.shape[2] if columns is None else int(columns)
    if not 0 < n <= karr.shape[2]:
        raise ValueError(f"columns: expected 1 .. {karr.shape[2]}, got {columns!r}")
    if alpha.shape[:1] != (n,) or alpha.ndim not in (1, 2):
        raise ValueError(f"alpha: expected shape ({n},) or ({n}, k), got {alpha.shape}")
    first, last = (0, karr.shape[1]) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= first <= last <= karr.shape[1]:
        raise ValueError(f"rows: expected 0 <= start <= stop <= {karr.shape[1]}, got {rows!r}")
    m = last - first
    step = rows_per_task or default_tile_size(karr.chunks[1], m)
    col_step = default_tile_size(karr.chunks[2], n)
    token = tokenize(root, path, coefficients, alpha, rows)
    akey = (f"wkdist-alpha-{token}",)
    dsk: dict = {akey: alpha}
    keys = []
    for r in range(-(-m // step)):
        block = (first + r * step, first + min(m, (r + 1) * step))
        key = (f"wkdist-pred-{token}", r)
        dsk[key] = (_predict_rows, root, path, coefficients, block, col_step, akey)
        keys.append(key)
    if m == 0:
        return np.zeros((0,) + alpha.shape[1:])
    return np.concatenate(_run(dsk, keys, client), axis=0)


# =========================================================================== in-memory reference


def mix_dense(K_nu: np.ndarray, coefficients: Sequence[float]) -> np.ndarray:
    """sum_nu coefficients[nu] K_nu[nu] (same order of summation as the tiled path)."""
    K_nu = np.asarray(K_nu, dtype=np.float64)
    c = _check_coefficients(coefficients, K_nu.shape[0])
    out = c[0] * K_nu[0]
    for nu in range(1, len(c)):
        out += c[nu] * K_nu[nu]
    return out


def solve_dense(K_nu: np.ndarray, y: Any, *, coefficients: Sequence[float],
                regularization: float = 1.0) -> np.ndarray:
    """alpha by an in-memory LAPACK Cholesky (BLAS on one thread): the reference."""
    with threadpool_limits(1):
        K = mix_dense(K_nu, coefficients)
        K[np.diag_indices_from(K)] += regularization
        try:
            factor = scipy.linalg.cho_factor(K, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError as error:
            raise NotPositiveDefiniteError(
                f"the regularized kernel matrix is not positive definite ({error}); use a "
                f"larger `regularization` (now {regularization!r})") from None
        return scipy.linalg.cho_solve(factor, np.asarray(y, dtype=np.float64),
                                      check_finite=False)


def predict_dense(K_nu: np.ndarray, alpha: Any, *, coefficients: Sequence[float]) -> np.ndarray:
    with threadpool_limits(1):
        return mix_dense(K_nu, coefficients) @ np.asarray(alpha, dtype=np.float64)
