"""Oracles of docs/mathematics.md on the public engine API: O(3) quadrature, closed forms,
body order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import wkref
from ase import Atoms
from scipy.spatial.distance import pdist
from wkref import molecule

import wkdist

BROAD = dict(cutoff=4.5, gaussian_width=0.5, decay_length=2.0, cutoff_smoothing=0.5)


def random_atoms(symbols, rng, scale=1.0, min_distance=0.8):
    """Random non-periodic structure (gaussian cloud) with no two atoms closer than min_distance."""
    n = len(Atoms(symbols))
    while True:
        positions = rng.normal(size=(n, 3)) * scale
        if n < 2 or pdist(positions).min() > min_distance:
            return wkref.make_atoms(Atoms(symbols).numbers, positions)


# ---------------------------------------------------------------- oracle 1: O(3) quadrature


@pytest.mark.parametrize(
    "symbols_a, symbols_b, seed",
    [
        ("H3", "H4", 1),  # one species, the case of the hand check
        ("H2C3", "H3C2N", 5),  # two species, N only in B, C and H centres pair separately
    ],
)
def test_invariants_equal_o3_quadrature_of_density_overlap(symbols_a, symbols_b, seed):
    rng = np.random.default_rng(seed)
    scale = 1.0 if symbols_a == "H3" else 1.2
    a = random_atoms(symbols_a, rng, scale, min_distance=0.5)
    b = random_atoms(symbols_b, rng, scale, min_distance=0.5)
    settings = wkdist.KernelSettings(**BROAD, normalization="exact", lambda_max=8, nu_max=4)
    engine = wkdist.structure_kernels([a], [b], settings=settings)[0, 0]
    quad = wkref.quadrature_kernels([a], [b], settings, nu_max=4)[0, 0]
    same_species_pairs = sum(
        np.sum(a.numbers == z) * np.sum(b.numbers == z) for z in np.unique(a.numbers)
    )
    assert engine[0] == same_species_pairs == quad[0]
    assert np.all(quad[1:] > 0)
    for nu in range(1, 5):
        assert engine[nu] == pytest.approx(quad[nu], rel=1e-12, abs=0), f"nu = {nu}"


@pytest.mark.slow
def test_o3_quadrature_converged_grid_lambda_max_10():
    """The quadrature at its converged grid: 82 x 42 x 82 points, lambda_max = 10, chiral
    environments."""
    rng = np.random.default_rng(5)
    a = random_atoms("H2C3", rng, 1.2, min_distance=0.5)
    b = random_atoms("H3C2N", rng, 1.2, min_distance=0.5)
    settings = wkdist.KernelSettings(**BROAD, normalization="exact", lambda_max=10, nu_max=4)
    engine = wkdist.structure_kernels([a], [b], settings=settings)[0, 0]
    quad = wkref.quadrature_kernels([a], [b], settings, nu_max=4, grid=(82, 42, 82))[0, 0]
    np.testing.assert_allclose(engine[1:3], quad[1:3], rtol=1e-13)
    np.testing.assert_allclose(engine[3:], quad[3:], rtol=1e-12)


def test_o3_quadrature_oracle_discriminates_pseudoscalar_part():
    """With chiral environments the SO(3)-only average differs at nu >= 3; the engine is O(3)."""
    rng = np.random.default_rng(5)
    a = random_atoms("H2C3", rng, 1.2, min_distance=0.5)
    b = random_atoms("H3C2N", rng, 1.2, min_distance=0.5)
    settings = wkdist.KernelSettings(**BROAD, normalization="exact", lambda_max=8, nu_max=4)
    engine = wkdist.structure_kernels([a], [b], settings=settings)[0, 0]
    so3 = wkref.quadrature_kernels([a], [b], settings, nu_max=4, proper_only=True)[0, 0]
    # nu = 1, 2 have no pseudoscalar part
    assert engine[1:3] == pytest.approx(so3[1:3], rel=1e-12)
    # nu = 3, 4: the pseudoscalar part is far above the quadrature / truncation error
    for nu in (3, 4):
        assert abs(so3[nu] - engine[nu]) > 1e-9 * abs(engine[nu]), f"nu = {nu}"


# ---------------------------------------------------------------- oracle 2: closed forms


@pytest.mark.parametrize("normalization", ["paper", "exact"])
@pytest.mark.parametrize("radial_weight, smoothing", [("exp", 0.5), ("none", 0.0)])
def test_nu1_nu2_equal_closed_form_reference(normalization, radial_weight, smoothing):
    rng = np.random.default_rng(11)
    frames_a = [random_atoms("CH3O", rng, 1.3), random_atoms("H2O", rng, 1.0)]
    frames_b = [random_atoms("C2H2", rng, 1.3), random_atoms("NH3", rng, 1.0),
                random_atoms("OCH2", rng, 1.2)]
    settings = wkdist.KernelSettings(
        cutoff=4.0, gaussian_width=0.3, decay_length=1.5, cutoff_smoothing=smoothing,
        radial_weight=radial_weight, normalization=normalization, lambda_max=4, nu_max=3,
    )
    engine = wkdist.structure_kernels(frames_a, frames_b, settings=settings)
    reference = wkref.reference_kernels_nu2(frames_a, frames_b, settings)
    np.testing.assert_array_equal(engine[..., 0], reference[..., 0])
    assert reference[1, 1, 0] == 6  # H2O against NH3: H pairs only, O and N never pair
    for nu in (1, 2):
        nonzero = reference[..., nu] != 0
        np.testing.assert_allclose(engine[..., nu], reference[..., nu], rtol=1e-12, atol=0)
        assert nonzero.any()


def test_paper_normalization_scales_k1_by_8pi2_over_2l_plus_1():
    rng = np.random.default_rng(3)
    frames = [random_atoms("CH4", rng, 1.2), random_atoms("CH3", rng, 1.2)]
    common = dict(cutoff=4.0, gaussian_width=0.3, decay_length=1.5, lambda_max=0, nu_max=3)
    paper = wkdist.structure_kernels(
        frames, settings=wkdist.KernelSettings(**common, normalization="paper")
    )
    exact = wkdist.structure_kernels(
        frames, settings=wkdist.KernelSettings(**common, normalization="exact")
    )
    # lambda_max = 0: only l = 0 enters, scaled by 8 pi^2 at every order
    for nu in range(4):
        np.testing.assert_allclose(paper[..., nu], (8 * np.pi**2) ** nu * exact[..., nu],
                                   rtol=1e-13)


@pytest.mark.parametrize("name", ["CH3CH2OH", "CH3CH2NH2", "C6H6"])
def test_default_settings_molecule_matches_numpy_reference(name):
    """QM9-like narrow Gaussians (C = 0.03 Å): x = r r' / s^2 reaches ~75."""
    mol = molecule(name)
    other = [molecule("CH3CH2OH"), molecule("H2O"), molecule("CH4")]
    settings = wkdist.KernelSettings()
    engine = wkdist.structure_kernels([mol], other, settings=settings)
    reference = wkref.reference_kernels_nu2([mol], other, settings)
    np.testing.assert_array_equal(engine[..., 0], reference[..., 0])
    np.testing.assert_allclose(engine[..., 1], reference[..., 1], rtol=1e-12, atol=0)
    np.testing.assert_allclose(engine[..., 2], reference[..., 2], rtol=1e-12, atol=0)
    assert np.all(reference[..., 1] > 0)


