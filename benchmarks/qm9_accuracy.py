"""QM9 U0 test MAE over several random splits, with every choice made inside the training set.

The kernels of a pool of n_train + n_test random QM9 molecules are computed once (and kept in
a zarr file, so a rerun reuses them); each split then draws its own train and test sets from
the pool, fits the per-element baseline and (c0, a, b) by k-fold CV on the training part only,
solves the KRR exactly as `wkdist fit` does (same modules, dense at this size), and reports the
test MAE. Prints the mean and spread over splits, and writes them as JSON with --json.

    python benchmarks/qm9_accuracy.py --n-train 500 --n-test 1000 --splits 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import zarr

import wkdist
from wkdist.data.qm9 import load_qm9
from wkdist.hyper import element_counts, fit_mixing, species_baseline
from wkdist.model import baseline_values
from wkdist.solve import predict_dense, solve_dense

MEV_PER_EV = 1000.0


def pool_kernels(qm9, pool: np.ndarray, settings: wkdist.KernelSettings, cache: Path) -> np.ndarray:
    """K^nu of the pool, (nu_max + 1, m, m); cached in zarr keyed by pool and settings."""
    key = json.dumps({"pool": pool.tolist(), "settings": settings.to_dict()})
    if cache.exists():
        group = zarr.open_group(cache, mode="r")
        if group.attrs.get("key") == key:
            return group["K"][...]
    start = time.perf_counter()
    kernels = wkdist.structure_kernels(qm9.frames(pool), settings=settings).transpose(2, 0, 1)
    print(f"pool kernels: {len(pool)} molecules in {time.perf_counter() - start:.1f} s")
    group = zarr.open_group(cache, mode="w")
    group.create_array("K", data=kernels)
    group.attrs["key"] = key
    return kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("runs/qm9_accuracy_pool.zarr"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    settings = wkdist.KernelSettings()
    qm9 = load_qm9()
    rng = np.random.default_rng(args.seed)
    m = args.n_train + args.n_test
    pool = np.sort(rng.choice(qm9.n, size=m, replace=False))
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    kernels = pool_kernels(qm9, pool, settings, args.cache)
    frames = qm9.frames(pool)
    y = qm9.targets(pool)
    counts, symbols = element_counts([a.get_chemical_symbols() for a in frames])

    maes = []
    for split in range(args.splits):
        order = np.random.default_rng(args.seed + 1 + split).permutation(m)
        train, test = order[:args.n_train], order[args.n_train:]
        baseline = species_baseline(counts[train], y[train], symbols)
        y_res = y[train] - baseline_values([frames[i] for i in train], baseline)
        k_train = kernels[:, train][:, :, train]
        search = fit_mixing(k_train, y_res, folds=args.folds, seed=split)
        alpha = solve_dense(k_train, y_res, coefficients=search.coefficients)
        prediction = baseline_values([frames[i] for i in test], baseline) + predict_dense(
            kernels[:, test][:, :, train], alpha, coefficients=search.coefficients)
        mae = float(np.mean(np.abs(prediction - y[test]))) * MEV_PER_EV
        maes.append(mae)
        print(f"split {split}: test MAE {mae:6.1f} meV (CV MAE {search.cv_mae * MEV_PER_EV:6.1f}"
              f" meV; c0 {search.c0:.3g}, a {search.a:.3g}, b {search.b:.3g})")
    maes = np.array(maes)
    print(f"n_train {args.n_train}, n_test {args.n_test}, {args.splits} splits: test MAE "
          f"{maes.mean():.1f} meV (std {maes.std(ddof=1) if len(maes) > 1 else 0:.1f}, "
          f"range {maes.min():.1f}-{maes.max():.1f})")
    if args.json:
        args.json.write_text(json.dumps({"n_train": args.n_train, "n_test": args.n_test,
                                         "mae_meV": maes.tolist(),
                                         "settings": settings.to_dict()}, indent=2))


if __name__ == "__main__":
    main()
