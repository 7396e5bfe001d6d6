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

__all__ = ["scaled_spherical_in", "series_switch"]

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


@numba.njit(cache=True, inline="always")
def radial_factors(
    r1: float, inv_r1: float, s1: float, w1: float,
    r2: float, inv_r2: float, s2: float, w2: float,
    l_max: int, out: np.ndarray,
) -> bool:
    """out[l] = R_l for one neighbour pair given (r, 1/r, sigma^2, w) of each; False if all 0."""
    sum_s2 = s1 + s2
    inv = 1.0 / sum_s2
    gauss_exponent = -0.5 * (r1 - r2) * (r1 - r2) * inv
    if gauss_exponent < -745.0:  # exp underflows to exactly 0 for every l
        return False
    _scaled_in_into(r1 * r2 * inv, sum_s2 * inv_r1 * inv_r2, l_max, out)
    scale = _PREFACTOR * w1 * w2 * inv * math.sqrt(inv) * math.exp(gauss_exponent)
    for l in range(l_max + 1):
        out[l] *= scale
    return True


def scaled_spherical_in(x: np.ndarray, l_max: int) -> np.ndarray:
    """exp(-x) i_l(x) for every x >= 0 (shape (len(x), l_max + 1)); reference entry point."""
    x = np.asarray(x, dtype=np.float64).ravel()
    out = np.empty((len(x), l_max + 1))
    for n in range(len(x)):
        _scaled_in_into(x[n], 1.0 / x[n] if x[n] > 0 else 0.0, l_max, out[n])
    return out
