"""`wkdist plan`'s stage costs (wkdist.app.plan.stage_costs): the search priced as it runs, on
the workers, the factorization by its flops and its longest chain of dependent tasks
(wkdist.krr.solve.factor_flops), and the scale check as extra factorizations."""

from __future__ import annotations

import pytest
from store_helpers import ASE_SHAPE_WARNING

from wkdist.app.config import FitConfig
from wkdist.app.plan import (
    GRID_SHAPES,
    POLISH_SHAPES,
    ROUND_TRIP_S,
    SEARCH_READ_BYTES_S,
    TILED_DGEMM_SHARE,
    stage_costs,
)
from wkdist.app.rates import Rates
from wkdist.krr.folds import task_bytes
from wkdist.krr.solve import factor_flops

RATES = Rates(pairs_per_core_s=1000.0, measured_pairs=1024, measured_s=1.0,
              measured_lambda_max=3, scale=1.0, dgemm_gflops=40.0, eigh_800_s=0.2, cpu="test")
PLAN = {"pair_cost": 1e9, "lambdas": [0], "tile_size": 256}


def _costs(cores: int, **fit) -> dict:
    return stage_costs(PLAN, n_train=110_000, n_test=20_000, nu_max=4,
                       fit=FitConfig(**{"max_search": 5000, **fit}), rates=RATES,
                       cores=cores, factor_tile=0)


def test_search_runs_on_the_workers_grid_in_parallel_then_one_shape_at_a_time():
    def fold(rows: int) -> float:  # eigendecomposition, read of the 5 channels, round trip
        return 0.2 * (rows / 800) ** 3 + 8 * 5 * 5000 ** 2 / SEARCH_READ_BYTES_S + ROUND_TRIP_S

    per_fold = fold(5000 * 0.9)
    # enough cores for every grid task at once: one wave for the grid, one per polish step,
    # and a profile round after each
    assert _costs(GRID_SHAPES * 10)["search_s"] == pytest.approx(
        (1 + POLISH_SHAPES) * (per_fold + ROUND_TRIP_S))
    # one core: every eigendecomposition in a row
    assert _costs(1)["search_s"] == pytest.approx(
        (GRID_SHAPES + POLISH_SHAPES) * (10 * per_fold + ROUND_TRIP_S))
    # holdout: one fold per shape
    assert _costs(1, mode="holdout")["search_s"] == pytest.approx(
        (GRID_SHAPES + POLISH_SHAPES) * (fold(5000 * 0.8) + ROUND_TRIP_S))
    assert _costs(640)["search_task_bytes"] == task_bytes(5000)
    assert _costs(640, coefficients=(1.0,) * 5)["search_s"] == 0.0


def test_factor_flops_walk_the_factor_graph():
    for n, tile in [(4096, 1024), (5000, 1024), (50_000, 1024), (1000, 1024)]:
        work, chain = factor_flops(n, tile)
        assert work == pytest.approx(n ** 3 / 3, rel=1e-12)  # all of Cholesky's flops
        assert chain <= work
    t = 1000.0
    assert factor_flops(1000, 1000) == pytest.approx((t ** 3 / 3, t ** 3 / 3))
    # two tiles: potrf, trsm, syrk + potrf, all in one chain
    assert factor_flops(2000, 1000)[1] == pytest.approx(8 / 3 * t ** 3)
    # three tiles (by hand): potrf 1/3 -> trsm 1 (L10) -> syrk + potrf 4/3 (L11) ->
    # gemm + trsm 3 (L21) -> syrk + potrf 4/3 (L22): 7 T^3 of 9 T^3
    assert factor_flops(3000, 1000) == pytest.approx((9 * t ** 3, 7 * t ** 3))
    # the chain grows as nt^2 (one pre task per panel, spaced by panels), the work as nt^3
    ratio = factor_flops(64 * 1000, 1000)[1] / factor_flops(32 * 1000, 1000)[1]
    assert 3.5 < ratio < 4.5


def test_factorization_is_the_longer_of_work_over_cores_and_the_chain():
    rate = TILED_DGEMM_SHARE * RATES.dgemm_gflops * 1e9
    work, chain = factor_flops(110_000, 1024)
    assert _costs(1)["factor_s"] == pytest.approx(work / rate)
    assert _costs(640)["factor_s"] == pytest.approx(chain / rate)  # 640 cores: chain-bound
    assert _costs(10**6)["factor_s"] == pytest.approx(chain / rate)
    # one single-threaded factorization task per worker process, whatever its cores
    few = stage_costs(PLAN, n_train=110_000, n_test=20_000, nu_max=4,
                      fit=FitConfig(max_search=5000), rates=RATES, cores=640, factor_tile=0,
                      processes=10)
    assert few["factor_s"] == pytest.approx(work / 10 / rate)


def test_scale_check_costs_one_factorization_of_the_kept_rows_per_factor():
    base = _costs(640)
    checked = _costs(640, scale_check=(0.5, 1.0, 2.0), validation_fraction=0.1)
    assert base["scale_check_s"] == 0.0
    rate = TILED_DGEMM_SHARE * RATES.dgemm_gflops * 1e9
    work, chain = factor_flops(99_000, 1024)
    assert checked["scale_check_s"] == pytest.approx(3 * max(work / 640 / rate, chain / rate))
    assert checked["factor_s"] == base["factor_s"]


@ASE_SHAPE_WARNING
def test_remeasure_replaces_the_cached_rates(tmp_path, monkeypatch):
    """A rate measured on a loaded machine stays cached until `wkdist plan --remeasure`, which
    measures again and caches the new figure."""
    import json

    from ase.build import molecule

    from wkdist import KernelSettings
    from wkdist.app.rates import cache_file, measure_rates

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    sample = [molecule(name) for name in ("CH4", "H2O", "NH3", "CH3OH")]
    settings = KernelSettings(nu_max=2, lambda_max=2)
    first = measure_rates(sample, settings, cap_s=0.5)
    assert not first.cached and first.pairs_per_core_s > 0
    entries = json.loads(cache_file().read_text())
    (key,) = entries
    entries[key]["pairs_per_core_s"] = 1e-3  # as if measured under a heavy load
    cache_file().write_text(json.dumps(entries))
    stale = measure_rates(sample, settings, cap_s=0.5)
    assert stale.cached and stale.pairs_per_core_s == 1e-3
    fresh = measure_rates(sample, settings, cap_s=0.5, refresh=True)
    assert not fresh.cached and fresh.pairs_per_core_s > 1.0
    assert json.loads(cache_file().read_text())[key]["pairs_per_core_s"] == (
        fresh.pairs_per_core_s)
    assert measure_rates(sample, settings, cap_s=0.5).pairs_per_core_s == fresh.pairs_per_core_s
