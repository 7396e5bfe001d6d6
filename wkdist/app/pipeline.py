"""KRR on a finished kernel store, and the commands ``wkdist fit``, ``run`` and ``predict``.

``fit`` reads the stored K^nu (never modifying them), subtracts an optional per-element
baseline, chooses (c0, a, b) by cross-validation on at most ``[fit] max_search`` training
structures held in memory, then solves for the weights with the tiled, resumable Cholesky of
``wkdist.krr.solve`` and predicts the test set tile by tile. ``run`` computes the kernels first.
Outputs (README, "Outputs of `wkdist run` / `wkdist fit`"): results.json, predictions.csv,
report.png and model/.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .. import __version__
from ..errors import ConfigError, DataError, MissingTilesError
from .config import Config, FitConfig, load_config, parse_config
from .dataset import Dataset
from .outputs import write_json, write_predictions, write_report
from .progress import say

__all__ = ["fit_store", "run_pipeline", "config_for_run", "predict_file", "search_mixing",
           "DEFAULT_CONFIG"]

log = logging.getLogger("wkdist")

DEFAULT_CONFIG = "qm9_small.toml"  # packaged beside this module; `wkdist run` without CONFIG


def _symbols(frames: list) -> list[list[str]]:
    return [atoms.get_chemical_symbols() for atoms in frames]


def _check_complete(store: Any, config: Config) -> None:
    from ..tiled.store import missing_tiles

    missing = missing_tiles(store)
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
        where = config.source or "CONFIG.toml"
        raise MissingTilesError(
            f"store {store.path}: {len(missing)} of {len(store.tiles())} kernel tiles are "
            f"missing ({shown}); compute them with `wkdist kernels {where}`"
        )


def _checked(group: zarr.Group, name: str) -> Any:
    """Kernel array ``name`` whose reads check each chunk against its tile's marker."""
    from ..tiled.store import read_kernels

    return read_kernels(group.store.root, name)


