# Index names: a, b structures of the two sets; i, i' centre atoms; j, j' neighbours; l, lam
# angular orders; m, mu components at 0..2l; t = 0 / 1 for sigma = +1 / -1; nu body order;
# p the position of an atom pair inside a batch (innermost in every array, so loops over a
# batch vectorize). A structure pair (a, b) is one unit of work: its atom pairs are streamed
# through batches in a fixed order, so every value is independent of threads and schedule.
#
# Packed structures (see wkdist.structures): centres of structure a are
# frame_ptr[a]:frame_ptr[a + 1]; neighbours of centre i with species s are
# nb_ptr[i, s]:nb_ptr[i, s + 1]; per neighbour: r, sigma^2, w and the real harmonics Y.
"""Wigner-kernel executor: nu = 1 closed form, iterations, structure sums (numba)."""

from __future__ import annotations

import math

import numba
import numpy as np

from .plans import PRODUCT, CouplingTable, Schedule
from .radial import radial_factors

__all__ = ["PackedArrays", "pair_kernels"]

BATCH = 64
PAIR_CHUNK = 128  # neighbour pairs per vectorized radial call


@numba.njit(cache=True, inline="always")
def _axpy(w, dst, src, coef):
    for p in range(w.shape[1]):
        w[dst, p] += coef * w[src, p]


@numba.njit(cache=True, inline="always")
def _mul(w, dst, a, b):
    for p in range(w.shape[1]):
        w[dst, p] += w[a, p] * w[b, p]


@numba.njit(cache=True, inline="always")
def _zero(w, start, stop):
    for s in range(start, stop):
        for p in range(w.shape[1]):
            w[s, p] = 0.0


@numba.njit(cache=True)
def _expand_neighbours(y_a, norm_l, start, stop, row_m, l_of_sq, yax):
    """yax[j - start, q] = norm_l[l] Y_{l m}(j) for the entry q = (l, m, m') of a level block.

    Done once per centre i and reused for every centre it is paired with, so that the outer
    products below run over all (l, m, m') in one contiguous loop.
    """
    for j in range(start, stop):
        for q in range(yax.shape[1]):
            yax[j - start, q] = y_a[j, row_m[q]] * norm_l[l_of_sq[q]]


@numba.njit(cache=True, inline="always")
def _add_neighbour(k1, yax, jj, tmp, col_m):
    """k1 += Y(j) v_j^T for every l (Y(j) in yax[jj], v_j in tmp), then clears tmp."""
    for q in range(k1.shape[0]):
        k1[q] += yax[jj, q] * tmp[col_m[q]]
    for q in range(tmp.shape[0]):
        tmp[q] = 0.0


@numba.njit(cache=True)
def _add_chunk(
    n, current, lmax, first, yax, col_m, r_a, inv_r_a, s_a, w_a, r_b, inv_r_b, s_b, w_b, y_b,
    tmp, k1, l_of_q, pairs, rad, work, bits, scales,
):
    """Radial factors of the first n listed pairs, then their terms in list order; returns the
    neighbour j whose v_j is still open in tmp."""
    radial_factors(pairs, n, r_a, inv_r_a, s_a, w_a, r_b, inv_r_b, s_b, w_b, lmax, rad, work,
                   bits, scales)
    n_harm = (lmax + 1) * (lmax + 1)
    for q in range(n):
        if pairs[0, q] != current:
            if current >= 0:
                _add_neighbour(k1, yax, current - first, tmp, col_m)
            current = pairs[0, q]
        jp = pairs[1, q]
        for h in range(n_harm):  # fixed length, contiguous: vectorizes
            tmp[h] += rad[l_of_q[h], q] * y_b[jp, h]
    return current


