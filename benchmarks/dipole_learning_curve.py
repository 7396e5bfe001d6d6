"""Dipole-vector learning curve: nu_max = 1 (linear in the density, no three-body terms) against
nu_max = 4, on GFN2-xTB dipoles of QM9 molecules.

Data: ``python benchmarks/make_qm9_xtb_dipoles.py`` (3,000 molecules, runs/qm9_xtb_dipoles.extxyz).
Kernels: the lambda = 1 kernels of the config (default benchmarks/qm9_xtb_dipole.toml: 2,000
training and 500 test molecules), computed by the product's tiled Dask graph into its zarr store
(the same code as ``wkdist kernels``; resumable: rerun after an interruption). The nu_max = 1
model uses K^1 of the same store: the nu = 1 kernel does not depend on nu_max.

For each n_train and split, the training molecules are a seeded random subset of the store's
training set and the test set is the store's (fixed) test set; (a, b) are chosen by 5-fold CV
on at most ``--search-size`` of the training molecules (``wkdist.krr.hyper.fit_mixing``, as
``wkdist fit`` does; the CV loss is the mean norm of a molecule's dipole error), then the
weights are solved on all of them. n_train equal to the whole training set has one split.

    python benchmarks/dipole_learning_curve.py --n-train 100 250 500 1000 2000 --splits 5 \\
        --json runs/dipole_curve.json --plot benchmarks/figures/dipole_learning_curve.png \\
        --compare benchmarks/figures/dipole_learning_curve_paper.json

The JSON records the kernel normalization; ``--compare`` draws an earlier run's JSON (e.g. the
"paper" normalization's) dashed beside this one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import wkdist
from wkdist.app.cluster import open_cluster
from wkdist.app.compute import compute_kernels
from wkdist.app.config import load_config
from wkdist.app.dataset import load_dataset
from wkdist.engine.targets import from_spherical, target_errors, to_spherical
from wkdist.krr.hyper import fit_mixing
from wkdist.krr.solve import predict_dense, solve_dense
from wkdist.tiled.store import strict_reads

HERE = Path(__file__).resolve().parent


def ensure_kernels(config_path: Path):
    """The finished store of the config (computing whatever tiles it still lacks)."""
    config = load_config(config_path)
    dataset = load_dataset(config.data)
    if dataset.y_train.ndim != 2 or dataset.y_train.shape[1] != 3:
        raise SystemExit(f"{config_path}: expected a vector target, got {dataset.y_train.shape}")
    with open_cluster(config.compute) as cluster:
        summary = compute_kernels(config, client=cluster.client,
                                  numba_threads=cluster.numba_threads, dataset=dataset)
    print("\n".join(summary.lines()), flush=True)
    return config, dataset


def fit_point(k_train: np.ndarray, k_test: np.ndarray, y: np.ndarray, *, search_size: int,
              seed: int) -> tuple[np.ndarray, dict]:
    """(test predictions (m, 3) in spherical order, chosen hyperparameters)."""
    result = fit_mixing(k_train, y.reshape(-1), folds=5, seed=seed, block=3,
                        max_size=search_size, blas_threads=2)
    alpha = solve_dense(k_train, y.reshape(-1), coefficients=result.coefficients)
    prediction = predict_dense(k_test, alpha, coefficients=result.coefficients)
    return prediction.reshape(-1, 3), {"a": result.a, "b": result.b, "cv": result.cv_mae}


def plot(path: Path, curves: dict[str, list[dict]], unit: str, *, normalization: str,
         earlier: dict | None = None) -> None:
    """Mean and spread per point; ``earlier`` (a JSON of another run) dashed, in the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    colours = {}
    for label, points in curves.items():
        n = [p["n_train"] for p in points]
        mean = [p["mae_mean"] for p in points]
        spread = [p["mae_std"] for p in points]
        line = ax.errorbar(n, mean, yerr=spread, marker="o", capsize=3,
                           label=f"{label}, {normalization}")
        colours[label] = line[0].get_color()
    for label, points in (earlier or {}).get("curves", {}).items():
        ax.plot([p["n_train"] for p in points], [p["mae_mean"] for p in points], ls="--",
                marker="x", color=colours.get(label), alpha=0.7,
                label=f"{label}, {earlier.get('normalization', '?')}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n_train (QM9 molecules)")
    ax.set_ylabel(f"test MAE per component ({unit})")
    ax.set_title("GFN2-xTB dipole vectors, lambda = 1 Wigner kernel")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=HERE / "qm9_xtb_dipole.toml")
    parser.add_argument("--n-train", type=int, nargs="+", default=[100, 250, 500, 1000, 2000])
    parser.add_argument("--nu-max", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--search-size", type=int, default=400,
                        help="molecules the CV search looks at (a random subset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--compare", type=Path, default=None,
                        help="JSON of an earlier run (this script's --json) to draw dashed")
    args = parser.parse_args()
    earlier = json.loads(args.compare.read_text()) if args.compare else None

    config, dataset = ensure_kernels(args.config)
    start = time.perf_counter()
    with strict_reads():
        k_train_all = wkdist.read_kernels(config.store.path, "K_train_lambda1")[...]
        k_test_all = wkdist.read_kernels(config.store.path, "K_test_lambda1")[...]
    print(f"read the lambda = 1 kernels in {time.perf_counter() - start:.1f} s", flush=True)
    y_train = to_spherical(dataset.y_train, "vector")[1]
    n_pool = dataset.n_train
    curves: dict[str, list[dict]] = {}
    for nu_max in args.nu_max:
        label = f"nu_max = {nu_max}"
        curves[label] = []
        for n in sorted(args.n_train):
            if n > n_pool:
                print(f"n_train {n}: larger than the store's {n_pool} training molecules; skipped")
                continue
            splits = 1 if n == n_pool else args.splits
            errors, seconds = [], []
            for split in range(splits):
                begin = time.perf_counter()
                rng = np.random.default_rng([args.seed, n, split])
                chosen = np.sort(rng.choice(n_pool, size=n, replace=False))
                rows = (chosen[:, None] * 3 + np.arange(3)).reshape(-1)
                k_train = k_train_all[:nu_max + 1][:, rows][:, :, rows]
                k_test = k_test_all[:nu_max + 1][:, :, rows]
                spherical, chosen_hyper = fit_point(k_train, k_test, y_train[chosen],
                                                    search_size=args.search_size,
                                                    seed=args.seed + split)
                prediction = from_spherical({1: spherical}, "vector")
                point = target_errors(dataset.y_test, prediction, "vector")
                point["error_norm"] = float(np.mean(np.linalg.norm(
                    prediction - dataset.y_test, axis=1)))
                point.update(chosen_hyper)
                errors.append(point)
                seconds.append(time.perf_counter() - begin)
                print(f"{label} n_train {n} split {split}: MAE {point['mae']:.4f} "
                      f"|mu| MAE {point['mae_magnitude']:.4f} {dataset.unit} "
                      f"({seconds[-1]:.1f} s)", flush=True)
            mae = np.array([e["mae"] for e in errors])
            curves[label].append({
                "n_train": n, "splits": splits, "mae_mean": float(mae.mean()),
                "mae_std": float(mae.std(ddof=1)) if splits > 1 else 0.0,
                "mae_magnitude_mean": float(np.mean([e["mae_magnitude"] for e in errors])),
                "error_norm_mean": float(np.mean([e["error_norm"] for e in errors])),
                "seconds_per_split": float(np.median(seconds)), "runs": errors})
    print(f"\n{'model':<12}{'n_train':>8}{'splits':>7}{'MAE':>9}{'std':>8}{'|mu| MAE':>10}"
          f"  ({dataset.unit}; test set: {dataset.n_test} molecules)")
    for label, points in curves.items():
        for p in points:
            print(f"{label:<12}{p['n_train']:>8}{p['splits']:>7}{p['mae_mean']:>9.4f}"
                  f"{p['mae_std']:>8.4f}{p['mae_magnitude_mean']:>10.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "config": str(args.config), "normalization": config.kernel.normalization,
            "unit": dataset.unit, "n_test": dataset.n_test, "curves": curves}, indent=2))
    if args.plot:
        plot(args.plot, curves, dataset.unit or "", normalization=config.kernel.normalization,
             earlier=earlier)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