def search_mixing(group: zarr.Group, y: np.ndarray, fit: FitConfig, nu_max: int,
                  lam: int = 0, *, client: Any = None, worker_cores: int | None = None
                  ) -> dict[str, Any]:
    """(c0, a, b) of part ``lam`` by CV on the first max_search training structures (a random
    subset: rows follow the seeded split order), on the workers of ``client`` (in this process
    without one); or the configured coefficients."""
    from ..krr.hyper import fit_mixing, fit_mixing_store
    from ..tiled.tiles import kernel_array

    if fit.coefficients is not None:
        if len(fit.coefficients) != nu_max + 1:
            raise ConfigError(f"[fit] coefficients: expected {nu_max + 1} numbers (c_0 .. "
                              f"c_nu_max), got {len(fit.coefficients)}")
        return {"coefficients": list(fit.coefficients), "search": None}
    d = 2 * lam + 1
    m = min(len(y) // d, fit.max_search)
    # resumable: the shapes evaluated go to STORE/search/<what this search depends on>
    meta = group.attrs.get("wkdist", {})
    digest = hashlib.sha256(json.dumps(
        [meta.get("params_hash"), lam, m, fit.folds, fit.seed, fit.mode, fit.mixing,
         fit.regularization.hex()], sort_keys=True).encode() + y[:m * d].tobytes()).hexdigest()
    checkpoint = SearchCheckpoint(group, digest[:24])
    options = {"folds": min(fit.folds, m), "seed": fit.seed,
               "regularization": fit.regularization, "mode": fit.mode, "block": d,
               "mixing": fit.mixing, "checkpoint": checkpoint}
    if client is not None:
        result = fit_mixing_store(group.store.root, kernel_array("train", lam), y,
                                  client=client, max_size=m, worker_cores=worker_cores,
                                  **options)
    else:
        kernels = _checked(group, kernel_array("train", lam))[:, :m * d, :m * d]
        threads = max(1, min(len(os.sched_getaffinity(0)), 1 + m * d // 1000))
        result = fit_mixing(kernels, y[:m * d], blas_threads=threads, **options)
    search = {"c0": result.c0, "a": result.a, "b": result.b, "cv_mae": result.cv_mae,
              "cv_rmse": result.cv_rmse, "mode": result.mode, "mixing": result.mixing,
              "folds": result.folds,
              "n_used": result.n_used, "evaluations": result.evaluations,
              "seconds": result.seconds}
    return {"coefficients": list(result.coefficients), "search": search}


def check_scale(group: zarr.Group, y: np.ndarray, coefficients: list[float], fit: FitConfig,
                lam: int = 0, *, client: Any) -> tuple[list[float], dict[str, Any]]:
    """The scale of the mixing checked at full n, as the paper validated its full-QM9 fit: for
    each factor f of ``[fit] scale_check``, a tiled fit with f * coefficients on all but the
    last ``validation_fraction`` of the training structures (rows are in the seeded random
    order) predicts those held out; the factor with the lowest validation MAE scales the
    coefficients. Each factor costs one tiled Cholesky of the leading block."""
    from ..krr.folds import errors
    from ..krr.solve import fit_weights, predict
    from ..tiled.tiles import kernel_array

    d = 2 * lam + 1
    n = len(y) // d
    held = max(1, round(fit.validation_fraction * n))
    kept = n - held
    if kept < 1:
        raise ConfigError(f"[fit] validation_fraction: {fit.validation_fraction} of {n} "
                          "training structures leaves none to fit on")
    name = kernel_array("train", lam)
    points = []
    for factor in fit.scale_check or ():
        scaled = [factor * c for c in coefficients]
        alpha, _ = fit_weights(group, y[:kept * d], coefficients=scaled,
                               regularization=fit.regularization, client=client,
                               kernel=name, size=kept * d)
        values = predict(group, name, alpha, coefficients=scaled, client=client,
                         columns=kept * d, rows=(kept * d, n * d))
        mae, rmse = errors([values - y[kept * d:n * d]], d)
        points.append({"factor": factor, "validation_mae": mae, "validation_rmse": rmse})
        say(f"scale check: {factor:g} x the searched coefficients: validation MAE {mae:.4g} "
            f"on {held} structures held out of {n}")
    best = min(points, key=lambda p: p["validation_mae"])
    return ([best["factor"] * c for c in coefficients],
            {"factor": best["factor"], "n_fit": kept, "n_validation": held, "points": points})


class SearchCheckpoint:
    """The mixing search's progress as attributes of the zarr group STORE/search/<key>,
    written by the driver only (zarr renames metadata into place)."""

    def __init__(self, group: zarr.Group, key: str) -> None:
        self.group, self.key = group, key

    def load(self) -> dict | None:
        try:
            return dict(self.group[f"search/{self.key}"].attrs.get("progress", {}))
        except KeyError:
            return None

    def save(self, content: dict) -> None:
        node = self.group.require_group("search").require_group(self.key)
        node.attrs["progress"] = content


# A body order whose contribution to the mixed kernel is below this fraction of the largest
# one cannot change a prediction visibly: the model is then effectively of lower order.
WEAK_ORDER = 1e-6


def _weak_orders(coefficients: list[float], diagonal: np.ndarray, *, label: str,
                 search: dict[str, Any] | None) -> tuple[list[float], str | None]:
    """Each order's contribution c_nu mean(diag K^nu) and, when some order nu >= 1 contributes
    less than WEAK_ORDER of the largest, the warning that says so (else None)."""
    contributions = [abs(float(c)) * float(d) for c, d in zip(coefficients, diagonal)]
    top = max(contributions)
    weak = [nu for nu in range(1, len(contributions)) if contributions[nu] < WEAK_ORDER * top]
    if not weak or not top > 0:
        return contributions, None
    nu_max = len(contributions) - 1
    effective = max((nu for nu in range(1, nu_max + 1) if nu not in weak), default=0)
    if weak == list(range(effective + 1, nu_max + 1)):
        consequence = f"the model is effectively of order nu_max = {effective}"
    else:
        consequence = "those terms are effectively absent from the model"
    if search is None:
        cause = "the given [fit] coefficients make them so"
    else:
        cause = (f"likely cause: the CV search on {search['n_used']} structures switched them "
                 "off, as it tends to with few training structures (more data, or a lower "
                 "[kernel] nu_max for the same model at less cost)")
    orders = ", ".join(map(str, weak))
    shown = ", ".join(f"{c:.3g}" for c in contributions)
    return contributions, (
        f"fit{label}: body order{'s' if len(weak) > 1 else ''} nu = {orders} contribute"
        f"{'' if len(weak) > 1 else 's'} less than {WEAK_ORDER:g} of the largest order "
        f"(c_nu times the mean diagonal of K^nu over the training set, nu = 0..{nu_max}: "
        f"{shown}): {consequence}; {cause}")


def _learning_curve(group: zarr.Group, y_parts: dict[int, np.ndarray], b_test: np.ndarray,
                    y_test: np.ndarray, kind: str, fit: FitConfig,
                    n_train: int, client: Any) -> list[dict[str, Any]]:
    """Extra fits on the first n training structures (dense: n <= max_search), each part with
    its own CV, put together exactly as the main fit."""
    from ..engine.targets import from_spherical, target_errors
    from ..krr.hyper import fit_mixing
    from ..krr.solve import predict, solve_dense
    from ..tiled.tiles import kernel_array

    points = []
    for n in fit.learning_curve or ():
        if n >= n_train or n > fit.max_search:
            continue
        parts = {}
        for lam, y in y_parts.items():
            d = 2 * lam + 1
            kernels = _checked(group, kernel_array("train", lam))[:, :n * d, :n * d]
            result = fit_mixing(kernels, y[:n * d], folds=min(fit.folds, n), seed=fit.seed,
                                regularization=fit.regularization, mode=fit.mode, block=d,
                                mixing=fit.mixing)
            alpha = solve_dense(kernels, y[:n * d], coefficients=result.coefficients,
                                regularization=fit.regularization)
            # streamed tile by tile on the workers: never an (m, n) block in the driver
            values = predict(group, kernel_array("test", lam), alpha, client=client,
                             coefficients=result.coefficients, columns=n * d)
            parts[lam] = b_test + values if lam == 0 else values.reshape(-1, d)
        prediction = from_spherical(parts, kind)
        points.append({"n_train": n, **target_errors(y_test, prediction, kind)})
    return points


@contextlib.contextmanager
def _repair_hint(config: Config) -> Iterator[None]:
    """A kernel tile found damaged where it is read: unmark it (here, in the driver) and stop
    with one line naming it and the command that recomputes it."""
    from ..errors import DamagedTileError, StoreError
    from ..tiled.checkpoint import unmark

    try:
        yield
    except DamagedTileError as error:
        unmark(error.marker)
        where = config.source or "CONFIG.toml"
        raise StoreError(f"{error}; the tile is unmarked: `wkdist kernels {where} --verify` "
                         "recomputes it and checks every other tile") from None


def fit_store(config: Config, dataset: Dataset, out: Path, *, client: Any,
              timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Fit on the complete store of ``config`` and write every output into ``out``.

    Vector and tensor targets are fitted part by part (``wkdist.engine.targets``): each irreducible
    part lambda has its own (c0, a, b) (c0 = 0 for lambda >= 1), its own tiled Cholesky factor
    of K^lambda_train and its own weights; the per-element baseline applies to the lambda = 0
    part only (scalars, tensor traces).
    """
    from ..engine.targets import (
        from_spherical,
        lambdas_of,
        target_errors,
        target_kind,
        to_spherical,
    )
    from ..krr.folds import mean_diagonal
    from ..krr.hyper import element_counts, species_baseline
    from ..krr.model import Part, baseline_values, save_model
    from ..krr.solve import fit_weights, predict
    from ..tiled.store import strict_reads
    from ..tiled.tiles import kernel_array
    from .compute import prepare_store

    fit: FitConfig = config.sections["fit"]
    timings = dict(timings or {})
    kind = target_kind(dataset.y_train)
    store = prepare_store(config, dataset)  # refuses a store of other settings or data
    _check_complete(store, config)
    group = zarr.open_group(zarr.storage.LocalStore(store.path), mode="r+")
    nu_max = config.kernel.nu_max
    start = time.perf_counter()

    train_parts = to_spherical(dataset.y_train, kind)
    baseline = None
    if fit.baseline and 0 in train_parts:
        counts, symbols = element_counts(_symbols(dataset.train_frames))
        baseline = species_baseline(counts, train_parts[0], symbols)
    b_train = baseline_values(dataset.train_frames, baseline)
    b_test = baseline_values(dataset.test_frames, baseline)
    # per part: the flat right-hand side, row = structure * (2 lambda + 1) + mu
    y_parts = {lam: (values - b_train if lam == 0 else values.reshape(-1))
               for lam, values in train_parts.items()}

    parts, described, predicted, factors, messages = [], [], {}, [], []
    for key in ("search_s", "solve_s", "predict_s"):
        timings[key] = 0.0
    with strict_reads(), _repair_hint(config):
        for lam in lambdas_of(kind):
            mark = time.perf_counter()
            chosen = search_mixing(group, y_parts[lam], fit, nu_max, lam, client=client,
                                   worker_cores=config.compute.threads_per_worker)
            timings["search_s"] += time.perf_counter() - mark
            if fit.scale_check:
                mark = time.perf_counter()
                chosen["coefficients"], chosen["scale_check"] = check_scale(
                    group, y_parts[lam], chosen["coefficients"], fit, lam, client=client)
                timings["scale_check_s"] = (timings.get("scale_check_s", 0.0)
                                            + time.perf_counter() - mark)
            coefficients = chosen["coefficients"]
            label = "" if kind == "scalar" else f" (lambda = {lam})"
            say(f"fit{label}: coefficients {', '.join(f'{c:.4g}' for c in coefficients)}"
                 + (f" (CV {'MAE' if lam == 0 else 'mean error norm'} "
                    f"{chosen['search']['cv_mae']:.4g} on "
                    f"{chosen['search']['n_used']} structures)" if chosen["search"]
                    else " (given)"))
            contributions, weak = _weak_orders(
                coefficients, mean_diagonal(store.path, kernel_array("train", lam)), label=label,
                search=chosen["search"])
            if weak:
                log.warning("%s", weak)
                messages.append(weak)
            mark = time.perf_counter()
            alpha, factor = fit_weights(group, y_parts[lam], coefficients=coefficients,
                                        regularization=fit.regularization, client=client,
                                        kernel=kernel_array("train", lam))
            timings["solve_s"] += time.perf_counter() - mark
            mark = time.perf_counter()
            values = predict(group, kernel_array("test", lam), alpha,
                             coefficients=coefficients, client=client)
            timings["predict_s"] += time.perf_counter() - mark
            predicted[lam] = b_test + values if lam == 0 else values.reshape(dataset.n_test, -1)
            part_baseline = baseline if lam == 0 else None
            parts.append(Part(lam=lam, alpha=alpha, coefficients=np.asarray(coefficients),
                              regularization=fit.regularization, baseline=part_baseline))
            described.append({"lambda": lam, "coefficients": coefficients,
                              "regularization": fit.regularization,
                              "baseline": part_baseline, "search": chosen["search"],
                              "scale_check": chosen.get("scale_check"),
                              "contributions": contributions})
            factors.append(factor)
        prediction = from_spherical(predicted, kind)
        curve = _learning_curve(group, y_parts, b_test, dataset.y_test, kind, fit,
                                dataset.n_train, client)

    out.mkdir(parents=True, exist_ok=True)
    save_model(out / "model", parts=parts, kind=kind, train_frames=dataset.train_frames,
               settings=config.kernel, target=dataset.target, unit=dataset.unit,
               wkdist_version=__version__)
    write_predictions(out / "predictions.csv", dataset.test_index, prediction, dataset.y_test)
    errors = target_errors(dataset.y_test, prediction, kind)
    curve.append({"n_train": dataset.n_train, **errors})
    report = write_report(out / "report.png", target=dataset.y_test, prediction=prediction,
                          unit=dataset.unit, title=f"{dataset.target}, n_train {dataset.n_train}",
                          learning_curve=[(p["n_train"], p["mae"]) for p in curve],
                          baseline=b_test if baseline and kind == "scalar" else None)
    timings["fit_total_s"] = time.perf_counter() - start
    hyperparameters = {key: described[0][key]
                       for key in ("coefficients", "regularization", "baseline")}
    if kind != "scalar":
        hyperparameters["parts"] = [{k: v for k, v in p.items()
                                     if k not in ("search", "contributions", "scale_check")}
                                    for p in described]
    results = {
        **errors,
        "unit": dataset.unit,
        "n_train": dataset.n_train,
        "n_test": dataset.n_test,
        "target": dataset.target,
        "target_kind": kind,
        "hyperparameters": hyperparameters,
        "search": described[0]["search"],
        "scale_check": described[0]["scale_check"],
        "learning_curve": curve,
        "order_contributions": [{"lambda": p["lambda"], "values": p["contributions"]}
                                for p in described],
        "warnings": messages,
        "kernel": config.kernel.to_dict(),
        "factor_tiles": {"computed": sum(f.computed for f in factors),
                         "reused": sum(f.reused for f in factors)},
        "timings": timings,
        "wkdist_version": __version__,
    }
    if kind != "scalar":
        results["search_parts"] = [{"lambda": p["lambda"], "search": p["search"],
                                    "scale_check": p["scale_check"]} for p in described]
    # results.json last: its presence means the directory is complete
    write_json(out / "results.json", results)
    unit = f" {dataset.unit}" if dataset.unit else ""
    extra = "".join(f", {key} {errors[key]:.6g}{unit}" for key in
                    ("mae_magnitude", "mae_lambda0", "mae_lambda2") if key in errors)
    say(f"test MAE {errors['mae']:.6g}{unit}, RMSE {errors['rmse']:.6g}{unit}{extra} "
         f"({dataset.n_test} structures)",
         f"results: {out / 'results.json'}", f"predictions: {out / 'predictions.csv'}",
         f"report: {out / 'report.png'}" if report else "report: matplotlib not installed",
         f"model: {out / 'model'}")
    return results


# --------------------------------------------------------------------------- the job


def config_for_run(path: str | None, out: Path) -> Config:
    """The user's config, or the packaged small QM9 job with its store inside ``out``."""
    if path is not None:
        return load_config(path)
    text = resources.files("wkdist").joinpath(DEFAULT_CONFIG).read_text()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(text)
    say(f"no CONFIG given: running the built-in example {out / 'config.toml'}")
    return parse_config(tomllib.loads(text), base_dir=out, source=out / "config.toml")


def run_pipeline(config: Config, out: Path, *, kernels: bool, quiet: bool = False,
              verify: bool = False, progress_interval: float = 10.0) -> int:
    from ..tiled.lock import hold
    from .compute import preflight
    from .dataset import load_dataset

    begin = time.perf_counter()
    dataset = load_dataset(config.data)
    say(f"data: {dataset.n_train} train, {dataset.n_test} test structures; "
         f"store {config.store.path}")
    timings: dict[str, float] = {"data_s": time.perf_counter() - begin}
    _check_fit(config, dataset)
    preflight(config, dataset)  # structures, an existing store: before any cluster or store
    with contextlib.ExitStack() as locks:
        locks.enter_context(hold(config.store.path, what="store",
                                 command=f"wkdist {'run' if kernels else 'fit'}"))
        locks.enter_context(hold(out, what="output directory",
                                 command=f"wkdist {'run' if kernels else 'fit'}"))
        return _locked_pipeline(config, dataset, out, kernels=kernels, quiet=quiet,
                                verify=verify, progress_interval=progress_interval,
                                timings=timings)


def _check_fit(config: Config, dataset: Dataset) -> None:
    """[fit] against the data and kernel settings, before any kernel is computed."""
    fit: FitConfig = config.sections["fit"]
    if fit.coefficients is not None and len(fit.coefficients) != config.kernel.nu_max + 1:
        raise ConfigError(f"[fit] coefficients: expected {config.kernel.nu_max + 1} numbers "
                          f"(c_0 .. c_nu_max), got {len(fit.coefficients)}")
    if fit.coefficients is None and dataset.n_train < 2:
        raise ConfigError(f"[fit]: choosing the coefficients by cross-validation needs at least "
                          f"2 training structures, got {dataset.n_train}; give [fit] "
                          "coefficients or more data")


def _locked_pipeline(config: Config, dataset: Dataset, out: Path, *, kernels: bool,
                     quiet: bool, verify: bool, progress_interval: float,
                     timings: dict[str, float]) -> int:
    from .cluster import open_cluster

    if not kernels:  # fail before starting workers, and never create a store here
        from .compute import prepare_store

        if not Path(config.store.path).exists():
            raise MissingTilesError(
                f"store {config.store.path}: no such store; compute the kernels with "
                f"`wkdist kernels {config.source or 'CONFIG.toml'}`")
        _check_complete(prepare_store(config, dataset), config)
    with open_cluster(config.compute) as cluster:
        say(*cluster.lines())
        if kernels:
            from .compute import compute_kernels

            mark = time.perf_counter()
            summary = compute_kernels(config, client=cluster.client,
                                      numba_threads=cluster.numba_threads, verify=verify,
                                      progress=not quiet, progress_interval=progress_interval,
                                      dataset=dataset)
            timings["kernels_s"] = time.perf_counter() - mark
            say(*summary.lines())
        fit_store(config, dataset, out, client=cluster.client, timings=timings)
    return 0


def predict_file(model_path: str | Path, structures: str | Path, *, out: Path | None = None,
                 cluster: str | None = None, workers: int = 2,
                 allow_unseen_elements: bool = False) -> str:
    """Predict the structures of an ASE-readable file with a saved model.

    Parameters
    ----------
    model_path
        A model directory (``DIR/model`` of ``wkdist run``).
    structures
        Any file ASE reads; when it carries the model's target, the CSV gets its errors too.
    out
        CSV path; None returns the CSV text without writing it.
    cluster
        None computes in this process, "local" on a local Dask cluster of ``workers``
        processes, "tcp://host:port" on a running scheduler.
    allow_unseen_elements
        Predict structures with elements the training set never had (zero kernel and zero
        baseline for them) instead of NaN.

    Returns
    -------
    str
        The predictions as CSV text (also written to ``out`` when given).
    """
    from contextlib import nullcontext

    from ..engine.structures import check_frames
    from ..krr.model import load_model
    from .cluster import open_cluster
    from .config import ComputeConfig
    from .dataset import read_frames, read_targets

    model = load_model(model_path)
    frames = read_frames(structures)
    check_frames(frames, str(structures))
    unseen = model.unseen_elements(frames)
    if unseen:
        rows = model.unseen_rows(frames)
        shown = ", ".join(map(str, rows[:20])) + (", ..." if len(rows) > 20 else "")
        if allow_unseen_elements:
            log.warning("elements %s never occur in the training set: structures %s of %s "
                        "are predicted with a zero kernel and zero baseline for them",
                        ", ".join(unseen), shown, structures)
        else:
            log.warning("elements %s never occur in the training set: structures %s of %s "
                        "(0-based) are written as NaN; --allow-unseen-elements predicts them "
                        "with a zero kernel and zero baseline for those elements",
                        ", ".join(unseen), shown, structures)
    try:
        target = read_targets(frames, model.target, name=structures)
    except DataError:
        target = None  # the file need not carry the target
    if cluster is None:
        context = nullcontext(None)
    else:
        if cluster != "local" and not cluster.startswith(("tcp://", "tls://")):
            raise ConfigError(f'--cluster: expected "local" or "tcp://host:port", '
                              f"got {cluster!r}")
        context = open_cluster(ComputeConfig(cluster=cluster, workers=workers))
    with context as running:
        prediction = model.predict(frames, client=None if running is None else running.client,
                                   allow_unseen_elements=allow_unseen_elements)
    text = write_predictions(out, np.arange(len(frames)), prediction, target)
    if out is not None:
        say(f"predictions: {out}")
    return text
