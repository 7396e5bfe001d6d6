"""``wkdist tune``: choose the kernel's own hyperparameters by cross-validation.

A search over the [kernel] settings named in ``[tune]`` (gaussian_width, decay_length, cutoff,
cutoff_smoothing, radial_weight, nu_max, lambda_max, ...), each a list of values or a range::

    [tune]
    gaussian_width = {range = [0.02, 0.2], scale = "log", points = 4}
    decay_length = [1.0, 1.5, 2.0]
    n_search = 400        # structures drawn (seeded) from the training set
    folds = 5
    seed = 0
    max_candidates = 30   # budget (and/or max_seconds); resumed runs count what is done
    refine_rounds = 2

Everything happens inside the training set: ``n_search`` structures are drawn from it with
``[tune] seed``; the per-element baseline is fitted on them (``[fit] baseline``), and every
candidate is scored by the pooled k-fold CV error of the mixing (c0, a, b) that ``fit_mixing``
chooses on its kernels, exactly as ``wkdist fit`` chooses it (``[fit] regularization``, and
``[fit] mixing``: with ``"free"`` the per-order coefficients, whose b is then NaN in tune.csv).

Scalars are scored by the CV MAE. Vector and tensor targets are fitted part by part as in
``wkdist fit`` (each irreducible part lambda its own (a, b), with folds that keep a structure's
components together) and scored by the mean norm of a structure's CV error, which does not
depend on the frame the data are given in: for vectors the Euclidean norm (what ``fit_mixing``
minimizes for the lambda = 1 part); for tensors the Frobenius norm of the 3 x 3 error, which is
sqrt(e_0^2 + |e_2|^2) of the lambda = 0 and lambda = 2 parts' errors because the map to the
parts is an isometry (``wkdist.engine.targets``). ``cv_rmse`` is then the root mean square over the
parts' components.

Kernels go through the same tiled Dask graph as ``wkdist kernels`` (``compute_kernels``), into
one store per distinct kernel setting under ``DIR/stores/<hash>``. When ``nu_max`` is searched,
every store is computed at the largest nu_max and a candidate with a smaller one reads
``K[:nu_max + 1]`` (the K^nu of lower orders do not depend on nu_max, up to rounding), so
candidates that differ only in nu_max share one kernel computation.

Strategy (deterministic given the seed and the kernels):

1. Coarse grid: the Cartesian product of every list and of ``points`` values per range (evenly
   spaced in log or linear scale, ends included; an integer range takes every integer).
2. Local refinement (compass search) on the float ranges: ``refine_rounds`` rounds; each
   halves the step of every range parameter (in its scale: log space for ``scale = "log"``)
   and tries the best point so far moved by +- one step along each such parameter, within the
   range. Lists are searched exactly and not refined.

The budget (``max_candidates``, ``max_seconds``) stops the search early; what was evaluated
is kept. Every evaluated candidate is appended to ``DIR/tune_state.json`` (written atomically:
temporary file, fsync, rename) and ``DIR/tune.csv`` before the next starts, so a search that
is interrupted and rerun with the same configuration resumes, and no candidate is evaluated
twice. ``DIR/best.toml`` (a complete config with the winning [kernel], which ``wkdist run``
accepts unchanged) and ``DIR/tune.png`` are written when the search ends; ``best.toml`` exists
only for a finished search.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from ..engine.settings import KernelSettings
from ..engine.targets import lambdas_of, target_kind, to_spherical
from ..errors import ConfigError, DataError, SettingsError, StoreError, WkdistError
from .config import Config, SearchSpace, StoreConfig, TuneConfig, load_config
from .dataset import Dataset
from .progress import format_duration, say

__all__ = ["coarse_values", "check_space", "search_dataset", "run_tune", "config_toml",
           "STATE_FILE"]

STATE_FILE = "tune_state.json"
STATE_FORMAT = 1
RESULT_COLUMNS = ("cv_mae", "cv_rmse", "c0", "a", "b", "kernels", "kernel_s", "fit_s",
                  "seconds", "error")

log = logging.getLogger("wkdist")


def _round(value: float) -> float:
    """Six significant digits: readable values and stable candidate identities."""
    return float(f"{value:.6g}")


# --------------------------------------------------------------------------- the search space


def _to_scale(space: SearchSpace, value: float) -> float:
    return math.log(value) if space.scale == "log" else value


def _from_scale(space: SearchSpace, u: float) -> float:
    return math.exp(u) if space.scale == "log" else u


def coarse_values(space: SearchSpace) -> list[Any]:
    """The coarse-grid values of one parameter."""
    if space.values is not None:
        return list(space.values)
    if space.kind == "int":
        return list(range(int(math.ceil(space.low)), int(math.floor(space.high)) + 1))
    lo, hi = _to_scale(space, space.low), _to_scale(space, space.high)
    return [_round(_from_scale(space, u)) for u in np.linspace(lo, hi, space.points)]


def _grid(tune: TuneConfig) -> list[dict[str, Any]]:
    names = list(tune.space)
    return [dict(zip(names, combo))
            for combo in itertools.product(*(coarse_values(tune.space[n]) for n in names))]


def _describe_combo(combo: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in combo.items())


def check_space(base: KernelSettings, tune: TuneConfig) -> list[dict[str, Any]]:
    """The coarse grid, after checking every value (and range end) against the engine.

    Raises ConfigError naming the first value or combination KernelSettings refuses.
    """
    if not tune.space:
        names = ", ".join(n for n in KernelSettings.field_names())
        raise ConfigError(f"[tune]: expected at least one kernel setting to search ({names}), "
                          "got none")
    for name, space in tune.space.items():
        ends = coarse_values(space) if space.values is not None else [space.low, space.high]
        for value in ends:
            value = int(value) if space.kind == "int" else value
            try:
                dataclasses.replace(base, **{name: value})
            except SettingsError as error:
                raise ConfigError(f"[tune] {name}: the kernel refuses {value!r} ({error})") \
                    from None
    grid = _grid(tune)
    for combo in grid:
        try:
            dataclasses.replace(base, **combo)
        except SettingsError as error:
            raise ConfigError(f"[tune] {_describe_combo(combo)}: the kernel refuses this "
                              f"combination ({error})") from None
    return grid


def _key(settings: KernelSettings) -> str:
    return json.dumps(settings.to_dict(), sort_keys=True)


def _store_nu_max(tune: TuneConfig, settings: KernelSettings) -> int:
    space = tune.space.get("nu_max")
    if space is None:
        return settings.nu_max
    return int(max(coarse_values(space)))


# --------------------------------------------------------------------------- data


def search_dataset(dataset: Dataset, n_search: int, seed: int) -> Dataset:
    """``n_search`` structures drawn (seeded) from the training set. The store's test part
    holds one of them (a store needs a test set; it costs n_search pairs, never used)."""
    if n_search > dataset.n_train:
        raise ConfigError(f"[tune] n_search: expected at most the {dataset.n_train} training "
                          f"structures, got {n_search}")
    rows = np.random.default_rng(seed).permutation(dataset.n_train)[:n_search]
    frames = [dataset.train_frames[i] for i in rows]
    return Dataset(train_frames=frames, test_frames=frames[:1],
                   y_train=dataset.y_train[rows], y_test=dataset.y_train[rows[:1]],
                   train_index=dataset.train_index[rows], test_index=dataset.train_index[rows[:1]],
                   target=dataset.target, unit=dataset.unit)


def _space_dict(tune: TuneConfig) -> dict[str, Any]:
    return {name: ({"values": list(s.values)} if s.values is not None else
                   {"range": [s.low, s.high], "scale": s.scale, "points": s.points})
            for name, s in tune.space.items()}


def _search_key(config: Config, tune: TuneConfig, data: Dataset) -> str:
    fit = config.sections["fit"]
    blob = {"space": _space_dict(tune), "n_search": tune.n_search, "folds": tune.folds,
            "seed": tune.seed, "refine_rounds": tune.refine_rounds,
            "kernel": config.kernel.to_dict(), "regularization": fit.regularization,
            "baseline": fit.baseline, "data": data.fingerprint()}
    if fit.mixing != "exponential":  # exponential searches keep the key they always had
        blob["mixing"] = fit.mixing
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- state and outputs


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_state(out: Path, key: str) -> dict[str, Any] | None:
    path = out / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: unreadable search state ({error}); remove it or use "
                          "another --out") from None
    if state.get("format") != STATE_FORMAT or state.get("key") != key:
        raise ConfigError(f"{path}: holds a search of another configuration ([tune], [kernel], "
                          "[fit] or the data differ); use another --out")
    return state


def _csv_text(rows: list[dict[str, Any]]) -> str:
    columns = ["candidate", "phase", *KernelSettings.field_names(), *RESULT_COLUMNS]
    if any("a_lambda2" in row for row in rows):  # tensors: c0, a, b above are lambda = 0's
        columns += ["a_lambda2", "b_lambda2"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def config_toml(config: Config, kernel: KernelSettings, *, store: str = "store",
                header: Iterable[str] = ()) -> str:
    """A complete configuration (TOML text): ``config`` as its file gave it, with ``kernel`` as
    [kernel] (every setting written out), the store at ``store`` (relative to the new file),
    data paths made absolute, and neither [tune] nor [fit] coefficients (chosen again by CV for
    the new kernel). Every other key is kept as it was."""
    document = copy.deepcopy(dict(config.document))
    document.pop("tune", None)
    data = dict(document.get("data", {}))
    for key in ("path", "train", "test"):
        if key in data:
            data[key] = str(Path(getattr(config.data, key)).resolve())
    document["data"] = data
    document["kernel"] = kernel.to_dict()
    document["store"] = {**document.get("store", {}), "path": store}
    if "fit" in document:
        document["fit"] = {k: v for k, v in document["fit"].items() if k != "coefficients"}
    comments = "".join(f"# {line}\n" for line in header)
    return comments + tomli_w.dumps(document)


def _plot(path: Path, rows: list[dict[str, Any]], tune: TuneConfig, unit: str | None, *,
          score: str = "CV MAE") -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    good = [r for r in rows if isinstance(r["cv_mae"], float) and math.isfinite(r["cv_mae"])]
    names = list(tune.space)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    best = min(good, key=lambda r: r["cv_mae"]) if good else None
    for ax, name in zip(axes[0], names):
        space = tune.space[name]
        xs = [r[name] for r in good]
        ys = [r["cv_mae"] for r in good]
        if space.kind == "str":
            labels = list(dict.fromkeys(coarse_values(space)))
            ax.set_xticks(range(len(labels)), labels)
            xs = [labels.index(x) if x in labels else -1 for x in xs]
        ax.scatter(xs, ys, s=18, color="tab:blue", alpha=0.7, label="candidates")
        profile: dict[Any, float] = {}  # the best CV MAE at each value of this parameter
        for x, y in zip(xs, ys):
            profile[x] = min(y, profile.get(x, math.inf))
        if len(profile) > 1:
            px = sorted(profile)
            ax.plot(px, [profile[x] for x in px], color="tab:blue", lw=1, alpha=0.6,
                    label="best at this value")
        if best is not None:
            bx = best[name] if space.kind != "str" else labels.index(best[name])
            ax.scatter([bx], [best["cv_mae"]], s=60, color="tab:red", marker="*", label="best")
        if space.kind == "float" and space.scale == "log" and all(x > 0 for x in xs):
            ax.set_xscale("log")
            ticks = coarse_values(space)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(name)
        ax.set_ylabel(f"{score} ({unit})" if unit else score)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"wkdist tune: {len(good)} candidates, n_search {tune.n_search}, "
                 f"{tune.folds}-fold CV")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- the search


def _score_name(kind: str) -> str:
    return "CV MAE" if kind == "scalar" else "CV mean error norm"


def _cv_residuals(kernels: np.ndarray, y: np.ndarray, coefficients: Any, *, folds: int,
                  seed: int, regularization: float, block: int) -> np.ndarray:
    """Validation residuals (n, block) per structure of the given mixing, on the k-fold split
    that ``fit_mixing`` uses (a Cholesky per fold)."""
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    from ..krr.hyper import kfold_splits

    def rows(structures: np.ndarray) -> np.ndarray:
        return (structures[:, None] * block + np.arange(block)).reshape(-1)

    n = len(y) // block
    out = np.empty((n, block))
    with threadpool_limits(1):
        mixed = np.tensordot(np.asarray(coefficients, dtype=np.float64), kernels, axes=1)
        for train, val in kfold_splits(n, folds, seed):
            t, v = rows(train), rows(val)
            matrix = mixed[np.ix_(t, t)] + regularization * np.eye(len(t))
            alpha = scipy.linalg.solve(matrix, y[t], assume_a="pos", check_finite=False)
            out[val] = (mixed[np.ix_(v, t)] @ alpha - y[v]).reshape(-1, block)
    return out


class _Budget(Exception):
    """The budget is spent: stop evaluating new candidates."""


class _Search:
    def __init__(self, config: Config, tune: TuneConfig, data: Dataset, out: Path, key: str,
                 state: dict[str, Any] | None, client: Any, numba_threads: int,
                 quiet: bool) -> None:
        from ..krr.hyper import element_counts, species_baseline
        from ..krr.model import baseline_values

        self.config, self.tune, self.data, self.out = config, tune, data, out
        self.client, self.numba_threads, self.quiet = client, numba_threads, quiet
        self.fit = config.sections["fit"]
        self.state = state or {"format": STATE_FORMAT, "key": key, "candidates": [],
                               "finished": False, "inputs": {
                                   "space": _space_dict(tune), "n_search": tune.n_search,
                                   "folds": tune.folds, "seed": tune.seed,
                                   "refine_rounds": tune.refine_rounds,
                                   "kernel": config.kernel.to_dict(),
                                   "regularization": self.fit.regularization,
                                   "baseline": self.fit.baseline,
                                   # input-file indices (QM9: Index) of the search structures
                                   "search_index": [int(i) for i in data.train_index]}}
        self.rows: list[dict[str, Any]] = self.state["candidates"]
        self.done = {_key(KernelSettings(**{k: r[k] for k in KernelSettings.field_names()})): r
                     for r in self.rows}
        self.kind = target_kind(data.y_train)
        parts = to_spherical(data.y_train, self.kind)
        baseline = None
        if self.fit.baseline and 0 in parts:  # as in `wkdist fit`: the lambda = 0 part only
            counts, symbols = element_counts([a.get_chemical_symbols()
                                              for a in data.train_frames])
            baseline = species_baseline(counts, parts[0], symbols)
        # per part, the flat right-hand side: row = structure * (2 lambda + 1) + mu
        self.y = {lam: (values - baseline_values(data.train_frames, baseline) if lam == 0
                        else values.reshape(-1)) for lam, values in parts.items()}
        self.started = time.perf_counter()
        self.new = 0
        self.new_seconds = 0.0
        self.planned = 0  # candidates the strategy may still ask for (for the ETA)

    # ----------------------------------------------------------------- budget and progress

    def spent(self) -> float:
        return float(sum(r["seconds"] for r in self.rows))

    def check_budget(self) -> None:
        tune = self.tune
        if tune.max_candidates is not None and len(self.rows) >= tune.max_candidates:
            raise _Budget(f"max_candidates = {tune.max_candidates} reached")
        if tune.max_seconds is not None and self.spent() >= tune.max_seconds:
            raise _Budget(f"max_seconds = {tune.max_seconds:g} reached "
                          f"({self.spent():.0f} s spent)")

    def best(self) -> dict[str, Any] | None:
        good = [r for r in self.rows if math.isfinite(r["cv_mae"])]
        return min(good, key=lambda r: r["cv_mae"]) if good else None

    def eta(self) -> str:
        if not self.new:
            return "unknown"
        left = self.planned
        if self.tune.max_candidates is not None:
            left = min(left, self.tune.max_candidates - len(self.rows))
        seconds = max(left, 0) * self.new_seconds / self.new
        if self.tune.max_seconds is not None:
            seconds = min(seconds, max(self.tune.max_seconds - self.spent(), 0.0))
        return format_duration(seconds)

    # ----------------------------------------------------------------- one candidate

    def store_path(self, settings: KernelSettings) -> Path:
        digest = hashlib.sha256(_key(settings).encode()).hexdigest()[:16]
        return self.out / "stores" / digest

    def kernels(self, settings: KernelSettings) -> tuple[dict[int, np.ndarray], str, float]:
        """{lambda: K^nu of the search structures, nu = 0..settings.nu_max}, how, seconds."""
        from ..errors import DamagedTileError
        from ..tiled.checkpoint import unmark
        from ..tiled.store import read_kernels, strict_reads
        from ..tiled.tiles import kernel_array
        from .compute import compute_kernels

        store_settings = dataclasses.replace(settings,
                                             nu_max=_store_nu_max(self.tune, settings))
        path = self.store_path(store_settings)
        config = dataclasses.replace(
            self.config, kernel=store_settings, store=StoreConfig(path=path),
            sections={**self.config.sections, "kernel": store_settings,
                      "store": StoreConfig(path=path)})
        wall, computed = 0.0, 0
        for _ in range(3):  # a tile found damaged on read is unmarked and recomputed
            summary = compute_kernels(config, client=self.client,
                                      numba_threads=self.numba_threads, progress=False,
                                      dataset=self.data)
            wall, computed = wall + summary.wall_s, computed + summary.computed_tiles
            try:
                with strict_reads():
                    kernels = {lam: read_kernels(path, kernel_array("train", lam))
                               [: settings.nu_max + 1] for lam in self.y}
                break
            except DamagedTileError as error:
                log.warning("%s; recomputing it", error)
                unmark(error.marker)
        else:
            raise StoreError(f"{path}: kernel tiles stay damaged after recomputing them twice "
                             "(a failing disk?)")
        return kernels, "computed" if computed else "reused", wall

    def evaluate(self, settings: KernelSettings, phase: str) -> dict[str, Any]:
        from ..krr.hyper import fit_mixing

        key = _key(settings)
        if key in self.done:
            return self.done[key]
        self.check_budget()
        if not self.new:
            (self.out / "best.toml").unlink(missing_ok=True)  # no longer a finished search
            self.state["finished"] = False
        start = time.perf_counter()
        kernels, how, kernel_s = self.kernels(settings)
        mark = time.perf_counter()
        row: dict[str, Any] = {"candidate": len(self.rows), "phase": phase,
                               **settings.to_dict()}
        try:
            results = {lam: fit_mixing(kernels[lam], y, folds=self.tune.folds,
                                       seed=self.tune.seed,
                                       regularization=self.fit.regularization, mode="kfold",
                                       block=2 * lam + 1, mixing=self.fit.mixing)
                       for lam, y in self.y.items()}
            first = results[min(results)]

            def b_of(result: Any) -> float:  # free mixing has no b
                return math.nan if result.b is None else result.b

            row.update(cv_mae=first.cv_mae, cv_rmse=first.cv_rmse, c0=first.c0, a=first.a,
                       b=b_of(first), error="",
                       coefficients={str(lam): list(r.coefficients) for lam, r in results.items()})
            if self.kind == "tensor":
                row.update(self.tensor_score(kernels, results), a_lambda2=results[2].a,
                           b_lambda2=b_of(results[2]))
        except (WkdistError, np.linalg.LinAlgError) as error:  # e.g. no PD mixing
            row.update(cv_mae=math.inf, cv_rmse=math.inf, c0=math.nan, a=math.nan, b=math.nan,
                       error=str(error).splitlines()[0])
            if self.kind == "tensor":
                row.update(a_lambda2=math.nan, b_lambda2=math.nan)
        seconds = time.perf_counter() - start
        row.update(kernels=how, kernel_s=kernel_s, fit_s=time.perf_counter() - mark,
                   seconds=seconds)
        self.rows.append(row)
        self.done[key] = row
        self.new += 1
        self.new_seconds += seconds
        self.planned = max(self.planned - 1, 0)
        self.save()
        if not self.quiet:
            best = self.best()
            unit = f" {self.data.unit}" if self.data.unit else ""
            searched = ", ".join(f"{n} {row[n]!r}" for n in self.tune.space)
            say(f"tune: candidate {len(self.rows)} ({phase}) {searched}: "
                 f"{_score_name(self.kind)} "
                 f"{row['cv_mae']:.5g}{unit} (kernels {how} {kernel_s:.1f} s, fit "
                 f"{row['fit_s']:.1f} s); best {best['cv_mae'] if best else math.inf:.5g}"
                 f"{unit}; done {len(self.rows)}, ETA {self.eta()}")
        return row

    def tensor_score(self, kernels: dict[int, np.ndarray], results: dict[int, Any]
                     ) -> dict[str, float]:
        """cv_mae: mean Frobenius norm of a tensor's CV error, from its two parts' residuals
        on the same folds; cv_rmse: root mean square over the six part components."""
        errors = [_cv_residuals(kernels[lam], self.y[lam], results[lam].coefficients,
                                folds=self.tune.folds, seed=self.tune.seed,
                                regularization=self.fit.regularization, block=2 * lam + 1)
                  for lam in (0, 2)]
        squared = np.sum(np.concatenate(errors, axis=1) ** 2, axis=1)
        return {"cv_mae": float(np.mean(np.sqrt(squared))),
                "cv_rmse": float(np.sqrt(np.mean(squared) / 6))}

    def save(self) -> None:
        _write_atomic(self.out / "tune.csv", _csv_text(self.rows))
        _write_atomic(self.out / STATE_FILE, json.dumps(_jsonable(self.state), indent=1))

    # ----------------------------------------------------------------- the strategy

    def run(self, grid: list[dict[str, Any]]) -> str:
        base = self.config.kernel
        refinable = [s for s in self.tune.space.values() if s.refinable]
        self.planned = (sum(_key(dataclasses.replace(base, **c)) not in self.done for c in grid)
                        + 2 * len(refinable) * self.tune.refine_rounds)
        try:
            for combo in grid:
                self.evaluate(dataclasses.replace(base, **combo), "grid")
            steps = {s.name: (_to_scale(s, s.high) - _to_scale(s, s.low)) / (s.points - 1)
                     for s in refinable}
            for round_ in range(self.tune.refine_rounds):
                center = self.best()
                if center is None:
                    break
                for space in refinable:
                    steps[space.name] /= 2
                for space in refinable:
                    u = _to_scale(space, center[space.name])
                    lo, hi = _to_scale(space, space.low), _to_scale(space, space.high)
                    for sign in (-1, 1):
                        v = u + sign * steps[space.name]
                        if not lo - 1e-9 <= v <= hi + 1e-9:
                            self.planned = max(self.planned - 1, 0)
                            continue
                        values = {k: center[k] for k in KernelSettings.field_names()}
                        values[space.name] = _round(_from_scale(space, min(max(v, lo), hi)))
                        try:
                            settings = KernelSettings(**values)
                        except SettingsError:
                            self.planned = max(self.planned - 1, 0)
                            continue  # e.g. smoothing wider than a searched cutoff
                        self.evaluate(settings, f"refine{round_ + 1}")
        except _Budget as stop:
            return f"budget: {stop}"
        return "complete"


def _jsonable(value: Any) -> Any:
    """JSON without NaN/Infinity (strict parsers refuse them): non-finite floats as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if value in ("inf", "nan", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def run_tune(config: Config, out: Path, *, quiet: bool = False) -> dict[str, Any]:
    """The whole search; returns a summary. Validates everything before touching ``out``."""
    from ..tiled.lock import hold
    from .cluster import open_cluster
    from .dataset import load_dataset

    tune: TuneConfig = config.sections["tune"]
    fit = config.sections["fit"]
    grid = check_space(config.kernel, tune)
    if config.data.n_train is not None and tune.n_search > config.data.n_train:
        raise ConfigError(f"[tune] n_search: expected at most n_train = {config.data.n_train}, "
                          f"got {tune.n_search}")
    if tune.n_search > fit.max_search:
        raise ConfigError(f"[tune] n_search: expected at most [fit] max_search = "
                          f"{fit.max_search} (the search holds its kernels in memory), "
                          f"got {tune.n_search}")
    if tune.folds > tune.n_search:
        raise ConfigError(f"[tune] folds: expected at most n_search = {tune.n_search}, "
                          f"got {tune.folds}")
    dataset = load_dataset(config.data)
    kind = target_kind(dataset.y_train)
    needed = max(lambdas_of(kind))
    for combo in grid:
        lambda_max = combo.get("lambda_max", config.kernel.lambda_max)
        if lambda_max < needed:
            where = "[tune]" if "lambda_max" in combo else "[kernel]"
            raise ConfigError(f"{where} lambda_max: a {kind} target {dataset.target!r} needs "
                              f"lambda_max >= {needed}, got {lambda_max}")
    data = search_dataset(dataset, tune.n_search, tune.seed)
    key = _search_key(config, tune, data)
    state = _read_state(out, key)
    if state is not None:
        state = _from_json(state)
    out.mkdir(parents=True, exist_ok=True)
    say(f"tune: {len(grid)} grid candidates over {', '.join(tune.space)}; n_search "
         f"{tune.n_search} of {dataset.n_train} training structures, {tune.folds}-fold CV"
         + (f"; resuming with {len(state['candidates'])} evaluated" if state else ""))
    begin = time.perf_counter()
    # one search per output directory (its state file and candidate stores live there)
    with (hold(out, what="output directory", command="wkdist tune"),
          open_cluster(config.compute) as cluster):
        if not quiet:
            say(*cluster.lines())
        search = _Search(config, tune, data, out, key, state, cluster.client,
                         cluster.numba_threads, quiet)
        stop = search.run(grid)
    best = search.best()
    if best is None:
        raise DataError("wkdist tune: no candidate gave a usable fit (see tune.csv)")
    winner = KernelSettings(**{k: best[k] for k in KernelSettings.field_names()})
    unit = f" {data.unit}" if data.unit else ""
    score = _score_name(kind)
    plotted = _plot(out / "tune.png", search.rows, tune, data.unit, score=score)
    if fit.mixing == "free":
        mixing = "; ".join(f"lambda = {lam}: coefficients "
                           + ", ".join(f"{c:.6g}" for c in values)
                           for lam, values in best["coefficients"].items())
    else:
        mixing = f"c0 {best['c0']:.6g}, a {best['a']:.6g}, b {best['b']:.6g}"
        if kind == "tensor":
            mixing = (f"lambda = 0: {mixing}; lambda = 2: a {best['a_lambda2']:.6g}, "
                      f"b {best['b_lambda2']:.6g}")
    header = [f"wkdist tune: best of {len(search.rows)} candidates ({stop}), {score} "
              f"{best['cv_mae']:.6g}{unit} on {tune.n_search} training structures, "
              f"{tune.folds}-fold", f"chosen mixing on those: {mixing}",
              f"searched: {', '.join(tune.space)}; see tune.csv beside this file"]
    text = config_toml(config, winner, header=header)
    search.save()
    _write_atomic(out / "best.toml", text)
    load_config(out / "best.toml")  # what we hand out must load
    search.state["finished"] = True
    search.state["stop"] = stop
    search.save()
    say(f"tune: {stop}; {len(search.rows)} candidates ({search.new} evaluated now) in "
         f"{format_duration(time.perf_counter() - begin)}",
         "tune: best " + ", ".join(f"{n} {best[n]!r}" for n in tune.space)
         + f": {score} {best['cv_mae']:.6g}{unit}",
         f"table: {out / 'tune.csv'}", f"best config: {out / 'best.toml'}",
         f"plot: {out / 'tune.png'}" if plotted else "plot: matplotlib not installed")
    return {"best": best, "rows": search.rows, "stop": stop, "evaluated_now": search.new}
