"""Independent, slow reference evaluations of the densities and the nu = 1 closed form of
docs/mathematics.md (numpy / scipy only).

Nothing here imports wkdist: these functions are the oracles the engine is tested against.
Environments are built by brute force (all pairs, non-periodic structures only), the nu = 1
closed form uses scipy's spherical_in and sph_harm_y, and the O(3) quadrature evaluates the
density overlap as a plain double sum of Gaussian overlaps, with no harmonics at all.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
from ase import Atoms
from scipy.spatial.transform import Rotation
from scipy.special import sph_harm_y, spherical_in


def real_harmonics(vectors: np.ndarray, l: int) -> np.ndarray:
    """Real Y_{l m}(r / |r|), m = -l..l, from scipy's complex harmonics (docs/mathematics.md)."""
    v = np.asarray(vectors, dtype=float).reshape(-1, 3)
    v = v / np.linalg.norm(v, axis=1)[:, None]
    theta = np.arctan2(np.hypot(v[:, 0], v[:, 1]), v[:, 2])  # accurate near the poles
    phi = np.mod(np.arctan2(v[:, 1], v[:, 0]), 2.0 * np.pi)
    out = np.empty((len(v), 2 * l + 1))
    out[:, l] = sph_harm_y(l, 0, theta, phi).real
    for m in range(1, l + 1):
        y = sph_harm_y(l, m, theta, phi)
        out[:, l + m] = np.sqrt(2.0) * (-1) ** m * y.real
        out[:, l - m] = np.sqrt(2.0) * (-1) ** m * y.imag
    return out


def radial_weight(r, *, cutoff, decay_length, cutoff_smoothing, radial_weight="exp"):
    """w(r) = d(r) f_c(r) (docs/mathematics.md, "Environments and neighbour densities")."""
    r = np.asarray(r, dtype=float)
    d = np.exp(-r / decay_length) if radial_weight == "exp" else np.ones_like(r)
    delta = cutoff_smoothing
    if delta > 0:
        fc = np.where(
            r < cutoff - delta, 1.0, 0.5 * (1.0 + np.cos(np.pi * (r - cutoff + delta) / delta))
        )
    else:
        fc = np.ones_like(r)
    return np.where(r < cutoff, d * fc, 0.0)


def environments(atoms, settings):
    """Per atom i of a non-periodic structure: (r_j - r_i, atomic numbers, w, sigma^2)."""
    assert not atoms.pbc.any()
    pos = atoms.positions
    envs = []
    for i in range(len(atoms)):
        d = pos - pos[i]
        r = np.linalg.norm(d, axis=1)
        keep = (r < settings.cutoff) & (np.arange(len(atoms)) != i)
        d, r = d[keep], r[keep]
        w = radial_weight(
            r,
            cutoff=settings.cutoff,
            decay_length=settings.decay_length,
            cutoff_smoothing=settings.cutoff_smoothing,
            radial_weight=settings.radial_weight,
        )
        sigma = settings.gaussian_width * np.exp(r / settings.decay_length)
        envs.append((d, atoms.numbers[keep], w, sigma**2))
    return envs


def khat1(env_a, env_b, lmax):
    """khat^{1, l}, l = 0..lmax, between two environments (the basis-free closed form).

    The centre-species delta is the caller's business.
    """
    da, za, wa, sa = env_a
    db, zb, wb, sb = env_b
    out = [np.zeros((2 * l + 1, 2 * l + 1)) for l in range(lmax + 1)]
    if len(da) == 0 or len(db) == 0:
        return out
    ra = np.linalg.norm(da, axis=1)
    rb = np.linalg.norm(db, axis=1)
    s2 = sa[:, None] + sb[None, :]
    x = ra[:, None] * rb[None, :] / s2
    same = (za[:, None] == zb[None, :]).astype(float)
    pref = (
        same * wa[:, None] * wb[None, :] * 4.0 * np.pi * (2.0 * np.pi * s2) ** -1.5
        * np.exp(-(ra[:, None] ** 2 + rb[None, :] ** 2) / (2.0 * s2))
    )
    for l in range(lmax + 1):
        radial = pref * spherical_in(l, x)
        out[l] = real_harmonics(da, l).T @ radial @ real_harmonics(db, l)
    return out


def k1_blocks(env_a, env_b, lmax, normalization):
    blocks = khat1(env_a, env_b, lmax)
    if normalization == "paper":
        blocks = [8.0 * np.pi**2 / (2 * l + 1) * b for l, b in enumerate(blocks)]
    return blocks


def reference_kernels_nu2(frames_a, frames_b, settings):
    """K^0, K^1, K^2 (oracle 2: K^2 = sum_l ||k^{1, l}||_F^2 / (2l + 1) per atom pair)."""
    lmax = settings.lambda_max
    out = np.zeros((len(frames_a), len(frames_b), 3))
    envs_b = [environments(b, settings) for b in frames_b]
    for ia, a in enumerate(frames_a):
        envs_a = environments(a, settings)
        for ib, b in enumerate(frames_b):
            for i, env_i in enumerate(envs_a):
                for k, env_k in enumerate(envs_b[ib]):
                    if a.numbers[i] != b.numbers[k]:
                        continue
                    blocks = k1_blocks(env_i, env_k, lmax, settings.normalization)
                    out[ia, ib, 0] += 1.0
                    out[ia, ib, 1] += blocks[0][0, 0]
                    out[ia, ib, 2] += sum(
                        np.sum(blk**2) / (2 * l + 1) for l, blk in enumerate(blocks)
                    )
    return out


