"""The Wigner-iteration executor (wkdist.kernels.wigner) against a plain einsum reference.

Random nu = 1 blocks go into the executor's work array; the reference applies the iteration of
docs/mathematics.md ("Wigner iterations with parity") literally, one (l1, l2, lambda) triple at a
time with the real coupling coefficients, and takes invariants as sum_l <a_l, b_l>_F / (2l + 1).
Both the product programs and the factored steps are checked (max_program_terms = 0 forces the
factored steps).
"""

from __future__ import annotations

import numpy as np
import pytest

from wkdist.kernels import real_clebsch_gordan
from wkdist.kernels.plans import (
    coupling_table,
    equivariant_schedule,
    invariant_schedule,
    level_layout,
)
from wkdist.kernels.wigner import BATCH, _run_schedule


def reference_levels(k1: dict, lambda_max: int, nu_max: int) -> list[dict]:
    """Blocks {(l, t): (BATCH, 2l + 1, 2l + 1)} of every nu = 1..nu_max, full iterations."""
    levels = [{(l, 0): block for l, block in k1.items()}]
    for _ in range(nu_max - 1):
        nxt: dict = {}
        for (l1, t1), a in levels[-1].items():
            for l2 in range(lambda_max + 1):
                for lam in range(abs(l1 - l2), min(l1 + l2, lambda_max) + 1):
                    c = real_clebsch_gordan(l1, l2, lam)
                    t = t1 ^ ((l1 + l2 + lam) % 2)
                    term = np.einsum("abM,cdN,pac,pbd->pMN", c, c, a, k1[l2])
                    nxt[(lam, t)] = nxt.get((lam, t), 0.0) + term
        levels.append(nxt)
    return levels


def run_executor(schedule, k1: dict) -> np.ndarray:
    """(BATCH, len(schedule.outputs)) from the numba executor."""
    lmax = schedule.lambda_max
    offsets, n_sq = level_layout(lmax)
    table = coupling_table(lmax)
    w = np.zeros((schedule.n_slots, BATCH))
    w[schedule.one] = 1.0
    for l, block in k1.items():
        d = 2 * l + 1
        w[offsets[l]:offsets[l] + d * d] = block.reshape(BATCH, d * d).T
    program = (schedule.row_slot, schedule.term_ptr, schedule.term_coef, schedule.term_a,
               schedule.term_b)
    _run_schedule(w, np.empty(BATCH), schedule.steps, schedule.targets, schedule.present, lmax,
                  n_sq, offsets, schedule.scratch, table.triples, table.cg_ptr, table.cg_index,
                  table.cg_value, table.col_ptr, table.col_index, program)
    return w[schedule.outputs].T


def random_k1(lambda_max: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {l: rng.normal(size=(BATCH, 2 * l + 1, 2 * l + 1)) for l in range(lambda_max + 1)}


@pytest.mark.parametrize("max_terms", [0, None], ids=["factored", "program"])
@pytest.mark.parametrize("scheme", ["reduced", "full"])
@pytest.mark.parametrize("lambda_max", [0, 1, 2, 3])
def test_invariant_schedules_equal_the_literal_iterations(lambda_max, scheme, max_terms):
    nu_max = 4
    extra = {} if max_terms is None else {"max_program_terms": max_terms}
    schedule = invariant_schedule(lambda_max, nu_max, scheme, **extra)
    k1 = random_k1(lambda_max, seed=lambda_max)
    levels = reference_levels(k1, lambda_max, nu_max)
    expected = np.stack([np.ones(BATCH)] + [lv[(0, 0)][:, 0, 0] for lv in levels], axis=1)
    got = run_executor(schedule, k1)
    scale = np.abs(expected).max(axis=0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * scale.max())
    for nu in range(nu_max + 1):  # each order at its own scale
        np.testing.assert_allclose(got[:, nu], expected[:, nu], rtol=0, atol=1e-13 * scale[nu])


@pytest.mark.parametrize("max_terms", [0, None], ids=["factored", "program"])
@pytest.mark.parametrize("lam", [1, 2, 3])
def test_equivariant_schedules_equal_the_literal_iterations(lam, max_terms):
    lambda_max, nu_max = 3, 4
    extra = {} if max_terms is None else {"max_program_terms": max_terms}
    schedule = equivariant_schedule(lambda_max, nu_max, lam, **extra)
    k1 = random_k1(lambda_max, seed=10 + lam)
    levels = reference_levels(k1, lambda_max, nu_max)
    d = 2 * lam + 1
    got = run_executor(schedule, k1).reshape(BATCH, nu_max + 1, d, d)
    np.testing.assert_array_equal(got[:, 0], 0.0)
    for nu in range(1, nu_max + 1):
        expected = levels[nu - 1][(lam, 0)]
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got[:, nu], expected, rtol=0, atol=1e-13 * scale)


def test_programs_are_used_at_the_default_lambda_max_and_factored_steps_beyond():
    assert set(invariant_schedule(3, 4, "reduced").steps[:, 0]) == {1}  # PRODUCT only
    assert 0 in invariant_schedule(6, 4, "reduced").steps[:, 0]  # ITERATE
