# Index names: l, l1, l2, lam (lambda) angular orders <= lambda_max; m, mu (and primed) the
# 2l + 1 real components, stored at 0..2l; sigma = +1 / -1 parity, stored as t = 0 / 1;
# nu the body order. A "level" holds every kernel block k^{nu, l, t} of one nu.
#
# This module turns the Wigner iterations (docs/mathematics.md) into small integer tables that the
# numba executor in wigner.py walks: the sparse real coupling coefficients of every
# (l1, l2, lam) triple, and a schedule of steps (iterate one level into the next, or form an
# invariant product of two levels) with, per level, which (l, t) blocks can be non-zero.
# A step is either factored (three sparse contractions through scratch slots) or a product
# program: every output entry as an explicit sum of c * x_a * x_b over entries of the two input
# levels, which the executor sums in one accumulator with no intermediate stores. Programs are
# used where their term count stays small (lambda_max up to about 4); their terms grow faster
# with lambda_max than the factored flops.
"""Coupling tables and iteration schedules (numpy, no numba)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from .coupling import real_clebsch_gordan

__all__ = [
    "CouplingTable",
    "Schedule",
    "coupling_table",
    "invariant_schedule",
    "equivariant_schedule",
    "level_layout",
    "ITERATE",
    "PRODUCT",
]

ITERATE, PRODUCT = 0, 1

# Largest product program per iteration step; beyond it the factored step is used (the program
# of lambda_max = 4 has about 2e5 terms, that of 5 about 7e5).
MAX_PROGRAM_TERMS = 400_000


def level_layout(lambda_max: int) -> tuple[np.ndarray, int]:
    """Offsets of the t = 0 blocks inside a level, and n_sq = sum_l (2l + 1)^2.

    Block (l, t) starts at t * n_sq + offsets[l] and holds its (2l + 1) x (2l + 1) matrix row
    by row; a level holds 2 * n_sq entries.
    """
    sizes = [(2 * l + 1) ** 2 for l in range(lambda_max + 1)]
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64), int(sum(sizes))


@dataclass(frozen=True)
class CouplingTable:
    """Sparse real coupling coefficients for every triple with l1, l2, lam <= lambda_max.

    Triple k is ``triples[k] = (l1, l2, lam)``; its non-zero C[m1, m2, mu] are rows
    ``cg_ptr[k]:cg_ptr[k + 1]`` of ``cg_index`` (m1, m2, mu) and ``cg_value``; the distinct
    (m1, mu) pairs among them (the columns a contraction over m2 touches) are rows
    ``col_ptr[k]:col_ptr[k + 1]`` of ``col_index``.
    """

    triples: np.ndarray
    cg_ptr: np.ndarray
    cg_index: np.ndarray
    cg_value: np.ndarray
    col_ptr: np.ndarray
    col_index: np.ndarray


@cache
def coupling_table(lambda_max: int) -> CouplingTable:
    triples, cg_ptr, cg_index, cg_value, col_ptr, col_index = [], [0], [], [], [0], []
    for l1 in range(lambda_max + 1):
        for l2 in range(lambda_max + 1):
            for lam in range(abs(l1 - l2), min(l1 + l2, lambda_max) + 1):
                cg = real_clebsch_gordan(l1, l2, lam)
                nonzero = np.argwhere(cg != 0.0)
                triples.append((l1, l2, lam))
                cg_index.append(nonzero)
                cg_value.append(cg[tuple(nonzero.T)])
                cg_ptr.append(cg_ptr[-1] + len(nonzero))
                columns = np.unique(nonzero[:, [0, 2]], axis=0)
                col_index.append(columns)
                col_ptr.append(col_ptr[-1] + len(columns))
    return CouplingTable(
        triples=np.array(triples, dtype=np.int64),
        cg_ptr=np.array(cg_ptr, dtype=np.int64),
        cg_index=np.concatenate(cg_index).astype(np.int64),
        cg_value=np.concatenate(cg_value),
        col_ptr=np.array(col_ptr, dtype=np.int64),
        col_index=np.concatenate(col_index).astype(np.int64),
    )


@dataclass(frozen=True)
class Schedule:
    """Steps from the filled nu = 1 level to the values returned per atom pair.

    ``steps[s] = (kind, a, b, c)``: ITERATE builds level c from level a (x) level 0 with the
    (lam, t) blocks where ``targets[s]`` is true, factored; PRODUCT runs program rows a:b.
    Program row r writes sum_z term_coef[z] * x[term_a[z]] * x[term_b[z]] over
    z in term_ptr[r]:term_ptr[r + 1] to slot ``row_slot[r]``: an iteration (the same sums as
    ITERATE, expanded) or an invariant product
    sum_{l, t} <level a_{l t}, level b_{l t}>_F / (2l + 1) (the lam = 0 coupling).
    ``present[level, l, t]`` says whether a block can be non-zero. ``outputs`` are the slots
    returned per atom pair; slot ``one`` always holds 1 and ``zero`` holds 0. ``flops`` counts
    floating-point operations per atom pair.
    """

    lambda_max: int
    n_levels: int
    n_slots: int
    one: int
    zero: int
    scratch: int
    steps: np.ndarray
    targets: np.ndarray
    present: np.ndarray
    outputs: np.ndarray
    row_slot: np.ndarray
    term_ptr: np.ndarray
    term_coef: np.ndarray
    term_a: np.ndarray
    term_b: np.ndarray
    flops: int


class _Planner:
    def __init__(self, lambda_max: int, n_levels: int, max_program_terms: int):
        self.lmax = lambda_max
        self.max_program_terms = max_program_terms
        self.offsets, self.n_sq = level_layout(lambda_max)
        self.n_levels = n_levels
        self.one = n_levels * 2 * self.n_sq
        self.zero = self.one + 1
        self.scratch = self.zero + 1
        self.free = self.scratch + 2 * (2 * lambda_max + 1) ** 3  # B1 and A2 buffers
        self.present = np.zeros((n_levels, lambda_max + 1, 2), dtype=np.bool_)
        self.present[0, :, 0] = True
        self.steps: list[tuple[int, int, int, int]] = []
        self.targets: list[np.ndarray] = []
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.n_rows = 0
        self.flops = 0
        self.table = coupling_table(lambda_max)

    def slot(self, level: int, l: int, t: int, m: int = 0, mp: int = 0) -> int:
        return int(level * 2 * self.n_sq + t * self.n_sq + self.offsets[l] + m * (2 * l + 1) + mp)

    def _sources(self, src: int, targets: np.ndarray) -> list[tuple[int, int]]:
        """(triple k, source parity t1) pairs that feed a targeted block."""
        out = []
        for k, (l1, l2, lam) in enumerate(self.table.triples):
            parity = (l1 + l2 + lam) % 2
            out += [(k, t1) for t1 in range(2)
                    if self.present[src, l1, t1] and targets[lam, t1 ^ parity]]
        return out

    def _program_terms(self, src: int, dst: int, sources: list[tuple[int, int]]) -> tuple:
        """Expanded iteration: out[mu, mu'] += C[m1 m2 mu] C[m1' m2' mu'] A[m1, m1'] B[m2, m2']
        for every pair of non-zero coefficients of a triple, as (out, a, b, coef) arrays."""
        table = self.table
        parts = []
        for k, t1 in sources:
            l1, l2, lam = table.triples[k]
            idx = table.cg_index[table.cg_ptr[k]:table.cg_ptr[k + 1]]
            val = table.cg_value[table.cg_ptr[k]:table.cg_ptr[k + 1]]
            d1, d2, dl = 2 * l1 + 1, 2 * l2 + 1, 2 * lam + 1
            m1, m2, mu = idx[:, 0], idx[:, 1], idx[:, 2]
            a = self.slot(src, l1, t1) + m1[:, None] * d1 + m1[None, :]
            b = self.slot(0, l2, 0) + m2[:, None] * d2 + m2[None, :]
            t = t1 ^ ((l1 + l2 + lam) % 2)
            out = self.slot(dst, lam, t) + mu[:, None] * dl + mu[None, :]
            parts.append((out.ravel(), a.ravel(), b.ravel(), np.outer(val, val).ravel()))
        out, a, b, coef = (np.concatenate(x) for x in zip(*parts))
        if src == 0:
            # level 0 (x) level 0: the terms (a, b) and (b, a) are the same product
            a, b = np.minimum(a, b), np.maximum(a, b)
        return out, a, b, coef

    def _add_rows(self, out: np.ndarray, a: np.ndarray, b: np.ndarray, coef: np.ndarray) -> None:
        """Merge terms with the same (out, a, b), in a fixed order, and append them as rows."""
        order = np.lexsort((b, a, out))
        out, a, b, coef = out[order], a[order], b[order], coef[order]
        first = np.ones(len(out), dtype=bool)
        first[1:] = (out[1:] != out[:-1]) | (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        starts = np.flatnonzero(first)
        out, a, b, coef = out[starts], a[starts], b[starts], np.add.reduceat(coef, starts)
        slots, row_start = np.unique(out, return_index=True)
        ptr = np.append(row_start, len(out))
        self.rows.append((slots, np.diff(ptr), coef, np.stack([a, b])))
        first_row = self.n_rows
        self.n_rows += len(slots)
        self.flops += 3 * len(coef)
        self.steps.append((PRODUCT, first_row, self.n_rows, 0))
        self.targets.append(np.zeros((self.lmax + 1, 2), dtype=np.bool_))

    def iterate(self, src: int, dst: int, targets: np.ndarray) -> None:
        table = self.table
        sources = self._sources(src, targets)
        terms = sum(int(table.cg_ptr[k + 1] - table.cg_ptr[k]) ** 2 for k, _ in sources)
        if terms <= self.max_program_terms:
            self._add_rows(*self._program_terms(src, dst, sources))
        else:
            for k in {k for k, _ in sources}:
                l1, l2, lam = table.triples[k]
                d1, d2, dl = 2 * l1 + 1, 2 * l2 + 1, 2 * lam + 1
                nnz = table.cg_ptr[k + 1] - table.cg_ptr[k]
                ncol = table.col_ptr[k + 1] - table.col_ptr[k]
                n_parities = sum(1 for kk, _ in sources if kk == k)
                self.flops += 2 * nnz * d2  # B1, shared by both parities
                self.flops += n_parities * 2 * (d1 * d2 * ncol + nnz * dl)
            self.steps.append((ITERATE, src, 0, dst))
            self.targets.append(targets)
        for k, t1 in sources:
            l1, l2, lam = table.triples[k]
            self.present[dst, lam, t1 ^ ((l1 + l2 + lam) % 2)] = True

    def invariant(self, level_a: int, level_b: int) -> int:
        out = self.free  # stays 0 when the two levels have no block in common
        self.free += 1
        a, b, coef = [], [], []
        for l in range(self.lmax + 1):
            for t in range(2):
                if self.present[level_a, l, t] and self.present[level_b, l, t]:
                    d = 2 * l + 1
                    a.append(self.slot(level_a, l, t) + np.arange(d * d))
                    b.append(self.slot(level_b, l, t) + np.arange(d * d))
                    coef.append(np.full(d * d, 1.0 / d))
        if a:
            a, b, coef = np.concatenate(a), np.concatenate(b), np.concatenate(coef)
            self._add_rows(np.full(len(a), out), a, b, coef)
        return out

    def every_block(self) -> np.ndarray:
        return np.ones((self.lmax + 1, 2), dtype=np.bool_)

    def finish(self, outputs: list[int]) -> Schedule:
        slots, counts, coefs, ab = zip(*self.rows) if self.rows else ((), (), (), ())
        return Schedule(
            lambda_max=self.lmax,
            n_levels=self.n_levels,
            n_slots=self.free,
            one=self.one,
            zero=self.zero,
            scratch=self.scratch,
            steps=np.array(self.steps, dtype=np.int64).reshape(-1, 4),
            targets=np.array(self.targets, dtype=np.bool_).reshape(-1, self.lmax + 1, 2),
            present=self.present,
            outputs=np.array(outputs, dtype=np.int64),
            row_slot=np.concatenate([np.zeros(0, dtype=np.int64), *slots]).astype(np.int64),
            term_ptr=np.concatenate([[0], np.cumsum(np.concatenate([[], *counts]))]).astype(
                np.int64),
            term_coef=np.concatenate([np.zeros(0), *coefs]),
            term_a=np.concatenate([np.zeros(0, dtype=np.int64), *[x[0] for x in ab]]).astype(
                np.int64),
            term_b=np.concatenate([np.zeros(0, dtype=np.int64), *[x[1] for x in ab]]).astype(
                np.int64),
            flops=self.flops,
        )


@cache
def invariant_schedule(
    lambda_max: int, nu_max: int, scheme: str, max_program_terms: int = MAX_PROGRAM_TERMS
) -> Schedule:
    """Outputs k^{nu, 0, +1} for nu = 0..nu_max.

    "reduced": equivariant levels up to h = ceil(nu_max / 2), then <k^h, k^(nu - h)>;
    "full": equivariant levels up to nu_max - 1, then <k^(nu_max - 1), k^1>.
    Iterations whose program would exceed ``max_program_terms`` terms are factored.
    """
    top = math.ceil(nu_max / 2) if scheme == "reduced" else max(nu_max - 1, 1)
    planner = _Planner(lambda_max, top, max_program_terms)
    for level in range(1, top):
        planner.iterate(level - 1, level, planner.every_block())
    outputs = [planner.one]
    for nu in range(1, nu_max + 1):
        if nu <= top:
            outputs.append(planner.slot(nu - 1, 0, 0))
        else:
            outputs.append(planner.invariant(top - 1, nu - top - 1))
    return planner.finish(outputs)


@cache
def equivariant_schedule(
    lambda_max: int, nu_max: int, lam: int, max_program_terms: int = MAX_PROGRAM_TERMS
) -> Schedule:
    """Outputs k^{nu, lam, +1}[mu, mu'] for nu = 0..nu_max, nu-major, then mu, mu'.

    Always full equivariant iterations (docs/mathematics.md, "The two schemes"); the last
    computes only (lam, +1). Iterations whose program would exceed ``max_program_terms``
    terms are factored.
    """
    planner = _Planner(lambda_max, nu_max, max_program_terms)
    for level in range(1, nu_max):
        target = planner.every_block()
        if level == nu_max - 1:
            target[:] = False
            target[lam, 0] = True
        planner.iterate(level - 1, level, target)
    d = 2 * lam + 1
    outputs = [planner.zero] * (d * d)
    for nu in range(1, nu_max + 1):
        outputs += [planner.slot(nu - 1, lam, 0, mu, mup) for mu in range(d) for mup in range(d)]
    return planner.finish(outputs)
