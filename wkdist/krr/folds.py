"""The fold algebra of the mixing search, in this process or on the Dask workers.

Names: ``M`` the mixed kernel sum_nu c_nu K^nu of the search's m structures (``rows`` = m d
matrix rows, d = 2 lambda + 1); a fold is (t, v), its training and validation rows;
``parts`` of a shape are, per fold, (w, P, q) with M_tt = V diag(w) V^T, P = M_vt V,
q = V^T y_t (``wkdist.krr.hyper`` explains the search built on them).

Two backends give the search the same three answers (profiles of shapes, the Cholesky CV
errors of the final coefficients, the mean diagonal of each K^nu):

- ``LocalFolds``: in-memory K^nu, this process (``fit_mixing``, the tests, the estimator).
- ``StoreFolds``: the leading m x m block of a kernel store, read tile by tile by tasks on
  the workers. The driver sends coefficients and receives three numbers per shape: no kernel
  block ever passes through it. A fold task holds one m x m mixed block and its fold's
  eigendecomposition (``task_bytes``), and each worker runs at most as many of them at once as
  fit in ``MEMORY_SHARE`` of its memory limit, with its BLAS threads split between them.

The per-fold functions know nothing about Dask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
from threadpoolctl import threadpool_limits

__all__ = ["LocalFolds", "StoreFolds", "fold_parts", "scale_profile", "fold_residuals",
           "errors", "mean_diagonal", "task_bytes", "MEMORY_SHARE"]

MU_STEP = 0.25     # decades between grid values of mu = reg / a
MU_BELOW = 10.0    # decades below the largest eigenvalue
MU_ABOVE = 3.0     # decades above it

# Share of a worker's memory limit that the search's tasks on it may take together.
MEMORY_SHARE = 0.6
_TASK_OVERHEAD = 64 << 20  # a tile row of K^nu being mixed, the interpreter's working set
_BYTES_PER_ENTRY = 40  # per entry of the rows x rows block (task_bytes)


def task_bytes(rows: int) -> int:
    """Peak bytes of one fold task on ``rows`` matrix rows: the mixed block (rows^2), the
    fold's copy of M_tt, its eigenvectors and the divide-and-conquer eigensolver's workspace
    (about 2 (0.9 rows)^2 doubles), M_vt and M_vt V: about 4.3 rows^2 doubles counted, 5 taken.
    Measured on a worker process (benchmarks/scale_rehearsal.py, stage search): peaks of 282 MB
    at 2,000 rows and 1.21 GB at 5,000, about 150 MB of them the process itself."""
    return _BYTES_PER_ENTRY * rows * rows + _TASK_OVERHEAD


def errors(residuals: Sequence[np.ndarray], block: int = 1) -> tuple[float, float]:
    """(MAE, RMSE) of the residuals. With ``block`` > 1 (rows of one structure's equivariant
    part) the "MAE" is the mean Euclidean norm of a structure's error: the components' MAE
    would depend on the frame the data happen to be given in, and so would the chosen fit."""
    r = np.concatenate([np.ravel(x) for x in residuals])
    rmse = float(np.sqrt(np.mean(r * r)))
    if block == 1:
        return float(np.mean(np.abs(r))), rmse
    return float(np.mean(np.linalg.norm(r.reshape(-1, block), axis=1))), rmse


def mix(coefficients: Sequence[float], K_nu: np.ndarray) -> np.ndarray:
    """sum_nu c_nu K_nu[nu], summed in order nu = 0, 1, ... (the same bits on every path)."""
    out = coefficients[0] * K_nu[0]
    for nu in range(1, len(coefficients)):
        out += coefficients[nu] * K_nu[nu]
    return out


# --------------------------------------------------------------------------- per-fold functions


def fold_parts(mixed: np.ndarray, train: np.ndarray, val: np.ndarray, y_train: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w, P, q) of one fold of the mixed matrix: M_tt = V diag(w) V^T, P = M_vt V, q = V^T y_t."""
    m_vt = mixed[np.ix_(val, train)]
    w, v = scipy.linalg.eigh(mixed[np.ix_(train, train)], overwrite_a=True,
                             check_finite=False, driver="evd")
    return w, m_vt @ v, v.T @ y_train


