"""Oracles of docs/mathematics.md: rotations, inversion, permutations and translations."""

from __future__ import annotations

import numpy as np
import pytest
import wkref
from scipy.spatial.transform import Rotation
from wkref import molecule, transformed

import wkdist
from wkdist.kernels import real_spherical_harmonics

BROAD = wkdist.KernelSettings(cutoff=5.0, gaussian_width=0.3, decay_length=2.0, lambda_max=3,
                              nu_max=4)
P = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=float)  # (x, y, z) -> (y, z, x)


def frames():
    return [molecule("CH3CH2OH"), molecule("CH3CHO"), molecule("H2O")]


def others():
    return [molecule("CH3OH"), molecule("C2H4"), molecule("CH3CH2NH2")]


def assert_close_per_nu(actual, expected, rtol=1e-12):
    """|actual - expected| <= rtol * max |expected| for every nu (axis 2)."""
    for nu in range(expected.shape[2]):
        scale = np.abs(expected[:, :, nu]).max()
        err = np.abs(actual[:, :, nu] - expected[:, :, nu]).max()
        assert err <= rtol * scale, f"nu = {nu}: error {err:.3e}, scale {scale:.3e}"


def wigner_d(q, lam, rng):
    if lam == 1:
        return P @ q @ P.T
    harmonics = lambda v, l: real_spherical_harmonics(v, l)[:, l * l:]  # noqa: E731
    return wkref.wigner_d_from_harmonics(harmonics, q, lam, rng)


@pytest.mark.parametrize("settings", [wkdist.KernelSettings(), BROAD], ids=["default", "broad"])
def test_invariants_unchanged_by_rotating_either_side(settings):
    rng = np.random.default_rng(2)
    a, b = frames(), others()
    ref = wkdist.structure_kernels(a, b, settings=settings)
    rot_a = [transformed(x, Rotation.random(random_state=rng).as_matrix()) for x in a]
    rot_b = [transformed(x, Rotation.random(random_state=rng).as_matrix()) for x in b]
    assert_close_per_nu(wkdist.structure_kernels(rot_a, b, settings=settings), ref)
    assert_close_per_nu(wkdist.structure_kernels(a, rot_b, settings=settings), ref)
    # improper rotations too: the invariant is the O(3) average
    inv_a = [transformed(x, -Rotation.random(random_state=rng).as_matrix()) for x in a]
    assert_close_per_nu(wkdist.structure_kernels(inv_a, b, settings=settings), ref)


@pytest.mark.parametrize("lam", [1, 2, 3])
def test_equivariant_kernels_rotate_with_wigner_matrices(lam):
    rng = np.random.default_rng(10 + lam)
    a, b = frames(), others()
    ref = wkdist.equivariant_structure_kernels(a, b, settings=BROAD, lam=lam)
    d = 2 * lam + 1
    assert ref.shape == (3, 3, BROAD.nu_max + 1, d, d)
    assert np.all(ref[:, :, 0] == 0.0)
    assert np.abs(ref[:, :, 1:]).max() > 0
    q = Rotation.random(random_state=rng).as_matrix()
    dq = wigner_d(q, lam, rng)
    np.testing.assert_allclose(dq @ dq.T, np.eye(d), atol=1e-12)
    # rotate A: rows transform, K -> D K
    rotated = wkdist.equivariant_structure_kernels([transformed(x, q) for x in a], b,
                                                   settings=BROAD, lam=lam)
    assert_close_per_nu(rotated, np.einsum("mn,abvnk->abvmk", dq, ref))
    # rotate B: columns transform, K -> K D^T
    rotated = wkdist.equivariant_structure_kernels(a, [transformed(x, q) for x in b],
                                                   settings=BROAD, lam=lam)
    assert_close_per_nu(rotated, np.einsum("abvmn,kn->abvmk", ref, dq))
    # the transformation is not the identity (the test can fail)
    assert np.abs(np.einsum("mn,abvnk->abvmk", dq, ref) - ref).max() > 1e-3 * np.abs(ref).max()


def test_lambda1_matrix_is_the_permuted_rotation():
    """lam = 1 in the real-harmonic order (y, z, x): the D^1 of harmonics is P Q P^T."""
    rng = np.random.default_rng(0)
    q = Rotation.random(random_state=rng).as_matrix()
    harmonics = lambda v, l: real_spherical_harmonics(v, l)[:, l * l:]  # noqa: E731
    np.testing.assert_allclose(wkref.wigner_d_from_harmonics(harmonics, q, 1, rng),
                               P @ q @ P.T, atol=1e-13)


@pytest.mark.parametrize("lam", [1, 2, 3])
def test_inversion_multiplies_sigma_plus_blocks_by_minus_one_to_lambda(lam):
    a, b = frames(), others()
    ref = wkdist.equivariant_structure_kernels(a, b, settings=BROAD, lam=lam)
    inverted = wkdist.equivariant_structure_kernels([transformed(x, -np.eye(3)) for x in a], b,
                                                    settings=BROAD, lam=lam)
    assert_close_per_nu(inverted, (-1) ** lam * ref)
    both = wkdist.equivariant_structure_kernels(
        [transformed(x, -np.eye(3)) for x in a], [transformed(x, -np.eye(3)) for x in b],
        settings=BROAD, lam=lam,
    )
    assert_close_per_nu(both, ref)


def test_permutation_and_translation_change_nothing():
    rng = np.random.default_rng(4)
    a, b = frames(), others()
    moved = [transformed(x, order=rng.permutation(len(x)), shift=rng.normal(size=3) * 10)
             for x in a]
    assert_close_per_nu(wkdist.structure_kernels(moved, b, settings=BROAD),
                        wkdist.structure_kernels(a, b, settings=BROAD))
    for lam in (1, 2):
        assert_close_per_nu(
            wkdist.equivariant_structure_kernels(moved, b, settings=BROAD, lam=lam),
            wkdist.equivariant_structure_kernels(a, b, settings=BROAD, lam=lam),
        )
