"""Public engine: invariant and equivariant structure kernels (docs/mathematics.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
from ase import Atoms

from ..errors import SettingsError
from ..kernels.plans import coupling_table, equivariant_schedule, invariant_schedule
from ..kernels.wigner import PackedArrays, pair_kernels
from .settings import KernelSettings
from .structures import check_frames, pack_structures, species_of

__all__ = ["structure_kernels", "equivariant_structure_kernels", "kernel_block"]

# Structure pairs per parallel work item: small enough to balance threads, large enough that
# a partly filled last batch of atom pairs costs little.
_PAIRS_PER_ITEM = 16


def _check_settings(settings: KernelSettings) -> None:
    if not isinstance(settings, KernelSettings):
        raise SettingsError(
            f"settings: expected a wkdist.KernelSettings, got {type(settings).__name__}"
        )


def _pair_list(n_a: int, n_b: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Structure pairs row-major (only b >= a when symmetric) and work-item boundaries."""
    a, b = np.triu_indices(n_a) if symmetric else np.indices((n_a, n_b)).reshape(2, -1)
    row_ptr = np.arange(0, len(a) + _PAIRS_PER_ITEM, _PAIRS_PER_ITEM)
    row_ptr[-1] = len(a)
    row_ptr = np.unique(row_ptr)
    return a.astype(np.int64), b.astype(np.int64), row_ptr.astype(np.int64)


def kernel_block(
    packed_a: PackedArrays,
    packed_b: PackedArrays | None,
    *,
    settings: KernelSettings,
    lam: int = 0,
) -> np.ndarray:
    """Kernels between two packed sets (both packed with the same ``species``).

    ``packed_b=None`` means packed_a against itself: only pairs b >= a are computed and the
    block is mirrored. Returns (n_a, n_b, nu_max + 1) for lam = 0, else
    (n_a, n_b, nu_max + 1, 2 lam + 1, 2 lam + 1). This is what a tile task calls.
    """
    if lam == 0:
        schedule = invariant_schedule(settings.lambda_max, settings.nu_max, settings.scheme)
    else:
        schedule = equivariant_schedule(settings.lambda_max, settings.nu_max, lam)
    symmetric = packed_b is None
    packed_b = packed_a if symmetric else packed_b
    n_a, n_b = packed_a.n_structures, packed_b.n_structures
    pair_a, pair_b, row_ptr = _pair_list(n_a, n_b, symmetric)
    with numba.parallel_chunksize(1):
        values = pair_kernels(
            packed_a, packed_b, pair_a, pair_b, row_ptr,
            schedule=schedule,
            table=coupling_table(settings.lambda_max),
            paper_normalization=settings.normalization == "paper",
        )
    d = 2 * lam + 1
    out = np.zeros((n_a, n_b, settings.nu_max + 1) + ((d, d) if lam else ()))
    out[pair_a, pair_b] = values.reshape((len(pair_a),) + out.shape[2:])
    if symmetric:
        below = np.tril(np.ones((n_a, n_a), dtype=bool), -1)
        mirrored = out.transpose((1, 0, 2, 4, 3) if lam else (1, 0, 2))
        out[below] = mirrored[below]
    return out


def _compute(frames_a, frames_b, settings: KernelSettings, lam: int) -> np.ndarray:
    frames_a = check_frames(frames_a, "frames_a")
    if frames_b is not None:
        frames_b = check_frames(frames_b, "frames_b")
    species = species_of(frames_a, frames_b or [])
    packed_a = pack_structures(frames_a, settings, species=species, name="frames_a")
    packed_b = (
        None if frames_b is None
        else pack_structures(frames_b, settings, species=species, name="frames_b")
    )
    return kernel_block(packed_a, packed_b, settings=settings, lam=lam)


def structure_kernels(
    frames_a: Sequence[Atoms],
    frames_b: Sequence[Atoms] | None = None,
    *,
    settings: KernelSettings = KernelSettings(),
) -> np.ndarray:
    """Invariant structure kernels K^nu(A, B), nu = 0..nu_max.

    Parameters
    ----------
    frames_a, frames_b : sequence of ase.Atoms
        Molecules or periodic cells. ``frames_b=None`` computes ``frames_a`` against itself,
        each pair once (the result is symmetric).
    settings : KernelSettings
        Cutoff, density, radial weight, nu_max, lambda_max and normalization.

    Returns
    -------
    numpy.ndarray
        Shape (n_a, n_b, nu_max + 1), float64: entry [A, B, nu] is K^nu(A, B), the sum over
        atom pairs of the same species of the atom-pair kernel of order nu.
    """
    _check_settings(settings)
    return _compute(frames_a, frames_b, settings, 0)


def equivariant_structure_kernels(
    frames_a: Sequence[Atoms],
    frames_b: Sequence[Atoms] | None = None,
    *,
    settings: KernelSettings = KernelSettings(),
    lam: int,
) -> np.ndarray:
    """Equivariant structure kernels K^{nu, lam, +1}(A, B) of order ``lam``.

    Parameters
    ----------
    frames_a, frames_b : sequence of ase.Atoms
        As in :func:`structure_kernels`.
    settings : KernelSettings
        As in :func:`structure_kernels`.
    lam : int
        The order, 1 <= lam <= settings.lambda_max.

    Returns
    -------
    numpy.ndarray
        Shape (n_a, n_b, nu_max + 1, 2 lam + 1, 2 lam + 1). Rotating a structure of
        ``frames_a`` by Q multiplies its block's rows by D^lam(Q) on the left (columns likewise
        for ``frames_b``; docs/mathematics.md); K^0 is zero for lam >= 1.
    """
    _check_settings(settings)
    if isinstance(lam, bool) or not isinstance(lam, (int, np.integer)) or not (
        1 <= lam <= settings.lambda_max
    ):
        raise SettingsError(
            f"lam: expected an integer between 1 and lambda_max = {settings.lambda_max}, "
            f"got {lam!r}"
        )
    return _compute(frames_a, frames_b, settings, int(lam))