def fold_residuals(mixed: np.ndarray, train: np.ndarray, val: np.ndarray, y: np.ndarray,
                   regularization: float) -> np.ndarray | None:
    """Validation residuals of one fold by a Cholesky solve (None: not positive definite)."""
    ktt = mixed[np.ix_(train, train)]
    ktt[np.diag_indices_from(ktt)] += regularization
    try:
        factor = scipy.linalg.cho_factor(ktt, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    alpha = scipy.linalg.cho_solve(factor, y[train], check_finite=False)
    return mixed[np.ix_(val, train)] @ alpha - y[val]


def scale_profile(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                  y_vals: Sequence[np.ndarray], regularization: float, loss: str,
                  block: int) -> tuple[float, float, float]:
    """(best validation error over the scale a, that a, the other loss there) of one shape,
    from its folds' parts: a dense log grid of mu = reg / a refined by bounded Brent.
    (inf, nan, inf) for a degenerate shape."""
    w_max = max(float(np.max(np.abs(w))) for w, *_ in parts)
    w_min = min(float(np.min(w)) for w, *_ in parts)
    if not (1e-150 < w_max < 1e150):  # a degenerate shape (the search strayed far out)
        return math.inf, math.nan, math.inf

    def error(log_mu: float) -> tuple[float, float]:
        mu = 10.0 ** log_mu
        if w_min + mu <= 0:
            return math.inf, math.inf
        residuals = []
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            for (w, p, q), yv in zip(parts, y_vals):
                scale = 1.0 / (w + mu)
                coef = q * scale if q.ndim == 1 else q * scale[:, None]
                residuals.append(p @ coef - yv)
            mae, rmse = errors(residuals, block)
        if not (math.isfinite(mae) and math.isfinite(rmse)):
            return math.inf, math.inf
        return (mae, rmse) if loss == "mae" else (rmse, mae)

    top = math.log10(w_max)
    grid = np.arange(top - MU_BELOW, top + MU_ABOVE + 1e-9, MU_STEP)
    values = [error(g)[0] for g in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
    log_mu, value = grid[best], values[best]
    if hi > lo and math.isfinite(value):
        found = scipy.optimize.minimize_scalar(lambda g: error(g)[0], bounds=(lo, hi),
                                               method="bounded", options={"xatol": 1e-4})
        if found.fun < value:
            log_mu, value = float(found.x), float(found.fun)
    return value, regularization / 10.0 ** log_mu, error(log_mu)[1]


# --------------------------------------------------------------------------- in this process


class LocalFolds:
    """The folds of in-memory kernels K_nu (nu_max + 1, rows, rows), BLAS on ``threads``."""

    def __init__(self, K_nu: np.ndarray, y: np.ndarray, splits: Sequence[tuple], *,
                 block: int = 1, threads: int = 1) -> None:
        self.K_nu, self.y, self.splits = K_nu, y, list(splits)
        self.block, self.threads = block, threads

    def mean_diagonal(self) -> np.ndarray:
        return np.array([float(np.mean(np.diag(k))) for k in self.K_nu])

    def has_k0(self) -> bool:
        return bool(np.any(self.K_nu[0]))

    def profiles(self, shapes: Sequence[np.ndarray], regularization: float, loss: str
                 ) -> list[tuple[float, float, float]]:
        out = []
        with threadpool_limits(self.threads):
            for coefficients in shapes:
                mixed = mix(coefficients, self.K_nu)
                parts = [fold_parts(mixed, t, v, self.y[t]) for t, v in self.splits]
                del mixed
                out.append(scale_profile(parts, [self.y[v] for _, v in self.splits],
                                         regularization, loss, self.block))
        return out

    def cv_errors(self, coefficients: Sequence[float], regularization: float
                  ) -> tuple[float, float]:
        with threadpool_limits(self.threads):
            mixed = mix(coefficients, self.K_nu)
            residuals = [fold_residuals(mixed, t, v, self.y, regularization)
                         for t, v in self.splits]
        if any(r is None for r in residuals):
            return math.inf, math.inf
        return errors(residuals, self.block)


# --------------------------------------------------------------------------- on the workers


def _mixed_block(root: str, name: str, rows: int, coefficients: tuple[float, ...]
                 ) -> np.ndarray:
    """The leading rows x rows block of sum_nu c_nu K^nu, read one tile row at a time through
    the store's checked reader (every chunk against its marker)."""
    from ..tiled.store import read_kernels

    karr = read_kernels(root, name)
    step = karr.chunks[1]
    out = np.empty((rows, rows))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        out[r0:r1] = mix(coefficients, karr[:, r0:r1, :rows])
    return out


def _parts_task(root: str, name: str, rows: int, coefficients: tuple[float, ...],
                train: np.ndarray, val: np.ndarray, y_train: np.ndarray, threads: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with threadpool_limits(threads):
        mixed = _mixed_block(root, name, rows, coefficients)
        return fold_parts(mixed, train, val, y_train)


def _profile_task(y_vals: list, regularization: float, loss: str, block: int,
                  *parts: tuple) -> tuple[float, float, float]:
    with threadpool_limits(1):
        return scale_profile(parts, y_vals, regularization, loss, block)


def _residuals_task(root: str, name: str, rows: int, coefficients: tuple[float, ...],
                    train: np.ndarray, val: np.ndarray, y: np.ndarray, regularization: float,
                    threads: int) -> np.ndarray | None:
    with threadpool_limits(threads):
        mixed = _mixed_block(root, name, rows, coefficients)
        return fold_residuals(mixed, train, val, y, regularization)


def mean_diagonal(root: Any, name: str, rows: int | None = None) -> np.ndarray:
    """Mean of diag(K^nu) over the first ``rows`` rows (all by default) of a square kernel
    array, per nu: reads only the diagonal chunks, each checked against its marker."""
    from ..tiled.store import read_kernels

    karr = read_kernels(root, name)
    rows = karr.shape[1] if rows is None else rows
    step = karr.chunks[1]
    total = np.zeros(karr.shape[0])
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        total += np.einsum("kii->k", karr[:, r0:r1, r0:r1])
    return total / rows


def worker_slots(client: Any, rows: int, cores: int | None = None
                 ) -> dict[str, tuple[int, int]]:
    """Per worker address: (fold tasks it may run at once, BLAS threads each). ``cores``: the
    cores each worker process owns when that is more than its Dask threads (wkdist's workers
    run one Dask thread and ``threads_per_worker`` numba threads)."""
    need = task_bytes(rows)
    slots = {}
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        tasks = max(1, int(info.get("nthreads", 1)))
        threads = max(tasks, cores or 0)
        limit = info.get("memory_limit") or 0
        fit = int(MEMORY_SHARE * limit // need) if limit else threads
        count = max(1, min(tasks, fit))
        slots[address] = (count, max(1, threads // count))
    return slots


def rows_that_fit(client: Any, rows_wanted: int, block: int) -> int:
    """The most matrix rows (a multiple of ``block``, at most ``rows_wanted``) whose fold task
    fits in MEMORY_SHARE of the smallest worker's memory limit."""
    limits = [info.get("memory_limit") or 0
              for info in client.scheduler_info(n_workers=-1)["workers"].values()]
    limits = [x for x in limits if x]
    if not limits:
        return rows_wanted
    budget = MEMORY_SHARE * min(limits) - _TASK_OVERHEAD
    rows = math.isqrt(int(max(budget, 0) // _BYTES_PER_ENTRY)) // block * block
    return max(block, min(rows_wanted, rows))


class StoreFolds:
    """The folds of the leading ``rows`` x ``rows`` block of kernel array ``name`` in the store
    at ``root``, evaluated by tasks on the workers of ``client``."""

    def __init__(self, root: str, name: str, rows: int, y: np.ndarray, splits: Sequence[tuple],
                 *, client: Any, block: int = 1, cores: int | None = None) -> None:
        from dask.base import tokenize

        self.root, self.name, self.rows = str(root), name, rows
        self.y, self.splits, self.block, self.client = y, list(splits), block, client
        self.slots = worker_slots(client, rows, cores)
        self.token = tokenize(self.root, name, rows, y, self.splits, block)
        self._diagonal: np.ndarray | None = None

    def mean_diagonal(self) -> np.ndarray:
        if self._diagonal is None:
            self._diagonal = self.client.submit(
                mean_diagonal, self.root, self.name, self.rows,
                key=f"wkdist-search-diag-{self.token}").result()
        return self._diagonal

    def has_k0(self) -> bool:
        return bool(self.mean_diagonal()[0] != 0)

    def _fold_jobs(self, function: Any, shapes: Sequence[tuple[float, ...]], extra: Any,
                   on_shape: Any) -> None:
        """Run ``function`` for every (shape, fold), each worker at most at its slots, at most
        a few shapes in flight; ``on_shape(i, fold futures)`` as shape i's folds are all
        submitted (the futures are dropped afterwards)."""
        from collections import deque

        from dask.base import tokenize
        from distributed import as_completed

        folds = len(self.splits)
        busy = dict.fromkeys(self.slots, 0)
        total = sum(count for count, _ in self.slots.values())
        shape_limit = max(2, -(-total // folds) + 1)  # shapes whose fold results are alive
        pending = deque((i, f) for i in range(len(shapes)) for f in range(folds))
        where: dict[Any, str] = {}
        shape_of: dict[Any, int] = {}
        outstanding: dict[int, int] = {}
        unsent: dict[int, list] = {}
        tracker = as_completed()
        while pending or where:
            while pending:
                i, f = pending[0]
                free = [a for a in busy if busy[a] < self.slots[a][0]]
                if not free or (i not in outstanding and len(outstanding) >= shape_limit):
                    break
                pending.popleft()
                address = min(free, key=lambda a: busy[a] / self.slots[a][0])
                train, val = self.splits[f]
                args = extra(f, train, val)
                future = self.client.submit(
                    function, self.root, self.name, self.rows, shapes[i], train, val, *args,
                    self.slots[address][1],
                    key=f"wkdist-search-{function.__name__.strip('_')}-"
                        f"{tokenize(self.token, shapes[i], f, args)}",
                    workers=[address], allow_other_workers=True)
                busy[address] += 1
                where[future], shape_of[future] = address, i
                outstanding[i] = outstanding.get(i, 0) + 1
                tracker.add(future)
                unsent.setdefault(i, []).append(future)
                if len(unsent[i]) == folds:
                    on_shape(i, unsent.pop(i))
            if where:
                future = next(tracker)
                busy[where.pop(future)] -= 1
                i = shape_of.pop(future)
                outstanding[i] -= 1
                if not outstanding[i] and i not in unsent:
                    del outstanding[i]
                if future.status == "error":
                    future.result()  # re-raises the task's error here

    def profiles(self, shapes: Sequence[np.ndarray], regularization: float, loss: str
                 ) -> list[tuple[float, float, float]]:
        shapes = [tuple(float(c) for c in s) for s in shapes]
        y_vals = [self.y[v] for _, v in self.splits]
        profiles: dict[int, Any] = {}

        def on_shape(i: int, futures: list) -> None:
            profiles[i] = self.client.submit(_profile_task, y_vals, regularization, loss,
                                             self.block, *futures)

        self._fold_jobs(_parts_task, shapes, lambda f, t, v: (self.y[t],), on_shape)
        return [tuple(profiles[i].result()) for i in range(len(shapes))]

    def cv_errors(self, coefficients: Sequence[float], regularization: float
                  ) -> tuple[float, float]:
        shape = tuple(float(c) for c in coefficients)
        collected: list = []
        self._fold_jobs(_residuals_task, [shape],
                        lambda f, t, v: (self.y, regularization),
                        lambda i, futures: collected.extend(futures))
        residuals = [future.result() for future in collected]
        if any(r is None for r in residuals):
            return math.inf, math.inf
        return errors(residuals, self.block)
