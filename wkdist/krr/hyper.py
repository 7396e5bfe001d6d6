"""Choosing the kernel mixing (c0, a, b) by cross-validation without recomputing any kernel, and
the optional per-element linear baseline.

The model (the paper's Eq. E4; docs/mathematics.md, "Mixing the body orders")::

    K = c0 K^0 + a * sum_{nu=1}^{nu_max} b^nu / nu! K^nu,     alpha = (K + reg I)^-1 y

with the regularization ``reg`` fixed (1.0 in the paper: "a sets the scale").

Search ("variable projection" over the scale a). Write K = a M(r, b) with the *shape*
M(r, b) = r K^0 + sum_nu b^nu / nu! K^nu and r = c0 / a. For one fold (training part t,
validation part v)::

    y_hat_v = K_vt (K_tt + reg I)^-1 y_t = M_vt (M_tt + mu I)^-1 y_t,       mu = reg / a
            = (M_vt V) diag(1 / (w + mu)) (V^T y_t)                          M_tt = V diag(w) V^T

so one eigendecomposition of M_tt per fold gives the validation predictions for *every* a at
O(n_v n_t) each. For each shape (r, b) the best a is found exactly along a dense log grid of mu
(0.25 decades over 13 decades around the spectrum) refined by a bounded Brent search; the
outer 2-D problem in (log r, log b) starts from the best point of a coarse log grid and is
polished by Nelder-Mead. Validation error = mean absolute error over all validation entries of
all folds (or RMSE with ``loss="rmse"``). Cost: (grid points + Nelder-Mead steps) x folds
eigendecompositions; about 45 + 60 shapes by default.

Compared with the paper's dual annealing over (c0, a, b) with a Cholesky per fold and point,
the profile over a is exact and free, so far fewer points are needed for an equal or lower CV
error (tests/test_hyper.py checks this against scipy's dual_annealing).

``mode="holdout"`` uses a single held-out validation split (for large n); ``max_size`` caps the
number of structures the search looks at. ``fit_mixing`` works on in-memory kernels in this
process (BLAS on ``blas_threads`` threads); ``fit_mixing_store`` runs the same search on the
leading block of a kernel store with the fold algebra on the Dask workers, the grid's shapes
and every shape's folds in parallel, each worker within its memory limit
(``wkdist.krr.folds``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.optimize
from threadpoolctl import threadpool_limits

from ..errors import DataError, NotPositiveDefiniteError
from .folds import MEMORY_SHARE, LocalFolds, StoreFolds, rows_that_fit, task_bytes

log = logging.getLogger("wkdist")

__all__ = [
    "check_regularization",
    "MixingResult",
    "mixing_coefficients",
    "fit_mixing",
    "fit_mixing_store",
    "cv_error",
    "kfold_splits",
    "holdout_split",
    "species_baseline",
    "baseline_values",
    "element_counts",
]


def check_regularization(value: float) -> float:
    """The one rule for the ridge on K_mix's diagonal: a finite number > 0 (the system must be
    positive definite whatever the kernels). Returns it as a float; raises ValueError."""
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer))
            or not (math.isfinite(value) and value > 0)):
        raise ValueError(f"regularization: expected a finite number > 0, got {value!r}")
    return float(value)


def mixing_coefficients(c0: float, a: float, b: float, nu_max: int) -> np.ndarray:
    """[c0, a b / 1!, a b^2 / 2!, ..., a b^nu_max / nu_max!]."""
    out = np.empty(nu_max + 1, dtype=np.float64)
    out[0] = c0
    for nu in range(1, nu_max + 1):
        out[nu] = a * b ** nu / math.factorial(nu)
    return out


@dataclass(frozen=True)
class MixingResult:
    c0: float
    a: float
    b: float | None          # None for free mixing (no b ties the orders together)
    coefficients: tuple[float, ...]
    regularization: float
    cv_mae: float            # validation MAE at the chosen point, pooled over folds (Cholesky)
    cv_rmse: float
    loss: str                # what was minimized: "mae" or "rmse"
    mode: str                # "kfold" or "holdout"
    folds: int
    n_used: int              # structures the search looked at (max_size may cap it)
    evaluations: int         # shapes (r, b) evaluated, each one eigendecomposition per fold
    seconds: float
    mixing: str = "exponential"  # or "free"
    history: list = field(default_factory=list, repr=False)  # (c0, a, b, error) per shape

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["coefficients"] = list(self.coefficients)
        data.pop("history")
        return data


# --------------------------------------------------------------------------- splits and errors


def kfold_splits(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs of a seeded k-fold split of range(n)."""
    if folds < 2 or folds > n:
        raise ValueError(f"folds: expected 2 <= folds <= n = {n}, got {folds}")
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(perm, folds)
    return [(np.sort(np.concatenate(parts[:i] + parts[i + 1:])), np.sort(parts[i]))
            for i in range(folds)]