def test_k0_counts_same_species_atom_pairs():
    frames_a = [molecule("CH3CH2OH"), molecule("H2O"), wkref.make_atoms([17], [[0, 0, 0]])]
    frames_b = [molecule("NH3"), molecule("CH4"), wkref.make_atoms([11], [[0, 0, 0]]),
                molecule("CO2")]
    kernels = wkdist.structure_kernels(frames_a, frames_b, settings=wkdist.KernelSettings())
    for ia, a in enumerate(frames_a):
        for ib, b in enumerate(frames_b):
            expected = sum(
                np.sum(a.numbers == z) * np.sum(b.numbers == z) for z in np.unique(a.numbers)
            )
            assert kernels[ia, ib, 0] == expected


# ---------------------------------------------------------------- oracle 4: body order


def test_alternating_subset_sum_vanishes_beyond_body_order():
    """K^nu involves clusters of <= nu + 1 atoms: the alternating sum over the subsets of an
    m-atom structure (all atoms within each other's cutoff) vanishes iff m >= nu + 2."""
    rng = np.random.default_rng(7)
    nu_max = 3
    settings = wkdist.KernelSettings(
        cutoff=6.0, gaussian_width=0.35, decay_length=2.0, lambda_max=4, nu_max=nu_max
    )
    partner = [random_atoms("C2H3", rng, 1.0), random_atoms("CH4", rng, 1.0)]
    for m in range(2, 6):
        base = random_atoms("C" * (m // 2) + "H" * (m - m // 2), rng, 0.9)
        assert pdist(base.positions).max() < settings.cutoff - settings.cutoff_smoothing
        subsets = [t for k in range(1, m + 1) for t in itertools.combinations(range(m), k)]
        kernels = wkdist.structure_kernels([wkref.subset(base, t) for t in subsets], partner,
                                           settings=settings)
        signs = np.array([(-1) ** (m - len(t)) for t in subsets], dtype=float)
        alternating = np.einsum("s,sbn->bn", signs, kernels)
        magnitude = np.abs(kernels).sum(axis=0)
        for nu in range(nu_max + 1):
            # nu = 0 is a sum over single atoms: degree 1
            vanishes = m >= nu + 2
            ratio = np.abs(alternating[:, nu]) / magnitude[:, nu]
            if vanishes:
                assert np.all(ratio < 1e-12), (m, nu, ratio)
            else:
                assert np.all(ratio > 1e-6), (m, nu, ratio)


# ---------------------------------------------------------------- equivariant closed forms


def reference_equivariant_nu12(frames_a, frames_b, settings, lam):
    """K^{1, lam} = sum k^{1, lam}; K^{2, lam, +1} = sum over l1 + l2 + lam even of
    C^T (k^{1, l1} (x) k^{1, l2}) C (one Wigner iteration, written densely)."""
    from wkdist.kernels import real_clebsch_gordan

    lmax = settings.lambda_max
    d = 2 * lam + 1
    out = np.zeros((len(frames_a), len(frames_b), 2, d, d))
    for ia, a in enumerate(frames_a):
        envs_a = wkref.environments(a, settings)
        for ib, b in enumerate(frames_b):
            envs_b = wkref.environments(b, settings)
            for i, env_i in enumerate(envs_a):
                for k, env_k in enumerate(envs_b):
                    if a.numbers[i] != b.numbers[k]:
                        continue
                    k1 = wkref.k1_blocks(env_i, env_k, lmax, settings.normalization)
                    out[ia, ib, 0] += k1[lam]
                    for l1 in range(lmax + 1):
                        for l2 in range(abs(l1 - lam), min(l1 + lam, lmax) + 1):
                            if (l1 + l2 + lam) % 2:
                                continue
                            c = real_clebsch_gordan(l1, l2, lam)
                            out[ia, ib, 1] += np.einsum("abm,ax,by,xyn->mn", c, k1[l1], k1[l2], c)
    return out


@pytest.mark.parametrize("normalization", ["paper", "exact"])
@pytest.mark.parametrize("lam", [1, 2, 3])
def test_equivariant_nu1_nu2_equal_closed_form_reference(lam, normalization):
    rng = np.random.default_rng(21)
    frames_a = [random_atoms("CH3O", rng, 1.3), random_atoms("C2H", rng, 1.2)]
    frames_b = [random_atoms("C2H3", rng, 1.3), random_atoms("OH2", rng, 1.0)]
    settings = wkdist.KernelSettings(cutoff=4.0, gaussian_width=0.3, decay_length=1.5,
                                     normalization=normalization, lambda_max=3, nu_max=3)
    engine = wkdist.equivariant_structure_kernels(frames_a, frames_b, settings=settings, lam=lam)
    reference = reference_equivariant_nu12(frames_a, frames_b, settings, lam)
    np.testing.assert_array_equal(engine[:, :, 0], 0.0)
    for nu in (1, 2):
        expected = reference[:, :, nu - 1]
        scale = np.abs(expected).max()
        assert scale > 0
        np.testing.assert_allclose(engine[:, :, nu], expected, rtol=0, atol=1e-13 * scale,
                                   err_msg=f"nu = {nu}")
