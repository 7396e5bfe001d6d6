"""What this machine computes per second, measured for a job's own settings and data.

``measure_rates`` times, on one thread (a worker's numba threads and the driver's BLAS thread
are what a run gets per core):

- the kernel engine on a sample of the job's own structures at its settings: structure pairs
  per core-second. The sample grows (2 x 2, 4 x 4, ... structures) until one block takes a
  good fraction of the time cap; settings too expensive for the cap (lambda_max > 4) are
  measured at lambda_max 3 and scaled by the engine's measured growth, ``lambda_cost``;
- DGEMM (GFLOP/s) and a symmetric eigendecomposition of 800 x 800, which price the tiled
  Cholesky and the mixing search.

Results are cached per settings, sample, CPU and wkdist version in
``$XDG_CACHE_HOME/wkdist/rates.json`` (default ``~/.cache``), so ``wkdist plan`` measures once.
Numba's first compilation (seconds, once per installation) is not part of the measurement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg  # loaded before threadpool_limits, so that its BLAS is limited too
from ase import Atoms

from ..engine.settings import KernelSettings

__all__ = ["Rates", "measure_rates", "cpu_model", "cache_file"]

CAP_S = 3.0  # seconds the engine measurement may take (compilation aside)
_EXTRAPOLATE_ABOVE = 4  # lambda_max above which the engine is measured at lambda_max 3


@dataclass(frozen=True)
class Rates:
    pairs_per_core_s: float   # the engine at the job's settings (after ``scale``)
    measured_pairs: int       # structure pairs of the block that was timed
    measured_s: float
    measured_lambda_max: int
    scale: float              # measured rate / this = the settings' rate (1: measured as is)
    dgemm_gflops: float       # one thread
    eigh_800_s: float         # one thread, 800 x 800
    cpu: str
    cached: bool = False


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "wkdist", "rates.json")


def _key(settings: KernelSettings, sample: Sequence[Atoms], cpu: str) -> str:
    from .. import __version__

    digest = hashlib.sha256(json.dumps([settings.to_dict(), cpu, __version__],
                                       sort_keys=True).encode())
    for atoms in sample:
        digest.update(atoms.numbers.tobytes() + atoms.get_positions().tobytes())
    return digest.hexdigest()[:32]


def _read_cache(key: str) -> Rates | None:
    try:
        entry = json.loads(cache_file().read_text()).get(key)
        return Rates(**{**entry, "cached": True}) if isinstance(entry, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def _write_cache(key: str, rates: Rates) -> None:
    file = cache_file()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            entries = json.loads(file.read_text())
        except (OSError, ValueError):
            entries = {}
        entries[key] = {k: v for k, v in dataclasses.asdict(rates).items() if k != "cached"}
        temporary = file.with_name(f".{file.name}.{os.getpid()}")
        temporary.write_text(json.dumps(entries, indent=1, sort_keys=True))
        os.replace(temporary, file)
    except OSError:  # a read-only home: measure again next time
        pass


def _engine(sample: Sequence[Atoms], settings: KernelSettings, cap_s: float
            ) -> tuple[int, float]:
    """(pairs, seconds) of the largest k x k block timed within the cap."""
    from ..engine.api import structure_kernels

    structure_kernels(sample[:1], sample[:1], settings=settings)  # compile (or load) first
    spent, k, best = 0.0, 2, (1, 1e-9)
    while True:
        a = sample[:k]
        b = sample[k:2 * k] if len(sample) >= 2 * k else sample[:k]
        start = time.perf_counter()
        structure_kernels(a, b, settings=settings)
        elapsed = time.perf_counter() - start
        spent += elapsed
        best = (len(a) * len(b), elapsed)
        if elapsed >= 0.2 * cap_s or 2 * k > len(sample) or spent + 4.5 * elapsed > cap_s:
            return best
        k *= 2


def _dgemm_gflops() -> float:
    """Median of 5 products of 512 x 512 matrices, after a warm-up one."""
    a = np.random.default_rng(0).standard_normal((512, 512))
    a @ a
    times = []
    for _ in range(5):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return 2 * 512 ** 3 / float(np.median(times)) / 1e9


def _eigh_800_s() -> float:
    """Median of 3 (after a warm-up call: LAPACK's first call pays its own setup)."""
    x = np.random.default_rng(1).standard_normal((800, 800))
    spd = x @ x.T + 800 * np.eye(800)
    scipy.linalg.eigh(spd[:50, :50])
    times = []
    for _ in range(3):
        start = time.perf_counter()
        scipy.linalg.eigh(spd)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_rates(sample: Sequence[Atoms], settings: KernelSettings, *,
                  cap_s: float = CAP_S, use_cache: bool = True,
                  refresh: bool = False) -> Rates:
    """Measure (or read from the cache) this machine's rates for ``settings`` on ``sample``
    (a few dozen of the job's own structures). ``refresh``: measure again and replace the
    cached rates (a figure measured on a loaded machine stays cached until then);
    ``use_cache=False`` neither reads nor writes the cache."""
    import numba
    from threadpoolctl import threadpool_limits

    from .config import lambda_cost

    cpu = cpu_model()
    key = _key(settings, sample, cpu)
    if use_cache and not refresh and (cached := _read_cache(key)) is not None:
        return cached
    measured = settings
    if settings.lambda_max > _EXTRAPOLATE_ABOVE:
        measured = dataclasses.replace(settings, lambda_max=3)
    scale = lambda_cost(settings.lambda_max) / lambda_cost(measured.lambda_max)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        with threadpool_limits(1):
            pairs, seconds = _engine(list(sample), measured, cap_s)
            dgemm, eigh = _dgemm_gflops(), _eigh_800_s()
    finally:
        numba.set_num_threads(threads)
    rates = Rates(pairs_per_core_s=pairs / seconds / scale, measured_pairs=pairs,
                  measured_s=seconds, measured_lambda_max=measured.lambda_max, scale=scale,
                  dgemm_gflops=dgemm, eigh_800_s=eigh, cpu=cpu)
    if use_cache:
        _write_cache(key, rates)
    return rates