@numba.njit(cache=True)
def _fill_nu1(
    w, p, lmax, n_sq, yax, col_m,
    i, ptr_a, r_a, inv_r_a, s_a, w_a,
    k, ptr_b, r_b, inv_r_b, s_b, w_b, y_b,
    tmp, k1, l_of_q, pairs, rad, work, bits, scales,
):
    """Level 0, blocks (l, +1), column p: the nu = 1 closed form for centres i, k.

    The same-species neighbour pairs (j, j') are listed j-major in chunks of PAIR_CHUNK; their
    radial factors come from one vectorized call per chunk, then v_j = sum_j' R(j, j') Y(j')
    and k1 += Y(j) v_j^T, in the order of the list (yax: the expanded Y(j) of the neighbours of
    i, see _expand_neighbours). Accumulates in the contiguous buffer k1 and copies once: the
    column p of W is strided.
    """
    for q in range(n_sq):
        k1[q] = 0.0
    for q in range(tmp.shape[0]):
        tmp[q] = 0.0
    current = -1
    n = 0
    for sp in range(ptr_a.shape[1] - 1):
        if ptr_b[k, sp] == ptr_b[k, sp + 1]:
            continue
        for j in range(ptr_a[i, sp], ptr_a[i, sp + 1]):
            for jp in range(ptr_b[k, sp], ptr_b[k, sp + 1]):
                pairs[0, n] = j
                pairs[1, n] = jp
                n += 1
                if n == pairs.shape[1]:
                    current = _add_chunk(n, current, lmax, ptr_a[i, 0], yax, col_m, r_a,
                                         inv_r_a, s_a, w_a, r_b, inv_r_b, s_b, w_b, y_b, tmp,
                                         k1, l_of_q, pairs, rad, work, bits, scales)
                    n = 0
    if n > 0:
        current = _add_chunk(n, current, lmax, ptr_a[i, 0], yax, col_m, r_a, inv_r_a, s_a,
                             w_a, r_b, inv_r_b, s_b, w_b, y_b, tmp, k1, l_of_q, pairs, rad,
                             work, bits, scales)
    if current >= 0:
        _add_neighbour(k1, yax, current - ptr_a[i, 0], tmp, col_m)
    for q in range(n_sq):
        w[q, p] = k1[q]


@numba.njit(cache=True)
def _iterate(w, src, dst, targets, present, lmax, n_sq, offsets, scratch, tab_triples, cg_ptr,
             cg_index, cg_value, col_ptr, col_index):
    level = 2 * n_sq
    src0 = src * level
    dst0 = dst * level
    b1 = scratch
    a2 = scratch + (2 * lmax + 1) ** 3
    for lam in range(lmax + 1):
        for t in range(2):
            if targets[lam, t]:
                start = dst0 + t * n_sq + offsets[lam]
                _zero(w, start, start + (2 * lam + 1) ** 2)
    for k in range(tab_triples.shape[0]):
        l1 = tab_triples[k, 0]
        l2 = tab_triples[k, 1]
        lam = tab_triples[k, 2]
        parity = (l1 + l2 + lam) % 2
        use0 = present[src, l1, 0] and targets[lam, parity]
        use1 = present[src, l1, 1] and targets[lam, 1 - parity]
        if not (use0 or use1):
            continue
        d1 = 2 * l1 + 1
        d2 = 2 * l2 + 1
        dl = 2 * lam + 1
        # B1[m2, m1', mu'] = sum_m2' k^{1, l2}[m2, m2'] C[m1', m2', mu']
        _zero(w, b1, b1 + d2 * d1 * dl)
        k1 = offsets[l2]  # level 0, t = 0
        for z in range(cg_ptr[k], cg_ptr[k + 1]):
            m1p = cg_index[z, 0]
            m2p = cg_index[z, 1]
            mup = cg_index[z, 2]
            c = cg_value[z]
            for m2 in range(d2):
                _axpy(w, b1 + (m2 * d1 + m1p) * dl + mup, k1 + m2 * d2 + m2p, c)
        for t1 in range(2):
            if (t1 == 0 and not use0) or (t1 == 1 and not use1):
                continue
            ka = src0 + t1 * n_sq + offsets[l1]
            # A2[m1, m2, mu'] = sum_m1' k^{nu, l1, t1}[m1, m1'] B1[m2, m1', mu']
            _zero(w, a2, a2 + d1 * d2 * dl)
            for m1 in range(d1):
                for m2 in range(d2):
                    for z in range(col_ptr[k], col_ptr[k + 1]):
                        m1p = col_index[z, 0]
                        mup = col_index[z, 1]
                        _mul(w, a2 + (m1 * d2 + m2) * dl + mup, ka + m1 * d1 + m1p,
                             b1 + (m2 * d1 + m1p) * dl + mup)
            # out[mu, mu'] += sum_{m1 m2} C[m1, m2, mu] A2[m1, m2, mu']
            out = dst0 + (t1 ^ parity) * n_sq + offsets[lam]
            for z in range(cg_ptr[k], cg_ptr[k + 1]):
                m1 = cg_index[z, 0]
                m2 = cg_index[z, 1]
                mu = cg_index[z, 2]
                c = cg_value[z]
                for mup in range(dl):
                    _axpy(w, out + mu * dl + mup, a2 + (m1 * d2 + m2) * dl + mup, c)


