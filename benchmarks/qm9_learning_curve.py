"""QM9 U0 test MAE against n_train for given kernel settings, mean and spread over random splits.

Mean and spread over random splits, for any [kernel] settings and several training-set
sizes: the kernels of a pool of max(n_train) + n_test random QM9 molecules are computed once,
by the product's tiled Dask graph into a kernel store keyed by pool and settings (an
interrupted run resumes from its finished tiles); each split permutes the pool, tests on n_test
molecules and trains on the first n of the rest for every n (nested training sets), with the
per-element baseline and (c0, a, b) chosen by k-fold CV on the training part only (on a seeded
subset of at most --search-size molecules of it), and the KRR solved exactly as `wkdist fit`
does (same modules, dense at this size).

    # reference settings (wkdist.REFERENCE_QM9)
    python benchmarks/qm9_learning_curve.py --n-train 500 --n-test 500 --json ref.json
    # the [kernel] of a config, e.g. the best.toml of `wkdist tune`, compared on a plot
    python benchmarks/qm9_learning_curve.py --config DIR/best.toml --n-train 500 --n-test 500 \
        --json best.json --compare ref.json --plot curve.png
    # single settings on the command line, a learning curve
    python benchmarks/qm9_learning_curve.py --kernel gaussian_width=0.05 decay_length=1.5 \
        --n-train 500 1000 2000 4000 --n-test 1000

``--check-overlap DIR/tune_state.json`` counts the pool molecules that a `wkdist tune` search
looked at (they should be none: the search must not see test molecules).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

import wkdist
from wkdist.app.config import load_config
from wkdist.data.qm9 import load_qm9
from wkdist.krr.hyper import element_counts, fit_mixing, species_baseline
from wkdist.krr.model import baseline_values
from wkdist.krr.solve import predict_dense, solve_dense

MEV_PER_EV = 1000.0
AUTHORS_MEV = 72.2  # the authors' released run, n_train 500 (qm9.out of their repository)
PAPER_N, PAPER_MEV = 110_000, 4.3  # the paper's Table I: full QM9
FCHL_MEV = 160.0  # FCHL-class kernels at n_train 500 (approximate, for orientation)


def power_law(mae_meV: dict[str, list[float]]) -> tuple[float, float] | None:
    """(prefactor, exponent) of MAE = prefactor * n^exponent fitted to the mean MAE of every
    n (least squares in log-log); None with fewer than two sizes."""
    ns = sorted(int(n) for n in mae_meV)
    if len(ns) < 2:
        return None
    means = [float(np.mean(mae_meV[str(n)])) for n in ns]
    exponent, log_prefactor = np.polyfit(np.log(ns), np.log(means), 1)
    return float(np.exp(log_prefactor)), float(exponent)


def n_reaching(fit: tuple[float, float], mae: float) -> float:
    """The n at which the fitted power law reaches ``mae`` (inf when it does not fall)."""
    prefactor, exponent = fit
    return math.exp(math.log(mae / prefactor) / exponent) if exponent < 0 else math.inf


def _test_mae(k_train: np.ndarray, y_train: np.ndarray, k_test: np.ndarray,
              y_test: np.ndarray, coefficients: np.ndarray) -> float:
    """Test MAE (meV) of the KRR fitted with ``coefficients`` (targets minus the baseline)."""
    alpha = solve_dense(k_train, y_train, coefficients=coefficients)
    prediction = predict_dense(k_test, alpha, coefficients=coefficients)
    return float(np.mean(np.abs(prediction - y_test))) * MEV_PER_EV


def pool_kernels(frames: list, y: np.ndarray, settings: wkdist.KernelSettings, path: Path,
                 *, workers: int) -> tuple[np.ndarray, dict]:
    """K^nu of the pool, (nu_max + 1, m, m), and its cost: {"tile_s", "pairs", "tiles"} summed
    over every tile ever computed into the store (across interrupted runs), "wall_s" of this run.

    Computed by the product's tiled Dask graph into a kernel store at ``path`` (the pool is the
    store's training set), so an interrupted run resumes from its finished tiles and a rerun
    reads the store back; the store refuses to be reused for another pool or other settings.
    The cost is kept beside the store in ``<path>.cost.json``, rewritten after every tile.
    """
    from wkdist.app.cluster import open_cluster
    from wkdist.app.compute import compute_kernels
    from wkdist.app.config import parse_config
    from wkdist.app.dataset import Dataset
    from wkdist.tiled.store import strict_reads

    config = parse_config({"data": {"source": "qm9", "n_train": len(frames), "n_test": 1},
                           "kernel": settings.to_dict(),
                           "store": {"path": str(path)},
                           "compute": {"workers": workers, "threads_per_worker": 1}})
    index = np.array([int(a.info["qm9_index"]) for a in frames])
    # a store needs a test part: one pool molecule (m extra pairs, never read)
    data = Dataset(train_frames=frames, test_frames=frames[:1], y_train=y, y_test=y[:1],
                   train_index=index, test_index=index[:1], target="U0", unit="eV")
    cost_path = path.with_name(path.name + ".cost.json")
    cost = {"tile_s": 0.0, "pairs": 0, "tiles": 0}
    if cost_path.exists() and path.exists():
        cost = json.loads(cost_path.read_text())

    def record(result) -> None:
        cost["tile_s"] += result.compute_s + result.write_s
        cost["pairs"] += result.pairs
        cost["tiles"] += 1
        partial = cost_path.with_suffix(".partial")
        partial.write_text(json.dumps(cost))
        partial.replace(cost_path)

    with open_cluster(config.compute, dashboard_port=None) as cluster:
        summary = compute_kernels(config, client=cluster.client,
                                  numba_threads=cluster.numba_threads, dataset=data,
                                  on_result=record)
    print(f"pool kernels: {len(frames)} molecules, {summary.computed_tiles} of "
          f"{summary.total_tiles} tiles computed in {summary.wall_s:.1f} s", flush=True)
    with strict_reads():
        kernels = wkdist.read_kernels(path, "K_train")[...]
    return kernels, {**cost, "total_tiles": summary.total_tiles,
                     "wall_s": summary.wall_s if summary.computed_tiles else 0.0}


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def settings_from(args: argparse.Namespace) -> wkdist.KernelSettings:
    values = wkdist.REFERENCE_QM9.to_dict()  # the default: the reference settings
    if args.config is not None:
        values.update(load_config(args.config).kernel.to_dict())
    for item in args.kernel or ():
        name, _, text = item.partition("=")
        values[name] = _value(text)
    return wkdist.KernelSettings(**values)


def plot(path: Path, runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    for run in runs:
        ns = sorted(int(n) for n in run["mae_meV"])
        means = [np.mean(run["mae_meV"][str(n)]) for n in ns]
        spread = [np.std(run["mae_meV"][str(n)], ddof=1) if len(run["mae_meV"][str(n)]) > 1
                  else 0.0 for n in ns]
        line = ax.errorbar(ns, means, yerr=spread, marker="o", capsize=3, label=run["label"])
        fit = power_law(run["mae_meV"])
        if fit is not None and fit[1] < 0:
            reach = n_reaching(fit, PAPER_MEV)
            xs = np.geomspace(ns[0], max(reach, PAPER_N) * 1.2, 50)
            ax.plot(xs, fit[0] * xs ** fit[1], ls=":", lw=1, color=line[0].get_color(),
                    label=f"  fit n^{fit[1]:.2f}: 4.3 meV at n = {reach:,.0f}")
    ax.plot([500], [AUTHORS_MEV], "k*", ms=9, label=f"authors' run, n=500 ({AUTHORS_MEV} meV)")
    ax.plot([PAPER_N], [PAPER_MEV], "kD", ms=6,
            label=f"paper, n={PAPER_N:,} ({PAPER_MEV} meV)")
    ax.axhline(FCHL_MEV, color="gray", ls=":", lw=1,
               label=f"FCHL-class, n=500 (~{FCHL_MEV:.0f} meV)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("n_train")
    ax.set_ylabel("test MAE, U0 (meV)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None,
                        help="take [kernel] from this configuration (e.g. best.toml)")
    parser.add_argument("--kernel", nargs="*", metavar="NAME=VALUE",
                        help="kernel settings (after --config); default: the reference "
                             "settings wkdist.REFERENCE_QM9")
    parser.add_argument("--n-train", type=int, nargs="+", default=[500])
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=None,
                        help="pool size (default max(n_train) + n_test); the same pool and "
                             "seed give the same test sets and nested training sets")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search-size", type=int, default=1000,
                        help="(c0, a, b) by CV on at most this many training molecules "
                             "(a seeded subset; the dense search is cubic in it)")
    parser.add_argument("--mixing", choices=("exponential", "free"), default="exponential",
                        help="mixing of the orders searched by CV: c_nu = a b^nu / nu! (the "
                             "paper), or free per-order coefficients")
    parser.add_argument("--fit-nu-max", type=int, default=None,
                        help="fit on K^0..K^N only: the kernels truncated at nu_max N (<= the "
                             "settings' nu_max) are the same numbers, so the store is reused")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--scale-check", type=float, nargs="+", default=None,
                        metavar="FACTOR",
                        help="check the searched scale at full n_train as `wkdist fit` does "
                             "with [fit] scale_check: each factor times the coefficients "
                             "fitted on all but --validation-fraction of the training set, "
                             "the best held-out MAE wins (the MAE without it is recorded too)")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--store", type=Path, default=None,
                        help="kernel store of the pool (default runs/qm9_lc_<hash>)")
    parser.add_argument("--label", default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--compare", type=Path, nargs="*", default=[],
                        help="JSON files of earlier runs drawn on the same plot")
    parser.add_argument("--check-overlap", type=Path, default=None, metavar="TUNE_STATE",
                        help="count pool molecules among a tune search's structures")
    args = parser.parse_args()

    settings = settings_from(args)
    fit_nu_max = settings.nu_max if args.fit_nu_max is None else args.fit_nu_max
    if not 1 <= fit_nu_max <= settings.nu_max:
        parser.error(f"--fit-nu-max: expected 1 .. {settings.nu_max} (the kernel's nu_max), "
                     f"got {fit_nu_max}")
    fitted = dataclasses.replace(settings, nu_max=fit_nu_max)
    if args.search_size < args.folds:
        parser.error(f"--search-size: expected at least --folds = {args.folds}, "
                     f"got {args.search_size}")
    qm9 = load_qm9()
    m = args.pool or max(args.n_train) + args.n_test
    if m < max(args.n_train) + args.n_test:
        parser.error(f"--pool: expected at least max(n_train) + n_test = "
                     f"{max(args.n_train) + args.n_test}, got {m}")
    pool = np.sort(np.random.default_rng(args.seed).choice(qm9.n, size=m, replace=False))
    frames = qm9.frames(pool)
    if args.check_overlap is not None:
        searched = set(json.loads(args.check_overlap.read_text())["inputs"]["search_index"])
        overlap = sum(int(a.info["qm9_index"]) in searched for a in frames)
        print(f"overlap with the tune search ({len(searched)} molecules): {overlap} of {m} "
              "pool molecules", flush=True)
    import hashlib

    digest = hashlib.sha256(json.dumps([pool.tolist(), settings.to_dict()]).encode()).hexdigest()
    y = qm9.targets(pool)
    store = args.store or Path(f"runs/qm9_lc_{digest[:12]}")
    kernels, cost = pool_kernels(frames, y, settings, store, workers=args.workers)
    kernels = kernels[: fit_nu_max + 1]
    counts, symbols = element_counts([a.get_chemical_symbols() for a in frames])

    maes: dict[str, list[float]] = {str(n): [] for n in sorted(args.n_train)}
    unchecked: dict[str, list[float]] = {str(n): [] for n in sorted(args.n_train)}
    fit_s: dict[str, list[float]] = {str(n): [] for n in sorted(args.n_train)}
    for split in range(args.splits):
        order = np.random.default_rng(args.seed + 1 + split).permutation(m)
        test = order[m - args.n_test:]
        for n in sorted(args.n_train):
            start = time.perf_counter()
            train = order[:n]
            baseline = species_baseline(counts[train], y[train], symbols)
            y_res = y[train] - baseline_values([frames[i] for i in train], baseline)
            k_train = kernels[:, train][:, :, train]
            search = fit_mixing(k_train, y_res, folds=args.folds, seed=split,
                                max_size=args.search_size, mixing=args.mixing)
            k_test = kernels[:, test][:, :, train]
            y_test = y[test] - baseline_values([frames[i] for i in test], baseline)

            coefficients = np.asarray(search.coefficients)
            checked = ""
            if args.scale_check:  # as `wkdist fit` with [fit] scale_check, densely
                unchecked[str(n)].append(_test_mae(k_train, y_res, k_test, y_test,
                                                   coefficients))
                kept = n - max(1, round(args.validation_fraction * n))
                scores = []
                for factor in args.scale_check:
                    c = factor * coefficients
                    alpha = solve_dense(k_train[:, :kept, :kept], y_res[:kept], coefficients=c)
                    held = predict_dense(k_train[:, kept:, :kept], alpha, coefficients=c)
                    scores.append(float(np.mean(np.abs(held - y_res[kept:]))))
                best = args.scale_check[int(np.argmin(scores))]
                coefficients = best * coefficients
                checked = (f"; scale check chose {best:g}: without it "
                           f"{unchecked[str(n)][-1]:.1f} meV")
            mae = _test_mae(k_train, y_res, k_test, y_test, coefficients)
            fit_s[str(n)].append(time.perf_counter() - start)
            maes[str(n)].append(mae)
            print(f"split {split}, n_train {n}: test MAE {mae:6.1f} meV (CV MAE "
                  f"{search.cv_mae * MEV_PER_EV:6.1f} meV; coefficients "
                  f"{', '.join(f'{c:.3g}' for c in search.coefficients)}){checked}",
                  flush=True)
    label = args.label or ", ".join(
        [f"{k}={v}" for k, v in fitted.to_dict().items() if getattr(wkdist.REFERENCE_QM9, k) != v]
        + (["mixing=free"] if args.mixing == "free" else [])) or "reference"
    print(f"settings: {fitted.to_dict()}")
    fit = power_law(maes)
    if fit is not None:
        print(f"{label}: power law {fit[0]:.4g} n^{fit[1]:.3f}; it reaches the paper's "
              f"{PAPER_MEV} meV at n = {n_reaching(fit, PAPER_MEV):,.0f} (the paper: "
              f"{PAPER_N:,})")
    for n, values in maes.items():
        v = np.array(values)
        print(f"{label}: n_train {n}, n_test {args.n_test}, {len(v)} splits: test MAE "
              f"{v.mean():.1f} meV (std {v.std(ddof=1) if len(v) > 1 else 0:.1f}, range "
              f"{v.min():.1f}-{v.max():.1f})")
    # a point alone needs the kernels of its n training and n_test test molecules only
    rate = cost["pairs"] / cost["tile_s"] if cost["tile_s"] else math.nan
    print(f"time: pool kernels {rate:.0f} structure pairs per core-s (measured on "
          f"{cost['tiles']} of {cost['total_tiles']} tiles, {cost['tile_s']:.0f} core-s), "
          f"{(m * (m + 1) // 2 + m) / rate:.0f} core-s for the whole pool at that rate; wall "
          f"{cost['wall_s']:.0f} s in this run")
    for n, seconds in fit_s.items():
        pairs = int(n) * (int(n) + 1) // 2 + args.n_test * int(n)
        print(f"n_train {n}: CV search + solve + predict {np.median(seconds):.1f} s per split "
              f"(median); its kernels alone {pairs:,} pairs, {pairs / rate:.0f} core-s")
    run = {"label": label, "n_test": args.n_test, "splits": args.splits, "folds": args.folds,
           "seed": args.seed, "search_size": args.search_size, "mixing": args.mixing,
           "mae_meV": maes, "scale_check": args.scale_check,
           "validation_fraction": args.validation_fraction,
           **({"mae_meV_without_scale_check": unchecked} if args.scale_check else {}),
           "settings": fitted.to_dict(), "kernel_cost": cost, "fit_s": fit_s}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(run, indent=2))
    if args.plot:
        runs = [json.loads(p.read_text()) for p in args.compare] + [run]
        plot(args.plot, runs)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
