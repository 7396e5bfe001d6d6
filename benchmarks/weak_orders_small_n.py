"""How often the CV search switches body orders off on small QM9 training sets.

For ``--sets`` disjoint random sets of ``--n`` QM9 molecules (seeded), at the default kernel
settings and each ``--normalization``: the per-element baseline, (c0, a, b) by 10-fold CV
(``wkdist.krr.hyper.fit_mixing``, as ``wkdist fit``), and each order's contribution c_nu times the
mean diagonal of K^nu. A set is flagged when an order nu >= 1 contributes less than 1e-6 of the
largest one: exactly the condition under which ``wkdist fit`` warns.

    python benchmarks/weak_orders_small_n.py --n 45 --sets 8
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

import wkdist
from wkdist.app.pipeline import _weak_orders
from wkdist.data.qm9 import load_qm9
from wkdist.krr.hyper import element_counts, fit_mixing, species_baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=45, help="molecules per training set")
    parser.add_argument("--sets", type=int, default=8)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--normalization", nargs="+", default=["paper", "exact"])
    args = parser.parse_args()

    qm9 = load_qm9()
    pool = np.random.default_rng(args.seed).choice(qm9.n, size=args.sets * args.n,
                                                   replace=False)
    frames, y = qm9.frames(pool), qm9.targets(pool)
    for normalization in args.normalization:
        settings = dataclasses.replace(wkdist.KernelSettings(), normalization=normalization)
        start = time.perf_counter()
        kernels = wkdist.structure_kernels(frames, settings=settings).transpose(2, 0, 1)
        print(f"{normalization}: kernels of {len(frames)} molecules in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        flagged = 0
        for s in range(args.sets):
            rows = np.arange(s * args.n, (s + 1) * args.n)
            k = kernels[:, rows][:, :, rows]
            counts, symbols = element_counts([frames[i].get_chemical_symbols() for i in rows])
            weights = species_baseline(counts, y[rows], symbols)
            residual = y[rows] - counts @ np.array([weights[x] for x in symbols])
            result = fit_mixing(k, residual, folds=args.folds, seed=0)
            diagonal = np.einsum("kii->k", k) / args.n
            contributions, warning = _weak_orders(list(result.coefficients), diagonal, label="",
                                                  search={"n_used": args.n})
            flagged += warning is not None
            print(f"{normalization} set {s}: coefficients "
                  f"{' '.join(f'{c:.2g}' for c in result.coefficients)}; contributions "
                  f"{' '.join(f'{c:.2g}' for c in contributions)}"
                  + ("; WEAK ORDERS" if warning else ""), flush=True)
        print(f"{normalization}: {flagged} of {args.sets} sets of {args.n} molecules have an "
              "order below 1e-6 of the largest", flush=True)


if __name__ == "__main__":
    main()