def so3_quadrature(n_alpha, n_beta, n_gamma):
    """Rotations and weights (sum 8 pi^2): alpha, gamma uniform, cos(beta) Gauss-Legendre."""
    alpha = np.arange(n_alpha) * 2.0 * np.pi / n_alpha
    gamma = np.arange(n_gamma) * 2.0 * np.pi / n_gamma
    x, wx = np.polynomial.legendre.leggauss(n_beta)
    beta = np.arccos(x)
    a, b, g = np.meshgrid(alpha, beta, gamma, indexing="ij")
    weights = (2.0 * np.pi / n_alpha) * (2.0 * np.pi / n_gamma) * np.meshgrid(
        np.ones(n_alpha), wx, np.ones(n_gamma), indexing="ij"
    )[1]
    angles = np.stack([a.ravel(), b.ravel(), g.ravel()], axis=1)
    return Rotation.from_euler("ZYZ", angles).as_matrix(), weights.ravel()


def overlap_k1(env_a, env_b, rotations):
    """k^1(R) = int rho_a(x) rho_b(R^-1 x) dx for every R: a double sum of Gaussian overlaps."""
    da, za, wa, sa = env_a
    db, zb, wb, sb = env_b
    if len(da) == 0 or len(db) == 0:
        return np.zeros(len(rotations))
    rotated = np.einsum("gxy,jy->gjx", rotations, db)
    s2 = sa[:, None] + sb[None, :]
    same = za[:, None] == zb[None, :]
    coef = np.where(same, wa[:, None] * wb[None, :] * (2.0 * np.pi * s2) ** -1.5, 0.0)
    diff = da[None, :, None, :] - rotated[:, None, :, :]
    return np.einsum("ab,gab->g", coef, np.exp(-np.sum(diff**2, axis=-1) / (2.0 * s2[None])))


def quadrature_kernels(frames_a, frames_b, settings, nu_max, grid=(62, 32, 62), proper_only=False):
    """Oracle 1: K^nu = sum over atom pairs of
    (1 / 16 pi^2) sum_g W_g [(k^1(R_g))^nu + (k^1(-R_g))^nu].

    With ``proper_only`` the SO(3) average (1 / 8 pi^2) sum_g W_g (k^1(R_g))^nu instead.
    """
    rotations, weights = so3_quadrature(*grid)
    out = np.zeros((len(frames_a), len(frames_b), nu_max + 1))
    for ia, a in enumerate(frames_a):
        envs_a = environments(a, settings)
        for ib, b in enumerate(frames_b):
            envs_b = environments(b, settings)
            for i, env_i in enumerate(envs_a):
                for k, env_k in enumerate(envs_b):
                    if a.numbers[i] != b.numbers[k]:
                        continue
                    out[ia, ib, 0] += 1.0
                    signs = (1.0,) if proper_only else (1.0, -1.0)
                    for sign in signs:
                        k1 = overlap_k1(env_i, env_k, sign * rotations)
                        for nu in range(1, nu_max + 1):
                            out[ia, ib, nu] += (weights * k1**nu).sum() / (
                                8.0 * np.pi**2 * len(signs)
                            )
    return out


def wigner_d_from_harmonics(real_sph, q, l, rng, n=200):
    """D^l(Q) with Y_l(Q r) = D Y_l(r), least squares over random r; real_sph(v, l) -> (n, 2l+1)."""
    r = rng.normal(size=(n, 3))
    y = real_sph(r, l)
    y_rot = real_sph(r @ q.T, l)
    d_transposed, *_ = np.linalg.lstsq(y, y_rot, rcond=None)
    return d_transposed.T


# ---------------------------------------------------------------- building structures
# ase 3.29 under numpy 2.5 warns (DeprecationWarning, "Setting the shape on a NumPy array") in
# Atoms.copy, Atoms.__getitem__, Atoms.repeat, Atoms * n and Atoms() (empty): pytest turns
# that into an error. The helpers below build Atoms from plain arrays instead.

ASE_SHAPE_WARNING = "Setting the shape on a NumPy array"


@contextmanager
def ase_quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ASE_SHAPE_WARNING, category=DeprecationWarning)
        yield


def make_atoms(numbers, positions, cell=None, pbc=False):
    return Atoms(
        numbers=np.asarray(numbers), positions=np.asarray(positions, dtype=float).reshape(-1, 3),
        cell=np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=float), pbc=pbc,
    )


def molecule(name):
    """ase.build.molecule without the numpy 2.5 deprecation warning."""
    from ase.build import molecule as ase_molecule

    with ase_quiet():
        mol = ase_molecule(name)
    return make_atoms(mol.numbers, mol.positions)


def subset(atoms, indices):
    indices = list(indices)
    return make_atoms(atoms.numbers[indices], atoms.positions[indices], atoms.cell.array, atoms.pbc)


def transformed(atoms, matrix=None, shift=None, order=None):
    """Copy of a non-periodic structure with positions (Q r + t), atoms optionally reordered."""
    pos = atoms.positions.copy()
    numbers = atoms.numbers.copy()
    if order is not None:
        pos, numbers = pos[order], numbers[order]
    if matrix is not None:
        pos = pos @ np.asarray(matrix).T
    if shift is not None:
        pos = pos + np.asarray(shift)
    return make_atoms(numbers, pos)
