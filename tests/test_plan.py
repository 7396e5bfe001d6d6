"""`wkdist plan`'s stage costs (wkdist.app.plan.stage_costs): the search priced as it runs, on
the workers, and the scale check as extra factorizations."""

from __future__ import annotations

import pytest

from wkdist.app.config import FitConfig
from wkdist.app.plan import GRID_SHAPES, POLISH_SHAPES, stage_costs
from wkdist.app.rates import Rates
from wkdist.krr.folds import task_bytes

RATES = Rates(pairs_per_core_s=1000.0, measured_pairs=1024, measured_s=1.0,
              measured_lambda_max=3, scale=1.0, dgemm_gflops=40.0, eigh_800_s=0.2, cpu="test")
PLAN = {"pair_cost": 1e9, "lambdas": [0], "tile_size": 256}


def _costs(cores: int, **fit) -> dict:
    return stage_costs(PLAN, n_train=110_000, n_test=20_000, nu_max=4,
                       fit=FitConfig(**{"max_search": 5000, **fit}), rates=RATES,
                       cores=cores, factor_tile=0)


def test_search_runs_on_the_workers_grid_in_parallel_then_one_shape_at_a_time():
    per_fold = 0.2 * (5000 * 0.9 / 800) ** 3
    # enough cores for every grid task at once: one wave for the grid, one per polish step
    assert _costs(GRID_SHAPES * 10)["search_s"] == pytest.approx((1 + POLISH_SHAPES) * per_fold)
    # one core: every eigendecomposition in a row
    assert _costs(1)["search_s"] == pytest.approx((GRID_SHAPES + POLISH_SHAPES) * 10 * per_fold)
    # holdout: one fold per shape
    assert _costs(1, mode="holdout")["search_s"] == pytest.approx(
        (GRID_SHAPES + POLISH_SHAPES) * 0.2 * (5000 * 0.8 / 800) ** 3)
    assert _costs(640)["search_task_bytes"] == task_bytes(5000)
    assert _costs(640, coefficients=(1.0,) * 5)["search_s"] == 0.0


def test_scale_check_costs_one_factorization_of_the_kept_rows_per_factor():
    base = _costs(640)
    checked = _costs(640, scale_check=(0.5, 1.0, 2.0), validation_fraction=0.1)
    assert base["scale_check_s"] == 0.0
    assert checked["scale_check_s"] == pytest.approx(3 * 0.9 ** 3 * base["factor_s"])
