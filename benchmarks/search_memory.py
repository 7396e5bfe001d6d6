"""Peak memory and time of the (c0, a, b) search (wkdist.krr.hyper.fit_mixing) at m structures.

Synthetic PSD K^nu (Gaussian kernels of random features, nu_max 4), 10 folds, a small coarse
grid without polishing (the memory does not depend on the number of shapes):

    python benchmarks/search_memory.py 1500
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np

from wkdist.krr import hyper


def main() -> None:
    m = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, 8))
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    K = np.stack([np.exp(-d2 / (2 * s)) for s in (1e9, 1, 2, 4, 8)])
    del d2
    y = rng.standard_normal(m)
    inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = hyper.fit_mixing(K, y, folds=10, seed=0, polish=False, log10_b=(-1, 1, 1.0),
                              log10_r=(-1, 0, 1.0))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"m = {m}: peak RSS {peak:.0f} MiB (after building the inputs {inputs:.0f} MiB; "
          f"K^nu {K.nbytes / 2**20:.0f} MiB), search {time.perf_counter() - start:.1f} s for "
          f"{result.evaluations} shapes, CV MAE {result.cv_mae:.6f}")


if __name__ == "__main__":
    main()
