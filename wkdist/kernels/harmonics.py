# Real spherical harmonics Y_{l m}, l = 0..l_max, m = -l..l, stored flat at index l*l + l + m.
# Convention (docs/mathematics.md): orthonormal on the sphere, Condon-Shortley phase in the complex
# harmonics, Y_{l,m>0} = sqrt(2) (-1)^m Re Y_l^m, Y_{l,m<0} = sqrt(2) (-1)^m Im Y_l^{|m|};
# for l = 1 this is (y, z, x) / |r| times sqrt(3 / 4 pi).
"""Real spherical harmonics of unit vectors (numba)."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["real_spherical_harmonics", "sph_index"]


def sph_index(l: int, m: int) -> int:
    """Flat position of (l, m) in the arrays of this module."""
    return l * l + l + m


@numba.njit(cache=True)
def _fill_harmonics(unit: np.ndarray, l_max: int, out: np.ndarray) -> None:
    # q[l, m] = P_l^m(z) / sin(theta)^m without the Condon-Shortley phase; the sin^m cos(m phi)
    # and sin^m sin(m phi) factors are Re and Im of (x + i y)^m, so no angle is ever formed.
    q = np.empty((l_max + 1, l_max + 1))
    norm = np.empty((l_max + 1, l_max + 1))
    for l in range(l_max + 1):
        for m in range(l + 1):
            ratio = 1.0  # (l - m)! / (l + m)!
            for k in range(l - m + 1, l + m + 1):
                ratio /= k
            norm[l, m] = math.sqrt((2 * l + 1) / (4.0 * math.pi) * ratio)
            if m > 0:
                norm[l, m] *= math.sqrt(2.0)
    for n in range(unit.shape[0]):
        x = unit[n, 0]
        y = unit[n, 1]
        z = unit[n, 2]
        for m in range(l_max + 1):
            double_fact = 1.0
            for k in range(1, 2 * m, 2):
                double_fact *= k
            q[m, m] = double_fact
            if m + 1 <= l_max:
                q[m + 1, m] = (2 * m + 1) * z * q[m, m]
            for l in range(m + 2, l_max + 1):
                q[l, m] = ((2 * l - 1) * z * q[l - 1, m] - (l + m - 1) * q[l - 2, m]) / (l - m)
        re = 1.0
        im = 0.0
        for m in range(l_max + 1):
            for l in range(m, l_max + 1):
                base = l * l + l
                if m == 0:
                    out[n, base] = norm[l, 0] * q[l, 0]
                else:
                    out[n, base + m] = norm[l, m] * q[l, m] * re
                    out[n, base - m] = norm[l, m] * q[l, m] * im
            re, im = re * x - im * y, re * y + im * x


def real_spherical_harmonics(vectors: np.ndarray, l_max: int) -> np.ndarray:
    """Y_{l m}(r / |r|) for every row of ``vectors`` (n, 3); returns (n, (l_max + 1)^2).

    Rows must be non-zero; they are normalized here.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1)[:, None]
    out = np.empty((len(unit), (l_max + 1) ** 2))
    _fill_harmonics(unit, l_max, out)
    return out
