"""wkdist.kernels.real_clebsch_gordan: orthonormality, coupling of harmonics, equivariance."""

from __future__ import annotations

from math import factorial

import numpy as np
import pytest
import wkref
from scipy.spatial.transform import Rotation

from wkdist.kernels import real_clebsch_gordan, real_spherical_harmonics

L_MAX = 4
TRIPLES = [(l1, l2, big_l) for l1 in range(L_MAX + 1) for l2 in range(L_MAX + 1)
           for big_l in range(abs(l1 - l2), l1 + l2 + 1)]


def harmonics(vectors, l):
    return real_spherical_harmonics(vectors, l)[:, l * l:]


def cg_m0(l1, l2, big_l):
    """<l1 0 l2 0 | L 0> from the closed form of the 3j symbol (l1 + l2 + L even)."""
    g = (l1 + l2 + big_l) // 2
    three_j = (-1) ** g * np.sqrt(
        factorial(2 * g - 2 * l1) * factorial(2 * g - 2 * l2) * factorial(2 * g - 2 * big_l)
        / factorial(2 * g + 1)
    ) * factorial(g) / (factorial(g - l1) * factorial(g - l2) * factorial(g - big_l))
    return (-1) ** (l1 - l2) * np.sqrt(2 * big_l + 1) * three_j


def couple(cg, y1, y2):
    return np.einsum("abM,na,nb->nM", cg, y1, y2)


@pytest.mark.parametrize("l1, l2, big_l", TRIPLES)
def test_columns_orthonormal(l1, l2, big_l):
    cg = real_clebsch_gordan(l1, l2, big_l)
    assert cg.shape == (2 * l1 + 1, 2 * l2 + 1, 2 * big_l + 1)
    assert cg.dtype == np.float64
    flat = cg.reshape(-1, 2 * big_l + 1)
    np.testing.assert_allclose(flat.T @ flat, np.eye(2 * big_l + 1), rtol=0, atol=1e-14)


@pytest.mark.parametrize("l1, l2, big_l", TRIPLES)
def test_coupled_harmonics_of_one_vector(l1, l2, big_l):
    """sum C Y_l1(r) Y_l2(r) = sqrt((2l1+1)(2l2+1) / (4 pi (2L+1))) <l1 0 l2 0|L 0> Y_L(r)
    for l1 + l2 + L even (the Gaunt relation, sign included), and 0 for odd."""
    vectors = np.random.default_rng(l1 * 100 + l2 * 10 + big_l).normal(size=(30, 3))
    coupled = couple(real_clebsch_gordan(l1, l2, big_l), harmonics(vectors, l1),
                     harmonics(vectors, l2))
    if (l1 + l2 + big_l) % 2:
        np.testing.assert_allclose(coupled, 0.0, atol=1e-14)
        return
    factor = np.sqrt((2 * l1 + 1) * (2 * l2 + 1) / (4 * np.pi * (2 * big_l + 1)))
    factor *= cg_m0(l1, l2, big_l)
    assert abs(factor) > 1e-3
    np.testing.assert_allclose(coupled, factor * harmonics(vectors, big_l), rtol=0, atol=1e-13)


@pytest.mark.parametrize("l1, l2, big_l", TRIPLES)
def test_coupling_two_vectors_is_rotation_equivariant(l1, l2, big_l):
    rng = np.random.default_rng(1000 + l1 * 100 + l2 * 10 + big_l)
    q = Rotation.random(random_state=rng).as_matrix()
    d = wkref.wigner_d_from_harmonics(harmonics, q, big_l, rng)
    r1, r2 = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    cg = real_clebsch_gordan(l1, l2, big_l)
    before = couple(cg, harmonics(r1, l1), harmonics(r2, l2))
    after = couple(cg, harmonics(r1 @ q.T, l1), harmonics(r2 @ q.T, l2))
    assert np.abs(before).max() > 1e-3
    np.testing.assert_allclose(after, before @ d.T, rtol=0, atol=1e-13)


def test_triangle_violations_and_read_only():
    cg = real_clebsch_gordan(2, 1, 3)
    with pytest.raises(ValueError):
        cg[0, 0, 0] = 1.0
    # outside the triangle the coefficients vanish
    assert np.all(real_clebsch_gordan(1, 1, 3) == 0.0)
    assert np.all(real_clebsch_gordan(3, 0, 1) == 0.0)
