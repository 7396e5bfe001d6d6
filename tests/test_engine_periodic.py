"""Periodic structures (docs/mathematics.md, "Environments and neighbour densities"): images
of the centre are neighbours.

A one-atom cell shorter than the cutoff is compared with open clusters cut from the same
lattice. With lattice spacings in (cutoff / 2, cutoff), an atom's neighbours lie at most one
cell away along each axis, so in an open L x M x N block an atom's environment depends only on
whether it sits on the low face, inside, or on the high face along each axis. Every structure
kernel of the block is a sum of such per-atom terms, and the mixed finite difference over
L, M, N in {2, 3} keeps exactly one term: the fully interior atom, whose environment is the
crystal's. So sum_{L,M,N} (-1)^(L+M+N+1) K(block_LMN, Q) = K(crystal, Q), for every nu and for
the equivariant blocks, with no truncation at all.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from wkref import make_atoms, molecule

import wkdist

SETTINGS = wkdist.KernelSettings(cutoff=5.0, gaussian_width=0.3, decay_length=2.0, lambda_max=3,
                                 nu_max=4)
CELL = np.array([2.6, 2.8, 3.0])  # orthorhombic: 2 * 2.6 > 5 > |(2.6, 2.8, 3.0)| = 4.86


def block(counts, z=29):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in counts], indexing="ij"), -1)
    positions = grid.reshape(-1, 3) * CELL
    return make_atoms(np.full(len(positions), z), positions)


def partners():
    """Small molecules holding the crystal's species (Cu), plus other species."""
    rng = np.random.default_rng(12)
    positions = np.array([[0, 0, 0], [2.4, 0.3, 0], [0.2, 2.7, 0.4], [-0.5, 0.6, 2.5]])
    cu4 = make_atoms([29] * 4, positions + 0.1 * rng.normal(size=(4, 3)))
    cu2o = make_atoms([29, 29, 8], [[0, 0, 0], [2.5, 0, 0], [1.2, 1.4, 0]])
    return [cu4, cu2o, molecule("H2O")]


def assert_close(actual, expected, rtol):
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def test_crystal_neighbourhood_is_the_assumed_one():
    crystal = make_atoms([29], [[0, 0, 0]], cell=np.diag(CELL), pbc=True)
    assert np.all(2 * CELL > SETTINGS.cutoff)
    assert np.linalg.norm(CELL) < SETTINGS.cutoff
    from ase.neighborlist import neighbor_list

    assert len(neighbor_list("i", crystal, SETTINGS.cutoff)) == 26  # all images, |n_i| <= 1


@pytest.mark.parametrize("lam", [0, 2])
def test_one_atom_cell_equals_interior_of_open_blocks(lam):
    crystal = make_atoms([29], [[0, 0, 0]], cell=np.diag(CELL), pbc=True)
    sizes = list(itertools.product((2, 3), repeat=3))
    blocks = [block(size) for size in sizes]
    signs = np.array([(-1) ** (sum(size) + 1) for size in sizes], dtype=float)
    if lam == 0:
        periodic = wkdist.structure_kernels([crystal], partners(), settings=SETTINGS)[0]
        open_ = wkdist.structure_kernels(blocks, partners(), settings=SETTINGS)
    else:
        periodic = wkdist.equivariant_structure_kernels([crystal], partners(), settings=SETTINGS,
                                                        lam=lam)[0]
        open_ = wkdist.equivariant_structure_kernels(blocks, partners(), settings=SETTINGS,
                                                     lam=lam)
    difference = np.tensordot(signs, open_, axes=1)
    np.testing.assert_array_equal(periodic[2], 0.0)  # no Cu in water
    # order by order, each at its own scale: the orders' magnitudes differ by many decades
    for nu in range(1 if lam else 0, SETTINGS.nu_max + 1):
        for partner in range(2):
            assert np.abs(periodic[partner, nu]).max() > 0
        assert_close(difference[:, nu], periodic[:, nu], rtol=1e-11)
    if lam:
        np.testing.assert_array_equal(difference[:, 0], 0.0)  # K^0 of lambda >= 1 is zero
    if lam == 0:
        np.testing.assert_array_equal(periodic[:2, 0], [4, 2])