@numba.njit(cache=True)
def _product(w, acc, first, stop, row_slot, term_ptr, term_coef, term_a, term_b):
    """Program rows first:stop: each slot is a sum of c * x_a * x_b, accumulated in acc.

    One accumulator per row and no intermediate stores: this is what makes a program faster
    than the factored step although it does more flops.
    """
    for r in range(first, stop):
        for p in range(w.shape[1]):
            acc[p] = 0.0
        for z in range(term_ptr[r], term_ptr[r + 1]):
            c = term_coef[z]
            a = term_a[z]
            b = term_b[z]
            for p in range(w.shape[1]):
                acc[p] += c * w[a, p] * w[b, p]
        dst = row_slot[r]
        for p in range(w.shape[1]):
            w[dst, p] = acc[p]


@numba.njit(cache=True)
def _run_schedule(w, acc, steps, targets, present, lmax, n_sq, offsets, scratch, tab_triples,
                  cg_ptr, cg_index, cg_value, col_ptr, col_index, program):
    row_slot, term_ptr, term_coef, term_a, term_b = program
    for s in range(steps.shape[0]):
        if steps[s, 0] == PRODUCT:
            _product(w, acc, steps[s, 1], steps[s, 2], row_slot, term_ptr, term_coef, term_a,
                     term_b)
        else:
            _iterate(w, steps[s, 1], steps[s, 3], targets[s], present, lmax, n_sq, offsets,
                     scratch, tab_triples, cg_ptr, cg_index, cg_value, col_ptr, col_index)


@numba.njit(cache=True)
def _flush(w, acc, filled, owner, outputs, result, steps, targets, present, lmax, n_sq, offsets,
           scratch, tab_triples, cg_ptr, cg_index, cg_value, col_ptr, col_index, program):
    """Run the schedule on the batch and add its first ``filled`` columns to their pairs."""
    _run_schedule(w, acc, steps, targets, present, lmax, n_sq, offsets, scratch, tab_triples,
                  cg_ptr, cg_index, cg_value, col_ptr, col_index, program)
    for p in range(filled):
        for o in range(outputs.shape[0]):
            result[owner[p], o] += w[outputs[o], p]