def holdout_split(n: int, fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (train, validation) pair with ``fraction`` of range(n) held out."""
    n_val = int(round(fraction * n))
    if not 0 < n_val < n:
        raise ValueError(f"holdout_fraction: expected a held-out part of 1 .. {n - 1} "
                         f"structures, got {fraction!r} of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return [(np.sort(perm[n_val:]), np.sort(perm[:n_val]))]


def cv_error(K_nu: np.ndarray, y: np.ndarray, coefficients: Sequence[float], *,
             splits: list[tuple[np.ndarray, np.ndarray]], regularization: float = 1.0,
             loss: str = "mae", blas_threads: int = 1, block: int = 1) -> float:
    """Validation error of the given coefficients by a Cholesky solve per fold (reference)."""
    folds = LocalFolds(np.asarray(K_nu, dtype=np.float64), np.asarray(y, dtype=np.float64),
                       splits, block=block, threads=blas_threads)
    mae, rmse = folds.cv_errors(np.asarray(coefficients, dtype=np.float64), regularization)
    return mae if loss == "mae" else rmse


def _rows(structures: np.ndarray, block: int) -> np.ndarray:
    """Matrix rows of ``structures`` when each owns ``block`` consecutive rows."""
    if block == 1:
        return structures
    return (structures[:, None] * block + np.arange(block)).reshape(-1)


# --------------------------------------------------------------------------- the profile search


class _Problem:
    """The shapes evaluated so far and their profiles over the scale a, computed by ``folds``
    (``wkdist.krr.folds``: in this process or on the workers), cached by shape."""

    def __init__(self, folds: Any, nu_max: int, regularization: float, loss: str) -> None:
        self.folds = folds
        self.nu_max = nu_max
        self.regularization = regularization
        self.loss = loss
        self.has_k0 = nu_max >= 1 and folds.has_k0()
        self.cache: dict[tuple[float, ...], tuple[float, float, float]] = {}
        self.history: list[tuple[float, float, float, float]] = []
        self.on_new: Any = None  # called after each shape evaluated (the checkpoint)

    def shape(self, log_r: float, log_b: float) -> np.ndarray:
        """Coefficients of M(r, b) (r = c0 / a); nu_max = 0: M = K^0."""
        if self.nu_max == 0:
            return np.array([1.0])
        return mixing_coefficients(math.exp(log_r) if self.has_k0 else 0.0, 1.0,
                                   math.exp(log_b), self.nu_max)

    def evaluate(self, log_r: float, log_b: float) -> tuple[float, float, float]:
        """(best error over a, that a, rmse/mae companion) for the shape (r, b)."""
        return self.evaluate_many([(log_r, log_b)])[0]

    def evaluate_many(self, points: Sequence[tuple[float, float]]
                      ) -> list[tuple[float, float, float]]:
        """``evaluate`` of several shapes at once (in parallel on the workers)."""
        shapes = [self.shape(log_r, log_b) for log_r, log_b in points]
        labels = [math.exp(log_b) if self.nu_max else 0.0 for _, log_b in points]
        return self.profile_many(shapes, labels)

    @staticmethod
    def _key(coefficients: np.ndarray) -> tuple[float, ...]:
        return tuple(float(f"{c:.12g}") for c in coefficients)

    def profile(self, coefficients: np.ndarray, b: float = math.nan
                ) -> tuple[float, float, float]:
        """(best error over a, that a, rmse/mae companion) for the shape ``coefficients``
        (the model's coefficients are a times these); ``b`` only labels the history."""
        return self.profile_many([coefficients], [b])[0]

    def profile_many(self, shapes: Sequence[np.ndarray], labels: Sequence[float]
                     ) -> list[tuple[float, float, float]]:
        new: dict[tuple[float, ...], tuple[np.ndarray, float]] = {}
        for coefficients, b in zip(shapes, labels):
            key = self._key(coefficients)
            if key not in self.cache and key not in new:
                new[key] = (np.asarray(coefficients, dtype=np.float64), b)
        if new:
            results = self.folds.profiles([c for c, _ in new.values()], self.regularization,
                                          self.loss)
            for (key, (coefficients, b)), result in zip(new.items(), results):
                result = tuple(float(x) for x in result)
                self.cache[key] = result
                if math.isfinite(result[0]):
                    a = result[1]
                    self.history.append((float(coefficients[0] * a),
                                         a if self.nu_max else 0.0, b, result[0]))
                if self.on_new is not None:
                    self.on_new()
        return [self.cache[self._key(c)] for c in shapes]

    def free_polish(self, start: np.ndarray, max_evaluations: int
                    ) -> tuple[float, np.ndarray]:
        """Nelder-Mead over the free per-order shape (log r, log c_2/c_1 .. log c_nu/c_1),
        c_1 = 1, from the shape ``start``; returns (error, best shape). Log coordinates keep
        every coefficient positive, so the mixed kernel stays positive semi-definite."""
        start = np.asarray(start, dtype=np.float64)
        offset = 0 if self.has_k0 else 1  # without K^0, c0 is not a parameter

        def shape(x: np.ndarray) -> np.ndarray:
            c = np.empty(self.nu_max + 1)
            c[0] = math.exp(x[0]) if self.has_k0 else 0.0
            c[1] = 1.0
            c[2:] = np.exp(x[1 - offset:])
            return c

        x0 = np.log(np.concatenate([start[:1] / start[1] if self.has_k0 else [],
                                    start[2:] / start[1]]))
        ten = math.log(10)

        def objective(x: np.ndarray) -> float:
            if np.any(np.abs(x - x0) > 8 * ten):  # far outside any useful shape
                return math.inf
            return self.profile(shape(x))[0]

        simplex = np.vstack([x0] + [x0 + ten * np.eye(len(x0))[i] for i in range(len(x0))])
        found = scipy.optimize.minimize(objective, x0, method="Nelder-Mead",
                                        options={"initial_simplex": simplex,
                                                 "maxfev": max_evaluations,
                                                 "xatol": 1e-3, "fatol": 0.0})
        return float(found.fun), shape(found.x)


class _Checkpoint:
    """The shapes a search evaluated, kept by ``storage`` (``load() -> dict | None``,
    ``save(dict)``: a JSON-compatible dict): a search started again with the same inputs (the
    caller keys the storage by them) replays its deterministic steps from it and continues
    where it stopped. Saved by the searching process at most every ``interval`` seconds and
    when the search ends."""

    def __init__(self, storage: Any, problem: _Problem, interval: float = 2.0) -> None:
        self.storage, self.problem, self.interval = storage, problem, interval
        self.written = time.monotonic()
        try:
            saved = storage.load() or {}
            problem.cache.update({tuple(key): tuple(value)
                                  for key, value in saved.get("cache", [])})
            problem.history.extend(tuple(entry) for entry in saved.get("history", []))
        except (ValueError, KeyError, TypeError):
            pass  # unreadable: start afresh
        problem.on_new = self.maybe_write

    def maybe_write(self) -> None:
        if time.monotonic() - self.written >= self.interval:
            self.write()

    def write(self) -> None:
        self.storage.save({
            "cache": [[list(k), list(v)] for k, v in self.problem.cache.items()],
            "history": [list(entry) for entry in self.problem.history]})
        self.written = time.monotonic()


def _check_options(mode: str, mixing: str, loss: str, regularization: float) -> float:
    if mode not in ("kfold", "holdout"):
        raise ValueError(f"mode: expected 'kfold' or 'holdout', got {mode!r}")
    if mixing not in ("exponential", "free"):
        raise ValueError(f"mixing: expected 'exponential' or 'free', got {mixing!r}")
    if loss not in ("mae", "rmse"):
        raise ValueError(f"loss: expected 'mae' or 'rmse', got {loss!r}")
    return check_regularization(regularization)


def _splits(n: int, block: int, mode: str, folds: int, seed: int, holdout_fraction: float
            ) -> list[tuple[np.ndarray, np.ndarray]]:
    splits = (kfold_splits(n, folds, seed) if mode == "kfold"
              else holdout_split(n, holdout_fraction, seed))
    return [(_rows(t, block), _rows(v, block)) for t, v in splits]


def fit_mixing(K_nu: np.ndarray, y: Any, *, folds: int = 10, seed: int = 0,
               regularization: float = 1.0, mode: str = "kfold",
               holdout_fraction: float = 0.2, max_size: int | None = None, loss: str = "mae",
               log10_b: tuple[float, float, float] = (-2.0, 2.0, 0.5),
               log10_r: tuple[float, float, float] = (-3.0, 1.0, 1.0),
               polish: bool = True, max_polish: int = 60, blas_threads: int = 1,
               block: int = 1, mixing: str = "exponential", max_free: int = 200,
               checkpoint: Any = None
               ) -> MixingResult:
    """Choose c0, a, b (c_nu = a b^nu / nu!) by cross-validation on in-memory kernels.

    K_nu: (nu_max + 1, n, n) stacked training kernels; y: (n,) or (n, k) targets (already minus
    any baseline). ``mode``: "kfold" (``folds`` folds) or "holdout" (one split holding out
    ``holdout_fraction``). ``max_size``: search on a seeded random subset of at most this many
    structures. ``log10_b``: (start, stop, step) of the coarse grid in log10 b. ``log10_r``: the
    same for log10 of r = c0 / a relative to r_ref = mean diag(S(b)) / mean diag(K^0), where
    S(b) = sum_nu b^nu / nu! K^nu. ``polish``: Nelder-Mead from the best grid point. Returns the
    chosen coefficients and their pooled validation MAE and RMSE.

    ``checkpoint``: where the shapes evaluated so far are kept (an object with ``load()`` and
    ``save(dict)``); a search killed part-way and started again with the same inputs and
    checkpoint replays its steps from it and ends exactly where an uninterrupted one would.
    Identifying the inputs is the caller's job (``wkdist fit`` keys it by the store's
    parameters, the targets and the [fit] options).

    ``block``: matrix rows per structure (2 lambda + 1 for the equivariant kernels of a vector
    or tensor part, whose y is flattened the same way): folds, the subset and ``n_used`` count
    structures, so a structure's components are never split between training and validation;
    the MAE is then the mean norm of a structure's error (rotation invariant, see
    ``wkdist.krr.folds.errors``). K^0 of such kernels is zero, and c0 is then 0.

    ``mixing="free"``: the orders' coefficients c_1 .. c_nu_max are not tied to a b^nu / nu!
    (a departure from the paper's exponential mixing): from the exponential optimum,
    Nelder-Mead (at most ``max_free`` shapes) moves log(c0 / c_1) and log(c_nu / c_1) freely,
    with the scale still profiled exactly, so its CV error is never above the exponential
    one's. It contains every truncation nu_max' < nu_max as a limit.
    """
    start = time.perf_counter()
    K_nu = np.asarray(K_nu, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if K_nu.ndim != 3 or K_nu.shape[1] != K_nu.shape[2]:
        raise DataError(f"K_nu: expected shape (nu_max + 1, n, n), got {K_nu.shape}")
    rows = K_nu.shape[1]
    if y.shape[:1] != (rows,) or y.ndim not in (1, 2):
        raise DataError(f"y: expected shape ({rows},) or ({rows}, k), got {y.shape}")
    if block < 1 or rows % block:
        raise DataError(f"block: expected a divisor of the {rows} kernel rows, got {block!r}")
    n = rows // block
    if not (np.all(np.isfinite(K_nu)) and np.all(np.isfinite(y))):
        raise DataError("K_nu and y must be finite")
    regularization = _check_options(mode, mixing, loss, regularization)
    if max_size is not None and n > max_size:
        subset = _rows(np.sort(np.random.default_rng(seed).choice(n, size=max_size,
                                                                  replace=False)), block)
        K_nu, y, n = K_nu[:, subset][:, :, subset], y[subset], max_size
    splits = _splits(n, block, mode, folds, seed, holdout_fraction)
    backend = LocalFolds(K_nu, y, splits, block=block, threads=blas_threads)
    return _search(backend, K_nu.shape[0] - 1, n, len(splits), start=start,
                   regularization=regularization, mode=mode, loss=loss, log10_b=log10_b,
                   log10_r=log10_r, polish=polish, max_polish=max_polish, mixing=mixing,
                   max_free=max_free, checkpoint=checkpoint)


def fit_mixing_store(store: Any, name: str, y: Any, *, client: Any, max_size: int,
                     folds: int = 10, seed: int = 0, regularization: float = 1.0,
                     mode: str = "kfold", holdout_fraction: float = 0.2, loss: str = "mae",
                     block: int = 1, mixing: str = "exponential",
                     checkpoint: Any = None, worker_cores: int | None = None,
                     **options: Any) -> MixingResult:
    """``fit_mixing`` on the first ``max_size`` structures of kernel array ``name`` of a
    store (rows in the store's order: a seeded random order for ``wkdist`` data sets), with
    every eigendecomposition and Cholesky on the workers of ``client``
    (``wkdist.krr.folds.StoreFolds``): the driver holds no kernel block. ``max_size`` is
    lowered, with a warning, to what one fold task fits in on the smallest worker. ``y``: the
    targets of all training rows (only the first ``n_used`` are used). ``options``: the grid
    and polish options of ``fit_mixing``. Same result as ``fit_mixing`` on the same block to
    the last bits of the eigensolver (which depend on the BLAS threads). ``worker_cores``: the
    cores a worker process owns, when more than its Dask threads (its fold tasks share them
    as BLAS threads)."""
    from ..tiled.store import read_kernels

    start = time.perf_counter()
    y = np.asarray(y, dtype=np.float64)
    regularization = _check_options(mode, mixing, loss, regularization)
    karr = read_kernels(store, name)
    depth, total_rows = karr.shape[0], karr.shape[1]
    if block < 1 or total_rows % block:
        raise DataError(f"block: expected a divisor of the {total_rows} kernel rows, "
                        f"got {block!r}")
    if y.shape[:1] != (total_rows,) or y.ndim not in (1, 2) or not np.all(np.isfinite(y)):
        raise DataError(f"y: expected finite values of shape ({total_rows},) or "
                        f"({total_rows}, k), got {y.shape}")
    n = min(total_rows // block, max_size)
    fits = rows_that_fit(client, n * block, block) // block
    if fits < n:
        log.warning("search: %d structures need about %.1f GB per fold task, more than %.0f %% "
                    "of the smallest worker's memory limit allows; searching on the first %d",
                    n, task_bytes(n * block) / 1e9, 100 * MEMORY_SHARE, fits)
        n = fits
    rows = n * block
    splits = _splits(n, block, mode, min(folds, n), seed, holdout_fraction)
    backend = StoreFolds(str(getattr(store, "path", store)), name, rows, y[:rows], splits,
                         client=client, block=block, cores=worker_cores)
    return _search(backend, depth - 1, n, len(splits), start=start,
                   regularization=regularization, mode=mode, loss=loss, mixing=mixing,
                   checkpoint=checkpoint, **options)


def _search(backend: Any, nu_max: int, n: int, n_folds: int, *, start: float,
            regularization: float, mode: str, loss: str,
            log10_b: tuple[float, float, float] = (-2.0, 2.0, 0.5),
            log10_r: tuple[float, float, float] = (-3.0, 1.0, 1.0),
            polish: bool = True, max_polish: int = 60, mixing: str = "exponential",
            max_free: int = 200, checkpoint: Any = None) -> MixingResult:
    problem = _Problem(backend, nu_max, regularization, loss)
    saver = None if checkpoint is None else _Checkpoint(checkpoint, problem)
    diag = backend.mean_diagonal()

    def log_r_ref(log_b: float) -> float:
        if not problem.has_k0 or diag[0] <= 0:
            return 0.0
        s = sum(math.exp(nu * log_b) / math.factorial(nu) * diag[nu]
                for nu in range(1, nu_max + 1))
        return math.log(max(s, 1e-300) / diag[0])

    b_grid = np.arange(log10_b[0], log10_b[1] + 1e-9, log10_b[2]) * math.log(10)
    r_grid = np.arange(log10_r[0], log10_r[1] + 1e-9, log10_r[2]) * math.log(10)
    if nu_max == 0:
        b_grid, r_grid = np.array([0.0]), np.array([0.0])
    elif not problem.has_k0:
        r_grid = np.array([0.0])
    # the coarse grid: every shape at once (in parallel on workers), the best in grid order
    points = [(log_r_ref(log_b) + rel, float(log_b)) for log_b in b_grid for rel in r_grid]
    best = (math.inf, 0.0, 0.0)
    for (log_r, log_b), (value, _, _) in zip(points, problem.evaluate_many(points)):
        if value < best[0]:
            best = (value, log_r, log_b)

    if polish and nu_max >= 1 and math.isfinite(best[0]):
        if problem.has_k0:
            x0 = np.array([best[1], best[2]])
            simplex = np.array([x0, x0 + [math.log(10), 0], x0 + [0, 0.5 * math.log(10)]])
            ten = math.log(10)
            b_lo, b_hi = b_grid[0] - 3 * ten, b_grid[-1] + 3 * ten

            def objective(x: np.ndarray) -> float:
                log_r_, log_b_ = float(x[0]), float(x[1])
                rel_ = log_r_ - log_r_ref(log_b_)
                if not (b_lo <= log_b_ <= b_hi
                        and r_grid[0] - 3 * ten <= rel_ <= r_grid[-1] + 3 * ten):
                    return math.inf
                return problem.evaluate(log_r_, log_b_)[0]

            found = scipy.optimize.minimize(
                objective, x0, method="Nelder-Mead",
                options={"initial_simplex": simplex, "maxfev": max_polish,
                         "xatol": 1e-3, "fatol": 0.0})
            candidate = (float(found.fun), float(found.x[0]), float(found.x[1]))
        else:
            step = log10_b[2] * math.log(10)
            found = scipy.optimize.minimize_scalar(
                lambda lb: problem.evaluate(0.0, float(lb))[0],
                bounds=(best[2] - step, best[2] + step), method="bounded",
                options={"xatol": 1e-4, "maxiter": max_polish})
            candidate = (float(found.fun), 0.0, float(found.x))
        if candidate[0] < best[0]:
            best = candidate

    value, log_r, log_b = best
    if not math.isfinite(value):
        raise NotPositiveDefiniteError("no mixing gave a positive definite fold matrix; "
                                       "check the kernels (K^nu must be PSD)")
    if saver is not None:
        saver.write()  # the grid and the polish are done
    shape = problem.shape(log_r, log_b)
    if mixing == "free" and nu_max >= 2:
        free_value, free_shape = problem.free_polish(shape, max_free)
        if free_value < value:
            shape = free_shape
    _, a, _ = problem.profile(shape)
    if saver is not None:
        saver.write()
    coefficients = shape * a
    # report the errors of the final fit's own algebra (a Cholesky per fold)
    mae, rmse = backend.cv_errors(coefficients, regularization)
    if nu_max == 0:
        c0, a_out, b_out = float(coefficients[0]), 0.0, 0.0
    elif mixing == "free":
        c0, a_out, b_out = float(coefficients[0]), float(a), None
    else:
        c0, a_out, b_out = float(coefficients[0]), float(a), math.exp(log_b)
    return MixingResult(
        c0=c0, a=a_out, b=b_out, coefficients=tuple(float(c) for c in coefficients),
        regularization=float(regularization), cv_mae=float(mae), cv_rmse=float(rmse),
        loss=loss, mode=mode, folds=n_folds, n_used=n, evaluations=len(problem.cache),
        seconds=time.perf_counter() - start, mixing=mixing, history=problem.history)


# --------------------------------------------------------------------------- species baseline


def element_counts(symbol_lists: Sequence[Sequence[str]], symbols: Sequence[str] | None = None
                   ) -> tuple[np.ndarray, list[str]]:
    """(counts (n, n_species), symbols) from each structure's list of element symbols;
    ``symbols`` defaults to the sorted set of elements present."""
    if symbols is None:
        symbols = sorted({s for structure in symbol_lists for s in structure})
    index = {s: i for i, s in enumerate(symbols)}
    counts = np.zeros((len(symbol_lists), len(symbols)), dtype=np.float64)
    for row, structure in enumerate(symbol_lists):
        for s in structure:
            if s not in index:
                raise DataError(f"element {s!r} of structure {row} is not among {list(symbols)}")
            counts[row, index[s]] += 1
    return counts, list(symbols)


def species_baseline(counts: Any, y: Any, symbols: Sequence[str]) -> dict[str, float]:
    """Per-element weights w minimizing ||counts @ w - y||_2 on the training targets (minimum
    norm when elements are collinear). The KRR then fits y - counts @ w."""
    counts = np.asarray(counts, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != len(symbols) or counts.shape[0] != y.shape[0]:
        raise DataError(f"counts: expected shape ({y.shape[0]}, {len(symbols)}), "
                        f"got {counts.shape}")
    if y.ndim != 1:
        raise DataError(f"a per-element baseline needs a scalar target, got shape {y.shape}")
    with threadpool_limits(1):
        weights, *_ = np.linalg.lstsq(counts, y, rcond=None)
    return {str(s): float(w) for s, w in zip(symbols, weights)}


def baseline_values(counts: Any, baseline: dict[str, float] | None,
                    symbols: Sequence[str]) -> np.ndarray:
    """b(x) = sum over the atoms of x of baseline[element] (zeros for baseline None)."""
    counts = np.asarray(counts, dtype=np.float64)
    if baseline is None:
        return np.zeros(counts.shape[0])
    missing = [s for i, s in enumerate(symbols) if s not in baseline and counts[:, i].any()]
    if missing:
        raise DataError(f"the baseline has no weight for element(s) {missing}")
    return counts @ np.array([baseline.get(s, 0.0) for s in symbols], dtype=np.float64)
