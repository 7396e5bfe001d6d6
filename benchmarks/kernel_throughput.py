"""Throughput of the Wigner-kernel engine on QM9 (a script, not a test).

    python benchmarks/kernel_throughput.py [--n 200] [--repeats 3] [--json out.json]
        [--cutoff 4] [--cutoff-smoothing 2] [--lambda-max 3] [--lam 0] [--reference]

Computes the symmetric kernel of ``--n`` random QM9 molecules (seeded) with the default
``KernelSettings()`` (cutoff 4, cutoff_smoothing 2, nu_max 4, lambda_max 3, the default
normalization, reduced scheme) unless told otherwise; ``--reference`` starts from the reference
settings (wkdist.REFERENCE_QM9: cutoff 5, cutoff_smoothing 0.5) instead, and ``--lam`` 1 or 2
times the equivariant kernels of that order. It reports:

- same-species atom pairs per second. With ``frames_b=None`` only structure pairs b >= a are
  computed, so the count is sum_{a <= b} sum_species n_a(s) n_b(s);
- counted GFLOP/s (what the arithmetic needs, not what the CPU executes). Per atom pair:
  * iterations and invariant products: ``invariant_schedule(lambda_max, nu_max, scheme).flops``
    (``equivariant_schedule(lambda_max, nu_max, lam)`` with ``--lam``), as planned by
    wkdist.kernels.plans: 3 per term of a product program (two multiplies and an add), the
    sparse contractions of a factored step;
  * nu = 1 (closed form, factored): for every same-species neighbour pair (j, j')
    2 (lambda_max + 1)^2 flops (a radial factor times Y_l(j') accumulated into a per-neighbour
    vector v_j, all l, m) plus ~30 for the radial factor itself (s^2, the exponential, the
    scaled i_l recurrence; the exp and pow calls count as one flop each, so this undercounts
    them), then per neighbour j of the first centre that has a same-species partner
    sum_l 2 (2 l + 1)^2 for the outer product Y_l(j) v_j^T.
  Neighbours are counted here independently of the engine (cutoff sphere, centre excluded);
- numpy DGEMM GFLOP/s (n x n matmul, 2 n^3 flops; median of 5 before and 5 after the kernel
  timings) in the same run, as the machine's practical arithmetic peak, and the figure of merit
  **same-species atom pairs per second per DGEMM GFLOP/s**, which depends much less on the
  machine and on its load than either rate alone (it still depends on the CPU model);
- the CPU model (/proc/cpuinfo) and the load average before and after;
- the split of time between packing (neighbour lists, harmonics), nu = 1 plus structure sums
  (a run with nu_max = 1 does no iteration) and the iterations (the difference);
- the first-call cost: a fresh interpreter with an empty NUMBA_CACHE_DIR times ``import
  wkdist`` and a tiny call (compilation), a second one reuses that cache (loading only).

Times are medians over ``--repeats`` (the machines are shared, so single timings are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import wkdist
from wkdist import (
    REFERENCE_QM9,
    KernelSettings,
    equivariant_structure_kernels,
    structure_kernels,
)
from wkdist.app.rates import cpu_model
from wkdist.data import load_qm9
from wkdist.kernels import equivariant_schedule, invariant_schedule

_CPU_SECONDS: list[float] = []  # process CPU time of the last median_time call, per repeat


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    """Median wall time over repeats (also records CPU time in _CPU_SECONDS)."""
    times = []
    _CPU_SECONDS.clear()
    for _ in range(repeats):
        cpu = time.process_time()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        _CPU_SECONDS.append(time.process_time() - cpu)
    return float(np.median(times)), times


def neighbour_species_counts(frames, cutoff: float, species: np.ndarray) -> np.ndarray:
    """(total atoms, n_species): neighbours of each species inside the cutoff sphere."""
    rows = []
    for atoms in frames:
        pos = atoms.get_positions()
        d2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
        mask = d2 < cutoff * cutoff
        np.fill_diagonal(mask, False)
        onehot = (atoms.numbers[:, None] == species[None, :]).astype(np.int64)
        rows.append(mask.astype(np.int64) @ onehot)
    return np.concatenate(rows)


def pair_counts(frames, settings: KernelSettings) -> dict[str, float]:
    """Same-species atom pairs and neighbour-pair sums over structure pairs b >= a."""
    numbers = np.concatenate([a.numbers for a in frames])
    owner = np.repeat(np.arange(len(frames)), [len(a) for a in frames])
    species = np.unique(numbers)
    counts = neighbour_species_counts(frames, settings.cutoff, species).astype(np.float64)
    lmax = settings.lambda_max
    outer = sum(2 * (2 * l + 1) ** 2 for l in range(lmax + 1))
    atom_pairs = nb_pairs = nb_with_partner = 0.0
    for z in species:
        sel = numbers == z
        c, o = counts[sel], owner[sel]
        upper = o[:, None] <= o[None, :]  # structure pairs b >= a, as computed
        atom_pairs += upper.sum()
        nb_pairs += ((c @ c.T) * upper).sum()
        # neighbours j of the first centre whose species also occurs around the second
        nb_with_partner += ((c @ (c.T > 0)) * upper).sum()
    nu1_flops = nb_pairs * (2 * (lmax + 1) ** 2 + 30) + nb_with_partner * outer
    return {
        "atom_pairs": atom_pairs,
        "neighbour_pairs": nb_pairs,
        "neighbour_pairs_per_atom_pair": nb_pairs / atom_pairs,
        "nu1_flops": nu1_flops,
        "nu1_flops_per_atom_pair": nu1_flops / atom_pairs,
    }


def dgemm_samples(size: int, repeats: int = 5) -> list[float]:
    """GFLOP/s of repeats n x n matmuls (after one to warm the BLAS threads)."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    a @ b
    _, times = median_time(lambda: a @ b, repeats)
    return [2.0 * size**3 / t / 1e9 for t in times]


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    parts = [
        f"{p.get('internal_api')} {p.get('version')} ({p.get('threading_layer', '?')}, "
        f"{p.get('num_threads')} threads, {p.get('architecture', '?')})"
        for p in threadpool_info() if p.get("user_api") == "blas"
    ]
    return "; ".join(parts) or "none found"


