"""Public engine API: symmetry, PSD, schemes, determinism, degenerate and invalid input."""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest
import wkref
from wkref import make_atoms, molecule

import wkdist
from wkdist import KernelSettings, SettingsError, StructureError

BROAD = KernelSettings(cutoff=5.0, gaussian_width=0.3, decay_length=2.0, lambda_max=3, nu_max=4)


def mixed_frames():
    """Molecules of different sizes and species (N, S only on some)."""
    rng = np.random.default_rng(8)
    names = ["CH3CH2OH", "H2O", "CH3CH2NH2", "C6H6", "CH3SH", "HCOOH", "CH4"]
    frames = [molecule(name) for name in names]
    jitter = [make_atoms(f.numbers, f.positions + 0.05 * rng.normal(size=f.positions.shape))
              for f in frames[:3]]
    return frames + jitter


# ---------------------------------------------------------------- oracle 5: symmetry, PSD


@pytest.mark.parametrize("settings", [KernelSettings(), BROAD], ids=["default", "broad"])
def test_swapping_arguments_transposes(settings):
    a, b = mixed_frames()[:4], mixed_frames()[4:]
    kab = wkdist.structure_kernels(a, b, settings=settings)
    kba = wkdist.structure_kernels(b, a, settings=settings)
    assert kab.shape == (4, 6, settings.nu_max + 1)
    np.testing.assert_allclose(kab, kba.transpose(1, 0, 2), rtol=1e-13, atol=0)


@pytest.mark.parametrize("lam", [1, 2])
def test_swapping_arguments_transposes_equivariant_blocks(lam):
    a, b = mixed_frames()[:3], mixed_frames()[6:]
    kab = wkdist.equivariant_structure_kernels(a, b, settings=BROAD, lam=lam)
    kba = wkdist.equivariant_structure_kernels(b, a, settings=BROAD, lam=lam)
    expected = kba.transpose(1, 0, 2, 4, 3)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(kab, expected, rtol=0, atol=1e-13 * np.abs(expected).max())
    # the blocks themselves are not symmetric, so the test can tell a missing transpose
    assert np.abs(kab - kab.transpose(0, 1, 2, 4, 3)).max() > 1e-6 * np.abs(kab).max()


@pytest.mark.parametrize("lam", [0, 2])
def test_frames_b_none_equals_frames_b_frames_a(lam):
    frames = mixed_frames()  # 10 structures: 55 pairs, several parallel work items
    if lam == 0:
        implicit = wkdist.structure_kernels(frames, settings=BROAD)
        explicit = wkdist.structure_kernels(frames, frames, settings=BROAD)
        keyword = wkdist.structure_kernels(frames_a=frames, frames_b=None, settings=BROAD)
        np.testing.assert_array_equal(implicit, keyword)
    else:
        implicit = wkdist.equivariant_structure_kernels(frames, settings=BROAD, lam=lam)
        explicit = wkdist.equivariant_structure_kernels(frames, frames, settings=BROAD, lam=lam)
    assert implicit.shape == explicit.shape
    scale = np.abs(explicit).max()
    np.testing.assert_allclose(implicit, explicit, rtol=0, atol=1e-13 * scale)
    upper = np.triu_indices(len(frames))
    np.testing.assert_array_equal(implicit[upper], explicit[upper])


@pytest.mark.parametrize("normalization", ["paper", "exact"])
@pytest.mark.parametrize("settings", [KernelSettings(), BROAD], ids=["default", "broad"])
def test_gram_matrices_are_symmetric_positive_semidefinite(settings, normalization):
    from dataclasses import replace

    settings = replace(settings, normalization=normalization)
    frames = mixed_frames()
    kernels = wkdist.structure_kernels(frames, settings=settings)
    for nu in range(settings.nu_max + 1):
        k = kernels[:, :, nu]
        np.testing.assert_array_equal(k, k.T)
        eigenvalues = np.linalg.eigvalsh(k)
        assert eigenvalues.min() >= -1e-10 * eigenvalues.max(), (nu, eigenvalues)
        assert eigenvalues.max() > 0


@pytest.mark.parametrize("lam", [1, 2, 3])
def test_equivariant_gram_matrix_is_positive_semidefinite(lam):
    frames = mixed_frames()
    kernels = wkdist.equivariant_structure_kernels(frames, settings=BROAD, lam=lam)
    n, d = len(frames), 2 * lam + 1
    for nu in range(1, BROAD.nu_max + 1):
        big = kernels[:, :, nu].transpose(0, 2, 1, 3).reshape(n * d, n * d)
        np.testing.assert_allclose(big, big.T, rtol=0, atol=1e-13 * np.abs(big).max())
        eigenvalues = np.linalg.eigvalsh(0.5 * (big + big.T))
        assert eigenvalues.min() >= -1e-10 * eigenvalues.max(), (nu, eigenvalues.min())