def test_two_dimensional_periodicity():
    """pbc = (True, True, False): the double difference over the periodic axes."""
    slab = make_atoms([29], [[0, 0, 0]], cell=np.diag(CELL), pbc=[True, True, False])
    sizes = list(itertools.product((2, 3), repeat=2))
    blocks = [block((l, m, 1)) for l, m in sizes]
    signs = np.array([(-1) ** (l + m) for l, m in sizes], dtype=float)
    periodic = wkdist.structure_kernels([slab], partners(), settings=SETTINGS)[0]
    open_ = wkdist.structure_kernels(blocks, partners(), settings=SETTINGS)
    assert_close(np.tensordot(signs, open_, axes=1), periodic, rtol=1e-11)


def fcc_cell(a):
    return 0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=float)


def supercell(atoms, repeats):
    """atoms.repeat without ase's numpy-2.5 deprecation warning."""
    cell = atoms.cell.array
    shifts = np.array(list(itertools.product(*[range(n) for n in repeats]))) @ cell
    positions = (atoms.positions[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    numbers = np.tile(atoms.numbers, len(shifts))
    return make_atoms(numbers, positions, cell=np.array(repeats)[:, None] * cell, pbc=atoms.pbc)


@pytest.mark.parametrize(
    "crystal, repeats, cubic",
    [
        # primitive fcc cell, vectors 2.55 Å
        (make_atoms([29], [[0, 0, 0]], cell=fcc_cell(3.6), pbc=True), (2, 2, 2), True),
        # rock salt, two species, vectors 3.54 Å
        (make_atoms([11, 17], [[0, 0, 0], [2.5, 0, 0]], cell=fcc_cell(5.0), pbc=True),
         (2, 1, 3), True),
        (make_atoms([6], [[0, 0, 0]], cell=[[2.2, 0, 0], [1.4, 2.3, 0], [0.3, 0.7, 2.6]],
                    pbc=True), (1, 2, 1), False),  # skewed cell
    ],
    ids=["fcc", "rocksalt", "triclinic"],
)
def test_supercell_multiplies_kernels_by_cell_count(crystal, repeats, cubic):
    big = supercell(crystal, repeats)
    n = int(np.prod(repeats))
    rng = np.random.default_rng(3)
    shaken = make_atoms(crystal.numbers,
                        crystal.positions + 0.02 * rng.normal(size=(len(crystal), 3)),
                        cell=crystal.cell.array, pbc=True)
    others = [molecule("CH4"), make_atoms([11, 17, 29], [[0, 0, 0], [2.6, 0, 0], [0, 2.4, 0.5]]),
              shaken, make_atoms([6, 6, 6], [[0, 0, 0], [1.5, 0, 0], [0, 1.6, 0.3]])]
    small = wkdist.structure_kernels([crystal], others, settings=SETTINGS)[0]
    large = wkdist.structure_kernels([big], others, settings=SETTINGS)[0]
    assert np.abs(small[:, 1:]).max() > 0
    assert_close(large, n * small, rtol=1e-12)
    k_big = wkdist.structure_kernels([big], settings=SETTINGS)[0, 0]
    k_small = wkdist.structure_kernels([crystal], settings=SETTINGS)[0, 0]
    np.testing.assert_allclose(k_big, n * n * k_small, rtol=1e-12)
    # equivariant blocks: every one-atom Bravais lattice and rock salt is centrosymmetric, so
    # lam = 1 (odd, sigma = +1) vanishes; cubic lattices also kill lam = 2
    for lam in (1, 2):
        e_small = wkdist.equivariant_structure_kernels([crystal], others, settings=SETTINGS,
                                                       lam=lam)[0]
        e_large = wkdist.equivariant_structure_kernels([big], others, settings=SETTINGS,
                                                       lam=lam)[0]
        for nu in range(1, SETTINGS.nu_max + 1):
            scale = np.abs(small[:, nu]).max()
            np.testing.assert_allclose(e_large[:, nu], n * e_small[:, nu], rtol=0,
                                       atol=1e-12 * n * scale, err_msg=f"lam {lam}, nu {nu}")
            if lam == 1 or cubic:
                assert np.abs(e_small[:, nu]).max() < 1e-12 * scale, (lam, nu)
            else:
                assert np.abs(e_small[:, nu]).max() > 1e-6 * scale, (lam, nu)
