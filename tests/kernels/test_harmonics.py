"""wkdist.kernels.real_spherical_harmonics against scipy (the convention of docs/mathematics.md)."""

from __future__ import annotations

import numpy as np
import pytest
import wkref

from wkdist.kernels import real_spherical_harmonics

L_MAX = 10


def test_matches_scipy_real_harmonics(rng):
    vectors = np.concatenate([
        rng.normal(size=(300, 3)),
        np.eye(3), -np.eye(3),  # poles and axes
        [[1e-3, 0.0, 1.0], [0.0, -1e-9, -1.0], [1.0, 1.0, 0.0], [-1.0, 1e-12, 0.0]],
    ])
    got = real_spherical_harmonics(vectors, L_MAX)
    assert got.shape == (len(vectors), (L_MAX + 1) ** 2)
    for l in range(L_MAX + 1):
        expected = wkref.real_harmonics(vectors, l)  # m = -l..l
        np.testing.assert_allclose(got[:, l * l:(l + 1) ** 2], expected, rtol=0, atol=1e-13,
                                   err_msg=f"l = {l}")


def test_l1_is_y_z_x():
    vectors = np.random.default_rng(1).normal(size=(20, 3))
    unit = vectors / np.linalg.norm(vectors, axis=1)[:, None]
    got = real_spherical_harmonics(vectors, 1)
    np.testing.assert_allclose(got[:, 0], np.full(20, np.sqrt(1 / (4 * np.pi))), rtol=1e-15)
    np.testing.assert_allclose(got[:, 1:4], np.sqrt(3 / (4 * np.pi)) * unit[:, [1, 2, 0]],
                               rtol=0, atol=1e-15)


def test_independent_of_length_and_l_max(rng):
    vectors = rng.normal(size=(50, 3))
    scales = rng.uniform(0.01, 100.0, size=(50, 1))
    np.testing.assert_allclose(real_spherical_harmonics(scales * vectors, 6),
                               real_spherical_harmonics(vectors, 6), rtol=0, atol=1e-13)
    np.testing.assert_allclose(real_spherical_harmonics(vectors, 6),
                               real_spherical_harmonics(vectors, 8)[:, :49], rtol=0, atol=1e-15)


def test_orthonormal_on_the_sphere():
    """Exact quadrature for band limit 2 L_MAX: Gauss-Legendre in cos(theta), uniform in phi."""
    n_theta, n_phi = L_MAX + 2, 2 * L_MAX + 3
    x, wx = np.polynomial.legendre.leggauss(n_theta)
    phi = np.arange(n_phi) * 2 * np.pi / n_phi
    sin = np.sqrt(1 - x**2)
    vectors = np.stack([np.outer(sin, np.cos(phi)), np.outer(sin, np.sin(phi)),
                        np.outer(x, np.ones(n_phi))], axis=-1).reshape(-1, 3)
    weights = np.outer(wx, np.full(n_phi, 2 * np.pi / n_phi)).ravel()
    y = real_spherical_harmonics(vectors, L_MAX)
    gram = y.T @ (weights[:, None] * y)
    np.testing.assert_allclose(gram, np.eye(len(gram)), rtol=0, atol=1e-13)


@pytest.mark.parametrize("l", [1, 2, 3, 5])
def test_rotations_act_by_orthogonal_wigner_matrices(l, rng):
    from scipy.spatial.transform import Rotation

    q = Rotation.random(random_state=rng).as_matrix()
    d = wkref.wigner_d_from_harmonics(real_spherical_harmonics_l(l), q, l, rng)
    # exact fit (the relation is linear), D orthogonal, D(Q1 Q2) = D(Q1) D(Q2)
    vectors = rng.normal(size=(40, 3))
    np.testing.assert_allclose(real_spherical_harmonics_l(l)(vectors @ q.T, l),
                               real_spherical_harmonics_l(l)(vectors, l) @ d.T, atol=1e-13)
    np.testing.assert_allclose(d @ d.T, np.eye(2 * l + 1), atol=1e-13)
    q2 = Rotation.random(random_state=rng).as_matrix()
    d2 = wkref.wigner_d_from_harmonics(real_spherical_harmonics_l(l), q2, l, rng)
    d12 = wkref.wigner_d_from_harmonics(real_spherical_harmonics_l(l), q @ q2, l, rng)
    np.testing.assert_allclose(d12, d @ d2, atol=1e-12)
    if l == 1:
        p = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=float)  # (x, y, z) -> (y, z, x)
        np.testing.assert_allclose(d, p @ q @ p.T, atol=1e-13)


def real_spherical_harmonics_l(l):
    """Block l of the engine's harmonics as a function (vectors, l) -> (n, 2l + 1)."""
    return lambda vectors, ll: real_spherical_harmonics(vectors, ll)[:, ll * ll:]