# ---------------------------------------------------------------- schemes, determinism


@pytest.mark.parametrize("nu_max", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("normalization", ["paper", "exact"])
def test_full_and_reduced_schemes_agree(nu_max, normalization):
    frames = mixed_frames()[:5]
    common = dict(cutoff=5.0, gaussian_width=0.3, decay_length=2.0, lambda_max=3,
                  nu_max=nu_max, normalization=normalization)
    reduced = wkdist.structure_kernels(frames, settings=KernelSettings(**common, scheme="reduced"))
    full = wkdist.structure_kernels(frames, settings=KernelSettings(**common, scheme="full"))
    for nu in range(nu_max + 1):
        scale = np.abs(full[:, :, nu]).max()
        assert scale > 0
        np.testing.assert_allclose(reduced[:, :, nu], full[:, :, nu], rtol=1e-13,
                                   atol=1e-14 * scale, err_msg=f"nu = {nu}")


def test_lower_orders_do_not_depend_on_nu_max():
    frames = mixed_frames()[:4]
    common = dict(cutoff=5.0, gaussian_width=0.3, decay_length=2.0, lambda_max=3)
    k6 = wkdist.structure_kernels(frames, settings=KernelSettings(**common, nu_max=6))
    for nu_max in (1, 2, 3, 5):
        k = wkdist.structure_kernels(frames, settings=KernelSettings(**common, nu_max=nu_max))
        assert k.shape == (4, 4, nu_max + 1)
        np.testing.assert_allclose(k, k6[:, :, :nu_max + 1], rtol=1e-13, atol=0)


def test_results_are_bitwise_reproducible_across_thread_counts():
    frames = mixed_frames()
    first = wkdist.structure_kernels(frames, settings=BROAD)
    again = wkdist.structure_kernels(frames, settings=BROAD)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = wkdist.structure_kernels(frames, settings=BROAD)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, single)


def test_output_dtype_and_shapes():
    a, b = mixed_frames()[:2], mixed_frames()[2:5]
    k = wkdist.structure_kernels(a, b, settings=BROAD)
    assert k.dtype == np.float64 and k.shape == (2, 3, 5)
    e = wkdist.equivariant_structure_kernels(a, b, settings=BROAD, lam=3)
    assert e.dtype == np.float64 and e.shape == (2, 3, 5, 7, 7)
    # tuples and generators are sequences of frames too
    np.testing.assert_array_equal(wkdist.structure_kernels(tuple(a), iter(b), settings=BROAD), k)


# ---------------------------------------------------------------- degenerate structures


def test_atoms_without_neighbours_give_exact_zeros():
    lone = make_atoms([1], [[0, 0, 0]])
    far_pair = make_atoms([6, 6], [[0, 0, 0], [0, 0, 5.0]])  # exactly at the cutoff
    farther = make_atoms([6, 1], [[0, 0, 0], [7.0, 1.0, 0]])
    others = [molecule("CH4"), molecule("CH3CH2OH"), lone]
    for settings in (KernelSettings(), KernelSettings(cutoff_smoothing=0.0), BROAD):
        k = wkdist.structure_kernels([lone, far_pair, farther], others, settings=settings)
        assert np.all(np.isfinite(k))
        np.testing.assert_array_equal(k[:, :, 1:], 0.0)
        counts = [[4, 6, 1], [1 * 2, 2 * 2, 0], [4 + 1, 6 + 2, 1]]
        np.testing.assert_array_equal(k[:, :, 0], counts)
        e = wkdist.equivariant_structure_kernels([lone, far_pair], others, settings=settings,
                                                 lam=1)
        assert np.all(np.isfinite(e))
        np.testing.assert_array_equal(e, 0.0)
        self_k = wkdist.structure_kernels([lone, far_pair, farther], settings=settings)
        np.testing.assert_array_equal(self_k[:, :, 1:], 0.0)


def test_structures_without_common_species_give_zero():
    water = molecule("H2O")
    salt = make_atoms([11, 17], [[0, 0, 0], [2.4, 0, 0]])
    k = wkdist.structure_kernels([water, salt], [salt, water], settings=BROAD)
    assert np.all(np.isfinite(k))
    np.testing.assert_array_equal(k[0, 0], 0.0)
    np.testing.assert_array_equal(k[1, 1], 0.0)
    assert np.all(k[0, 1] > 0) and np.all(k[1, 0] > 0)
    e = wkdist.equivariant_structure_kernels([water], [salt], settings=BROAD, lam=2)
    np.testing.assert_array_equal(e, 0.0)


