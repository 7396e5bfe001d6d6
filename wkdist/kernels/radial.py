# Radial factor of the nu = 1 closed form (docs/mathematics.md) for one neighbour pair (j, j'):
#   R_l = w_j w_j' 4 pi (2 pi s^2)^(-3/2) exp(-(r^2 + r'^2) / (2 s^2)) i_l(r r' / s^2),
#   s^2 = sigma(r)^2 + sigma(r')^2, l = 0..l_max.
# i_l enters only as exp(-x) i_l(x) ("scaled"), which folds into the Gaussian and never
# overflows.
"""Scaled modified spherical Bessel functions and the nu = 1 radial factor (numba)."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["exp_nonpositive", "radial_factors", "scaled_spherical_in", "series_switch"]

# (4 pi) (2 pi)^(-3/2)
_PREFACTOR = 4.0 * math.pi * (2.0 * math.pi) ** -1.5


@numba.njit(cache=True, inline="always")
def series_switch(l_max: int) -> float:
    # Below this argument the upward recurrence loses digits for the highest order; the
    # series (positive terms) is exact there. Against a 60-digit reference the switch keeps
    # every order within ~1e-13; l_max <= 4 (the common case) switches earlier, which is
    # cheaper and still within 2e-15.
    return max(2.0, float(l_max)) if l_max <= 4 else 1.75 * l_max


# 1 / (k (2l + 2k + 1)): the ratio of consecutive power-series terms of i_l, without dividing.
_MAX_SERIES_L = 64
_MAX_SERIES_K = 256
_SERIES_RATIO = 1.0 / (
    np.arange(_MAX_SERIES_K)[None, :]
    * (2 * np.arange(_MAX_SERIES_L + 1)[:, None] + 2 * np.arange(_MAX_SERIES_K)[None, :] + 1.0)
    + (np.arange(_MAX_SERIES_K)[None, :] == 0)
)


@numba.njit(cache=True, inline="always")
def _series_pair(l: int, half_x2: float) -> tuple[float, float]:
    """S_l and S_(l-1), S_l = sum_k (x^2/2)^k / (k! (2l+3)(2l+5)...(2l+2k+1)).

    Positive terms only; both sums share one loop so their multiply chains overlap.
    """
    lower = max(l - 1, 0)
    total_hi = 1.0
    total_lo = 1.0
    term_hi = 1.0
    term_lo = 1.0
    for k in range(1, _MAX_SERIES_K):
        term_hi *= half_x2 * _SERIES_RATIO[l, k]
        term_lo *= half_x2 * _SERIES_RATIO[lower, k]
        total_hi += term_hi
        total_lo += term_lo
        if term_lo < 1e-17 * total_lo:  # the lower order converges last
            break
    return total_hi, total_lo


@numba.njit(cache=True)
def _scaled_in_into(x: float, inv_x: float, l_max: int, out: np.ndarray) -> None:
    """out[l] = exp(-x) i_l(x) for l = 0..l_max, x >= 0 (inv_x = 1 / x)."""
    if x == 0.0:
        out[0] = 1.0
        for l in range(1, l_max + 1):
            out[l] = 0.0
    elif x < series_switch(l_max):
        # Series for the two highest orders, then the downward recurrence, which is stable
        # for i_l (the minimal solution as l grows).
        half_x2 = 0.5 * x * x
        lead = math.exp(-x)  # exp(-x) x^l / (2l + 1)!!
        for l in range(1, l_max + 1):
            lead *= x / (2 * l + 1)
        series_hi, series_lo = _series_pair(l_max, half_x2)
        out[l_max] = lead * series_hi
        if l_max >= 1:
            out[l_max - 1] = lead * (2 * l_max + 1) * inv_x * series_lo
        for l in range(l_max - 1, 0, -1):
            out[l - 1] = out[l + 1] + (2 * l + 1) * inv_x * out[l]
    else:
        # beyond x = 20, 1 -+ exp(-2x) rounds to 1: skipping the exp changes no bit
        e2 = math.exp(-2.0 * x) if x < 20.0 else 0.0
        out[0] = 0.5 * (1.0 - e2) * inv_x
        if l_max >= 1:
            out[1] = (0.5 * (1.0 + e2) - out[0]) * inv_x
        for l in range(1, l_max):
            out[l + 1] = out[l - 1] - (2 * l + 1) * inv_x * out[l]


# exp(x) for x <= 0 as a loop the compiler vectorizes (libm's exp is an opaque scalar call):
# x = k ln2 + r with |r| <= ln2 / 2 (Cody-Waite split of ln2, exact for |k| < 2^21), the Taylor
# polynomial of degree 13 (remainder below 5e-18 relative; Horner with fused multiply-adds
# where the CPU has them), times 2^k built from its bits in two halves so that results down to
# the smallest subnormal round once. Within 1 ulp of the correctly rounded value over [-746, 0]
# (tests/kernels/test_radial.py).
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_C = tuple(1.0 / math.factorial(n) for n in range(14))


@numba.njit(cache=True, fastmath={"contract"})
def exp_nonpositive(x: np.ndarray, n: int, bits: np.ndarray, scales: np.ndarray) -> None:
    """x[:n] = exp(x[:n]) in place, every x in [-746, 0].

    bits (2, >= n) int64 is scratch and scales its float64 view (bits.view(np.float64)).
    """
    for q in range(n):
        k = math.floor(x[q] * _LOG2E + 0.5)
        r = (x[q] - k * _LN2_HI) - k * _LN2_LO
        p = _C[13] * r + _C[12]
        p = p * r + _C[11]
        p = p * r + _C[10]
        p = p * r + _C[9]
        p = p * r + _C[8]
        p = p * r + _C[7]
        p = p * r + _C[6]
        p = p * r + _C[5]
        p = p * r + _C[4]
        p = p * r + _C[3]
        p = p * r + _C[2]
        p = p * r + 1.0
        p = p * r + 1.0
        ki = np.int64(k)
        half = ki >> 1
        bits[0, q] = (half + 1023) << 52
        bits[1, q] = (ki - half + 1023) << 52
        x[q] = p
    for q in range(n):
        x[q] = x[q] * scales[0, q] * scales[1, q]


@numba.njit(cache=True)
def radial_factors(
    pairs: np.ndarray, n: int,
    r1: np.ndarray, inv_r1: np.ndarray, s1: np.ndarray, w1: np.ndarray,
    r2: np.ndarray, inv_r2: np.ndarray, s2: np.ndarray, w2: np.ndarray,
    l_max: int, rad: np.ndarray, work: np.ndarray, bits: np.ndarray, scales: np.ndarray,
) -> None:
    """rad[l, q] = R_l of the neighbour pairs (pairs[0, q], pairs[1, q]), q < n.

    Neighbour data (r, 1/r, sigma^2, w) of the first of each pair in the arrays 1, of the
    second in 2. Loops over q vectorize; the few pairs below the series switch are redone one
    by one. work is float scratch (6, >= max(n, l_max + 1)); bits and scales as for
    exp_nonpositive.
    """
    for q in range(n):
        j = pairs[0, q]
        jp = pairs[1, q]
        sum_s2 = s1[j] + s2[jp]
        inv = 1.0 / sum_s2
        diff = r1[j] - r2[jp]
        # below -745.2 exp is exactly 0, so clipping changes no value
        work[0, q] = max(-0.5 * diff * diff * inv, -746.0)
        x = r1[j] * r2[jp] * inv
        work[1, q] = max(-2.0 * x, -746.0)
        work[2, q] = sum_s2 * inv_r1[j] * inv_r2[jp]
        work[3, q] = _PREFACTOR * w1[j] * w2[jp] * inv * math.sqrt(inv)
        work[4, q] = x
    exp_nonpositive(work[0], n, bits, scales)
    exp_nonpositive(work[1], n, bits, scales)
    # the upward recurrence of _scaled_in_into, for every pair
    for q in range(n):
        # beyond x = 20, 1 -+ exp(-2x) rounds to 1: dropping it changes no bit
        e2 = work[1, q] if work[4, q] < 20.0 else 0.0
        work[1, q] = e2
        rad[0, q] = 0.5 * (1.0 - e2) * work[2, q]
    if l_max >= 1:
        for q in range(n):
            rad[1, q] = (0.5 * (1.0 + work[1, q]) - rad[0, q]) * work[2, q]
    for l in range(1, l_max):
        for q in range(n):
            rad[l + 1, q] = rad[l - 1, q] - (2 * l + 1) * work[2, q] * rad[l, q]
    switch = series_switch(l_max)
    column = work[5]
    for q in range(n):
        if work[4, q] < switch:
            _scaled_in_into(work[4, q], work[2, q], l_max, column)
            for l in range(l_max + 1):
                rad[l, q] = column[l]
    for q in range(n):
        work[3, q] *= work[0, q]
    for l in range(l_max + 1):
        for q in range(n):
            rad[l, q] *= work[3, q]


def scaled_spherical_in(x: np.ndarray, l_max: int) -> np.ndarray:
    """exp(-x) i_l(x) for every x >= 0 (shape (len(x), l_max + 1)); reference entry point."""
    x = np.asarray(x, dtype=np.float64).ravel()
    out = np.empty((len(x), l_max + 1))
    for n in range(len(x)):
        _scaled_in_into(x[n], 1.0 / x[n] if x[n] > 0 else 0.0, l_max, out[n])
    return out
