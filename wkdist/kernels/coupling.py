# Real coupling (Clebsch-Gordan) coefficients C^{l1 l2 L}_{m1 m2 M}, m indices -l..l stored at
# positions 0..2l (docs/mathematics.md): the complex coefficients carried to the real harmonics of
# harmonics.py on all three indices; a purely imaginary result (l1 + l2 + L odd) is multiplied
# by -i. Reshaped to ((2 l1 + 1)(2 l2 + 1), 2 L + 1) the columns are orthonormal.
"""Real Clebsch-Gordan coefficients, exact rational arithmetic for the complex ones."""

from __future__ import annotations

from fractions import Fraction
from functools import cache
from math import factorial, sqrt

import numpy as np

__all__ = ["complex_to_real", "real_clebsch_gordan"]


def _complex_cg(j1: int, m1: int, j2: int, m2: int, j: int, m: int) -> float:
    """<j1 m1 j2 m2 | j m> by Racah's formula (Condon-Shortley phase)."""
    if m1 + m2 != m or not abs(j1 - j2) <= j <= j1 + j2:
        return 0.0
    if abs(m1) > j1 or abs(m2) > j2 or abs(m) > j:
        return 0.0
    prefactor = Fraction(
        (2 * j + 1)
        * factorial(j1 + j2 - j)
        * factorial(j1 - j2 + j)
        * factorial(-j1 + j2 + j),
        factorial(j1 + j2 + j + 1),
    ) * (
        factorial(j1 + m1)
        * factorial(j1 - m1)
        * factorial(j2 + m2)
        * factorial(j2 - m2)
        * factorial(j + m)
        * factorial(j - m)
    )
    total = Fraction(0)
    for k in range(0, j1 + j2 - j + 1):
        denominators = (
            k,
            j1 + j2 - j - k,
            j1 - m1 - k,
            j2 + m2 - k,
            j - j2 + m1 + k,
            j - j1 - m2 + k,
        )
        if min(denominators) < 0:
            continue
        term = Fraction(1)
        for d in denominators:
            term /= factorial(d)
        total += -term if k % 2 else term
    return float(total) * sqrt(prefactor)


@cache
def complex_to_real(l: int) -> np.ndarray:
    """U with Y_real = U @ Y_complex, rows and columns ordered m = -l..l."""
    u = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    s = 1.0 / sqrt(2.0)
    u[l, l] = 1.0
    for m in range(1, l + 1):
        # sqrt(2) (-1)^m Re Y^m = ((-1)^m Y^m + Y^-m) / sqrt(2), using Y^-m = (-1)^m conj(Y^m)
        u[l + m, l + m] = (-1) ** m * s
        u[l + m, l - m] = s
        # sqrt(2) (-1)^m Im Y^m = ((-1)^m Y^m - Y^-m) / (i sqrt(2))
        u[l - m, l + m] = -1j * (-1) ** m * s
        u[l - m, l - m] = 1j * s
    return u


@cache
def real_clebsch_gordan(l1: int, l2: int, big_l: int) -> np.ndarray:
    """Real coefficients, shape (2 l1 + 1, 2 l2 + 1, 2 L + 1); read-only."""
    cg = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * big_l + 1))
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            if abs(m1 + m2) <= big_l:
                cg[m1 + l1, m2 + l2, m1 + m2 + big_l] = _complex_cg(
                    l1, m1, l2, m2, big_l, m1 + m2
                )
    # Y_c = U^dagger Y_r, and the coupled product transforms like U_L Y_c.
    u1, u2, u_big = complex_to_real(l1), complex_to_real(l2), complex_to_real(big_l)
    real = np.einsum("MN,abN,ia,jb->ijM", u_big, cg, u1.conj(), u2.conj())
    if (l1 + l2 + big_l) % 2:
        real = -1j * real
    assert np.abs(real.imag).max(initial=0.0) < 1e-12
    out = np.ascontiguousarray(real.real)
    out[np.abs(out) < 1e-15] = 0.0
    out.setflags(write=False)
    return out