@numba.njit(cache=True, parallel=True)
def _pair_kernels(
    pair_a, pair_b, row_ptr,
    frame_a, species_a, ptr_a, r_a, s_a, w_a, y_a,
    frame_b, species_b, ptr_b, r_b, s_b, w_b, y_b,
    inv_r_a, inv_r_b, most_a, lmax, norm_l, n_slots, one, scratch, steps, targets, present, outputs,
    tab_triples, cg_ptr, cg_index, cg_value, col_ptr, col_index, program, result,
):
    offsets = np.empty(lmax + 1, dtype=np.int64)
    n_sq = 0
    for l in range(lmax + 1):
        offsets[l] = n_sq
        n_sq += (2 * l + 1) ** 2
    n_out = outputs.shape[0]
    # per entry q = (l, m, m') of a level block: l and the flat harmonic indices of m and m'
    l_of_sq = np.empty(n_sq, dtype=np.int64)
    row_m = np.empty(n_sq, dtype=np.int64)
    col_m = np.empty(n_sq, dtype=np.int64)
    for l in range(lmax + 1):
        d = 2 * l + 1
        for m in range(d):
            for mp in range(d):
                q = offsets[l] + m * d + mp
                l_of_sq[q] = l
                row_m[q] = l * l + m
                col_m[q] = l * l + mp
    for row in numba.prange(row_ptr.shape[0] - 1):
        w = np.zeros((n_slots, BATCH))
        w[one, :] = 1.0
        acc = np.empty(BATCH)
        tmp = np.empty((lmax + 1) ** 2)
        k1 = np.empty(n_sq)
        l_of_q = np.empty((lmax + 1) ** 2, dtype=np.int64)  # l of flat harmonic index
        for l in range(lmax + 1):
            l_of_q[l * l:(l + 1) * (l + 1)] = l
        pairs = np.empty((2, PAIR_CHUNK), dtype=np.int64)
        rad = np.empty((lmax + 1, PAIR_CHUNK))
        work = np.empty((6, max(PAIR_CHUNK, lmax + 1)))
        bits = np.empty((2, PAIR_CHUNK), dtype=np.int64)
        scales = bits.view(np.float64)
        yax = np.empty((most_a, n_sq))
        owner = np.empty(BATCH, dtype=np.int64)  # structure pair of each batch column
        filled = 0
        for q in range(row_ptr[row], row_ptr[row + 1]):
            a = pair_a[q]
            b = pair_b[q]
            for o in range(n_out):
                result[q, o] = 0.0
            for i in range(frame_a[a], frame_a[a + 1]):
                _expand_neighbours(y_a, norm_l, ptr_a[i, 0], ptr_a[i, ptr_a.shape[1] - 1],
                                   row_m, l_of_sq, yax)
                for k in range(frame_b[b], frame_b[b + 1]):
                    if species_a[i] != species_b[k]:
                        continue
                    _fill_nu1(w, filled, lmax, n_sq, yax, col_m,
                              i, ptr_a, r_a, inv_r_a, s_a, w_a,
                              k, ptr_b, r_b, inv_r_b, s_b, w_b, y_b,
                              tmp, k1, l_of_q, pairs, rad, work, bits, scales)
                    owner[filled] = q
                    filled += 1
                    if filled == BATCH:
                        _flush(w, acc, filled, owner, outputs, result, steps, targets, present,
                               lmax, n_sq, offsets, scratch, tab_triples, cg_ptr, cg_index,
                               cg_value, col_ptr, col_index, program)
                        filled = 0
        if filled > 0:
            _flush(w, acc, filled, owner, outputs, result, steps, targets, present, lmax, n_sq,
                   offsets, scratch, tab_triples, cg_ptr, cg_index, cg_value, col_ptr, col_index,
                   program)


class PackedArrays:
    """The plain arrays the executor reads for one set of structures (see module comment)."""

    __slots__ = ("frame_ptr", "species", "nb_ptr", "r", "sigma2", "weight", "harmonics")

    def __init__(self, frame_ptr, species, nb_ptr, r, sigma2, weight, harmonics):
        self.frame_ptr = frame_ptr
        self.species = species
        self.nb_ptr = nb_ptr
        self.r = r
        self.sigma2 = sigma2
        self.weight = weight
        self.harmonics = harmonics

    @property
    def n_structures(self) -> int:
        return len(self.frame_ptr) - 1

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.frame_ptr, self.species, self.nb_ptr, self.r, self.sigma2, self.weight,
                self.harmonics)


def pair_kernels(
    packed_a: PackedArrays,
    packed_b: PackedArrays,
    pair_a: np.ndarray,
    pair_b: np.ndarray,
    row_ptr: np.ndarray,
    *,
    schedule: Schedule,
    table: CouplingTable,
    paper_normalization: bool,
) -> np.ndarray:
    """Sum over atom pairs of the schedule's outputs for each listed structure pair.

    Returns (len(pair_a), len(schedule.outputs)). Structure pairs row_ptr[r]:row_ptr[r + 1]
    form one parallel work item. Inputs are assumed valid (wkdist.engine checks them).
    """
    lmax = schedule.lambda_max
    norm_l = np.ones(lmax + 1)
    if paper_normalization:
        norm_l = 8.0 * math.pi**2 / (2.0 * np.arange(lmax + 1) + 1.0)
    result = np.empty((len(pair_a), len(schedule.outputs)))
    _pair_kernels(
        pair_a, pair_b, row_ptr,
        *packed_a.arrays(), *packed_b.arrays(),
        1.0 / packed_a.r, 1.0 / packed_b.r,
        max(int((packed_a.nb_ptr[:, -1] - packed_a.nb_ptr[:, 0]).max(initial=0)), 1),
        lmax, norm_l, schedule.n_slots, schedule.one, schedule.scratch,
        schedule.steps, schedule.targets, schedule.present, schedule.outputs,
        table.triples, table.cg_ptr, table.cg_index, table.cg_value, table.col_ptr,
        table.col_index,
        (schedule.row_slot, schedule.term_ptr, schedule.term_coef, schedule.term_a,
         schedule.term_b),
        result,
    )
    return result
