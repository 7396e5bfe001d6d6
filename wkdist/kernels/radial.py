# Radial factor of the nu = 1 closed form (SPEC section 2) for one neighbour pair (j, j'):
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
    # power series has only positive terms there.
    return max(2.0, 1.5 * l_max)


@numba.njit(cache=True)
def _scaled_in_into(x: float, l_max: int, out: np.ndarray) -> None:
    """out[l] = exp(-x) i_l(x) for l = 0..l_max, x >= 0."""
    if x < series_switch(l_max):
        half_x2 = 0.5 * x * x
        decay = math.exp(-x)
        lead = decay  # exp(-x) x^l / (2l + 1)!!
        for l in range(l_max + 1):
            total = 1.0
            term = 1.0
            k = 1
            while True:
                term *= half_x2 / (k * (2 * l + 2 * k + 1))
                total += term
                if term < 1e-17 * total:
                    break
                k += 1
            out[l] = lead * total
            lead *= x / (2 * l + 3)
    else:
        e2 = math.exp(-2.0 * x)
        out[0] = (1.0 - e2) / (2.0 * x)
        if l_max >= 1:
            out[1] = (0.5 * (1.0 + e2) * x - 0.5 * (1.0 - e2)) / (x * x)
        for l in range(1, l_max):
            out[l + 1] = out[l - 1] - (2 * l + 1) / x * out[l]


@numba.njit(cache=True, inline="always")
def radial_factors(
    r1: float, s1: float, w1: float, r2: float, s2: float, w2: float, l_max: int, out: np.ndarray
) -> bool:
    """out[l] = R_l for one neighbour pair given (r, sigma^2, w) of each; False if all zero."""
    sum_s2 = s1 + s2
    inv = 1.0 / sum_s2
    gauss_exponent = -0.5 * (r1 - r2) * (r1 - r2) * inv
    if gauss_exponent < -745.0:  # exp underflows to exactly 0 for every l
        return False
    _scaled_in_into(r1 * r2 * inv, l_max, out)
    scale = _PREFACTOR * w1 * w2 * inv * math.sqrt(inv) * math.exp(gauss_exponent)
    for l in range(l_max + 1):
        out[l] *= scale
    return True


def scaled_spherical_in(x: np.ndarray, l_max: int) -> np.ndarray:
    """exp(-x) i_l(x) for every x >= 0 (shape (len(x), l_max + 1)); reference entry point."""
    x = np.asarray(x, dtype=np.float64).ravel()
    out = np.empty((len(x), l_max + 1))
    for n in range(len(x)):
        _scaled_in_into(x[n], l_max, out[n])
    return out