_FRESH = textwrap.dedent(
    """
    import json, time
    t0 = time.perf_counter()
    import wkdist
    from ase.build import molecule
    t1 = time.perf_counter()
    wkdist.structure_kernels([molecule("CH4"), molecule("H2O")])
    t2 = time.perf_counter()
    wkdist.structure_kernels([molecule("CH4"), molecule("H2O")])
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1, "second_call_s": t3 - t2}))
    """
)


def compile_times() -> dict[str, object]:
    """Two fresh interpreters sharing one new NUMBA_CACHE_DIR: cold, then warm."""
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="wkdist-numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("cold", "warm"):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", _FRESH], env=env, capture_output=True, text=True,
                check=False,
            )
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"{label} subprocess failed:\n{proc.stderr}")
            entry = json.loads(proc.stdout.strip().splitlines()[-1])
            entry["process_wall_s"] = wall
            entry["cache_files"] = sum(len(f) for _, _, f in os.walk(cache))
            results[label] = entry
    return results


def _plain(value):
    # numpy scalars in the figures -> JSON numbers
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="QM9 molecules (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported")
    parser.add_argument("--reference", action="store_true",
                        help="start from wkdist.REFERENCE_QM9 instead of KernelSettings()")
    parser.add_argument("--cutoff", type=float, default=None)
    parser.add_argument("--cutoff-smoothing", type=float, default=None)
    parser.add_argument("--nu-max", type=int, default=None)
    parser.add_argument("--lambda-max", type=int, default=None)
    parser.add_argument("--scheme", default=None, choices=("reduced", "full"))
    parser.add_argument("--lam", type=int, default=0,
                        help="0: invariant kernels (default); 1 or more: equivariant of that order")
    parser.add_argument("--dgemm-size", type=int, default=2000)
    parser.add_argument("--cache-dir", default=None, help="QM9 cache (default: wkdist's)")
    parser.add_argument("--frames", type=Path, default=None,
                        help="take the molecules from this file (any ase format) instead of QM9")
    parser.add_argument("--no-compile", action="store_true", help="skip the fresh-process test")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.n < 2 or args.repeats < 1:
        parser.error("--n must be >= 2 and --repeats >= 1")

    import numba

    base = REFERENCE_QM9 if args.reference else KernelSettings()
    pinned = {"cutoff": args.cutoff, "cutoff_smoothing": args.cutoff_smoothing,
              "nu_max": args.nu_max, "lambda_max": args.lambda_max, "scheme": args.scheme}
    settings = replace(base, **{k: v for k, v in pinned.items() if v is not None})
    settings_nu1 = replace(settings, nu_max=1)
    if not 0 <= args.lam <= settings.lambda_max:
        parser.error(f"--lam must be between 0 and lambda_max = {settings.lambda_max}")
    lam = args.lam

    def kernels(s: KernelSettings):
        if lam == 0:
            return structure_kernels(frames, settings=s)
        return equivariant_structure_kernels(frames, settings=s, lam=lam)

    rng = np.random.default_rng(args.seed)
    if args.frames is None:
        qm9 = load_qm9(args.cache_dir)
        frames = qm9.frames(np.sort(rng.choice(qm9.n, size=args.n, replace=False)))
        source = "QM9 molecules"
    else:
        from ase.io import read

        pool = read(args.frames, index=":")
        if len(pool) < args.n:
            parser.error(f"--frames: expected at least --n = {args.n} structures, got {len(pool)}")
        frames = [pool[i] for i in np.sort(rng.choice(len(pool), size=args.n, replace=False))]
        source = f"structures of {args.frames}"
    n_atoms = sum(len(a) for a in frames)

    # compile (or load from cache) outside the timings
    for s in (settings, settings_nu1):
        if lam == 0:
            structure_kernels(frames[:2], settings=s)
        else:
            equivariant_structure_kernels(frames[:2], settings=s, lam=lam)

    counts = pair_counts(frames, settings)
    schedule = (invariant_schedule(settings.lambda_max, settings.nu_max, settings.scheme)
                if lam == 0 else equivariant_schedule(settings.lambda_max, settings.nu_max, lam))
    iter_flops = schedule.flops * counts["atom_pairs"]

    load_before = os.getloadavg()
    dgemm_before = dgemm_samples(args.dgemm_size)
    t_full, all_full = median_time(lambda: kernels(settings), args.repeats)
    # CPU seconds barely depend on other processes stealing cores (wall time does): divided by
    # the thread count they estimate the wall time on otherwise idle cores (an upper bound:
    # idle threads that spin also count).
    cpu_full = float(np.median(_CPU_SECONDS))
    t_nu1, all_nu1 = median_time(lambda: kernels(settings_nu1), args.repeats)
    try:  # packing alone (engine internals: skipped if the module moves)
        from wkdist.engine.structures import pack_structures, species_of

        species = species_of(frames)
        t_pack, _ = median_time(
            lambda: pack_structures(frames, settings, species=species), args.repeats
        )
    except (ImportError, TypeError):
        t_pack = float("nan")
    t_iter = max(t_full - t_nu1, 0.0)
    dgemm = float(np.median(dgemm_before + dgemm_samples(args.dgemm_size)))
    load_after = os.getloadavg()
    compiled = None if args.no_compile else compile_times()

    pairs = counts["atom_pairs"]
    total_flops = counts["nu1_flops"] + iter_flops
    fig = {
        "n_structures": args.n,
        "seed": args.seed,
        "n_atoms": n_atoms,
        "settings": settings.to_dict(),
        "structure_pairs": args.n * (args.n + 1) // 2,
        **counts,
        "iteration_flops_per_atom_pair": schedule.flops,
        "time_s": t_full,
        "time_all_s": all_full,
        "time_nu1_s": t_nu1,
        "time_nu1_all_s": all_nu1,
        "time_pack_s": t_pack,
        "time_iterations_s": t_iter,
        "atom_pairs_per_s": pairs / t_full,
        # the fastest repeat: on a shared machine, the least disturbed estimate
        "atom_pairs_per_s_best": pairs / min(all_full),
        "cpu_s": cpu_full,
        "atom_pairs_per_cpu_s": pairs / cpu_full,
        "gflops_counted": total_flops / t_full / 1e9,
        # nu = 1 rate net of packing (Python/numpy work that counts no flops)
        "gflops_nu1": counts["nu1_flops"] / max(t_nu1 - np.nan_to_num(t_pack), 1e-12) / 1e9,
        "gflops_iterations": iter_flops / t_iter / 1e9 if t_iter > 0 else float("nan"),
        "dgemm_size": args.dgemm_size,
        "dgemm_gflops": dgemm,
        "pairs_per_s_per_dgemm_gflops": pairs / t_full / dgemm,
        "lam": lam,
        "cpu_model": cpu_model(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.config.THREADING_LAYER,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "blas": blas_info(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "wkdist": wkdist.__version__,
        "compile": compiled,
    }

    kind = "invariant" if lam == 0 else f"equivariant lambda={lam}"
    print(f"wkdist {wkdist.__version__} kernel throughput ({kind}): {args.n} {source} (seed "
          f"{args.seed}, {n_atoms} atoms), cutoff={settings.cutoff:g}, "
          f"cutoff_smoothing={settings.cutoff_smoothing:g}, nu_max={settings.nu_max}, "
          f"lambda_max={settings.lambda_max}, normalization={settings.normalization}, "
          f"scheme={settings.scheme}, median of {args.repeats}")
    print(f"  CPU {fig['cpu_model']}; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}")
    print(f"  numba threads {fig['numba_threads']} (layer {fig['numba_threading_layer']}), "
          f"cpus {fig['cpu_count']}, OPENBLAS_CORETYPE={fig['openblas_coretype']}")
    print(f"  BLAS: {fig['blas']}")
    print(f"  structure pairs (b >= a)         {fig['structure_pairs']:>14,}")
    print(f"  same-species atom pairs          {pairs:>14,.0f}")
    print(f"  neighbour pairs per atom pair    {counts['neighbour_pairs_per_atom_pair']:>14.1f}")
    print(f"  flop per atom pair: nu=1         {counts['nu1_flops_per_atom_pair']:>14,.0f}")
    print(f"  flop per atom pair: iterations   {schedule.flops:>14,}")
    rows = [
        (f"full kernel (nu_max={settings.nu_max})", t_full, all_full),
        ("nu_max=1 run (pack + nu=1 + sums)", t_nu1, all_nu1),
        ("  of which packing", t_pack, None),
        ("iterations (difference)", t_iter, None),
    ]
    print(f"  {'time':34s} {'median s':>10s}  {'share':>6s}  every repeat")
    for label, t, every in rows:
        share = t / t_full if t_full > 0 else float("nan")
        extra = " ".join(f"{x:.2f}" for x in every) if every else ""
        print(f"  {label:34s} {t:10.3f}  {share:6.1%}  {extra}")
    print(f"  same-species atom pairs / s      {fig['atom_pairs_per_s']:>14,.0f}"
          f"   (best repeat {fig['atom_pairs_per_s_best']:,.0f})")
    idle = fig["atom_pairs_per_cpu_s"] * fig["numba_threads"]
    print(f"  same-species atom pairs / CPU-s  {fig['atom_pairs_per_cpu_s']:>14,.0f}"
          f"   (x {fig['numba_threads']} threads = {idle:,.0f}/s on idle cores)")
    print(f"  counted GFLOP/s (all)            {fig['gflops_counted']:>14.2f}")
    print(f"  counted GFLOP/s nu=1 (no pack)   {fig['gflops_nu1']:>14.2f}")
    print(f"  counted GFLOP/s iterations       {fig['gflops_iterations']:>14.2f}")
    print(f"  numpy DGEMM {args.dgemm_size}^2 GFLOP/s        {dgemm:>14.1f}")
    print(f"  pairs/s per DGEMM GFLOP/s        {fig['pairs_per_s_per_dgemm_gflops']:>14,.0f}")
    if compiled:
        for label in ("cold", "warm"):
            c = compiled[label]
            print(f"  fresh process, {label} NUMBA_CACHE_DIR: import {c['import_s']:.2f} s, "
                  f"first call {c['first_call_s']:.2f} s, second call {c['second_call_s']:.3f} s, "
                  f"process {c['process_wall_s']:.1f} s ({c['cache_files']} cache files)")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2, default=_plain) + "\n")
        print(f"  wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