def test_neighbour_species_absent_on_the_other_side_do_not_contribute():
    """C centres pair, but the O and N neighbours have no partner: only C-C and C-H overlaps."""
    a = make_atoms([6, 8], [[0, 0, 0], [1.2, 0, 0]])  # C=O
    b = make_atoms([6, 7], [[0, 0, 0], [1.2, 0, 0]])  # C-N, same geometry
    k = wkdist.structure_kernels([a], [b], settings=BROAD)
    np.testing.assert_array_equal(k[0, 0], [1.0, 0, 0, 0, 0])  # C-C centres, no common neighbour
    c = make_atoms([6, 8, 1], [[0, 0, 0], [1.2, 0, 0], [-0.6, 0.9, 0]])
    d = make_atoms([6, 7, 1], [[0, 0, 0], [1.2, 0, 0], [-0.6, 0.9, 0]])
    e = make_atoms([6, 1], [[0, 0, 0], [-0.6, 0.9, 0]])
    k_cd = wkdist.structure_kernels([c], [d], settings=BROAD)[0, 0]
    k_ee = wkdist.structure_kernels([e], [e], settings=BROAD)[0, 0]
    # C centres: only the H neighbour pairs, as in e; H centres: the C neighbour pairs,
    # the O / N neighbours do not; so every order equals the kernel of e with itself
    np.testing.assert_allclose(k_cd, k_ee, rtol=1e-14)


# ---------------------------------------------------------------- invalid input


def _bad_frames():
    with wkref.ase_quiet():
        from ase import Atoms

        empty = Atoms()
    good = molecule("H2O")
    nan = make_atoms([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [np.nan, 0.9, 0]])
    inf = make_atoms([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [0, np.inf, 0]])
    close = make_atoms([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [0.96, 0.05, 0]])
    image = make_atoms([29, 29], [[0.01, 0, 0], [2.5 - 0.03, 0, 0]], cell=np.diag([2.5, 4, 4]),
                       pbc=True)  # 0.04 Å apart through the periodic boundary
    return good, {"empty": empty, "nan": nan, "inf": inf, "close": close, "image": image}


REASON = {"empty": "atom", "nan": "(?i)finite|nan", "inf": "(?i)finite|inf", "close": "apart",
          "image": "apart"}


@pytest.mark.parametrize("kind", ["empty", "nan", "inf", "close", "image"])
@pytest.mark.parametrize("side", ["frames_a", "frames_b"])
def test_bad_structures_raise_structure_error_naming_the_frame(kind, side):
    good, bad = _bad_frames()
    frames = [good, bad[kind], good]
    if side == "frames_a":
        call = lambda: wkdist.structure_kernels(frames, [good], settings=BROAD)  # noqa: E731
    else:
        call = lambda: wkdist.structure_kernels([good], frames, settings=BROAD)  # noqa: E731
    with pytest.raises(StructureError, match=rf"{side}\[1\]") as info:
        call()
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, wkdist.WkdistError)
    assert re.search(REASON[kind], str(info.value)), str(info.value)
    with pytest.raises(StructureError, match=rf"{side}\[1\]"):
        if side == "frames_a":
            wkdist.equivariant_structure_kernels(frames, settings=BROAD, lam=1)
        else:
            wkdist.equivariant_structure_kernels([good], frames, settings=BROAD, lam=1)


def test_atoms_0_1_apart_are_accepted():
    ok = make_atoms([1, 1], [[0, 0, 0], [0.1001, 0, 0]])
    assert np.all(np.isfinite(wkdist.structure_kernels([ok], settings=BROAD)))


def test_not_a_sequence_of_atoms():
    with pytest.raises(StructureError, match="frames_a"):
        wkdist.structure_kernels(molecule("H2O"), settings=BROAD)  # a single Atoms
    with pytest.raises(StructureError, match=r"frames_b\[0\]"):
        wkdist.structure_kernels([molecule("H2O")], [np.zeros((3, 3))], settings=BROAD)


@pytest.mark.parametrize("lam", [0, -1, 4, True, 1.5, "1", None])
def test_lam_out_of_range_raises_settings_error(lam):
    frames = [molecule("H2O")]
    with pytest.raises(SettingsError, match="lam") as info:
        wkdist.equivariant_structure_kernels(frames, settings=BROAD, lam=lam)
    assert isinstance(info.value, ValueError)


def test_lam_accepts_numpy_integers_and_lambda_max():
    frames = [molecule("H2O")]
    a = wkdist.equivariant_structure_kernels(frames, settings=BROAD, lam=np.int64(3))
    b = wkdist.equivariant_structure_kernels(frames, settings=BROAD, lam=3)
    np.testing.assert_array_equal(a, b)


def test_settings_must_be_kernel_settings():
    with pytest.raises(SettingsError, match="settings"):
        wkdist.structure_kernels([molecule("H2O")], settings={"cutoff": 5.0})
