"""Packing ase.Atoms into the plain arrays the numba kernels read (the ase adapter).

Neighbours (docs/mathematics.md): every (j, image) within the cutoff except the centre itself at
zero offset, so periodic images of the centre are neighbours. Per neighbour the radial data
(r, sigma(r)^2, w(r)) and real harmonics are computed here once, vectorized, so the kernels only
combine them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.neighborlist import primitive_neighbor_list

from ..errors import StructureError
from ..kernels.harmonics import real_spherical_harmonics
from ..kernels.wigner import PackedArrays
from .settings import KernelSettings

__all__ = ["MIN_DISTANCE", "check_frames", "species_of", "pack_structures", "radial_weight"]

MIN_DISTANCE = 0.1  # Å; closer atoms are an input error, not physics


def check_frames(frames: Sequence[Atoms], name: str) -> list[Atoms]:
    """Validate a sequence of ase.Atoms; messages name ``name[index]``."""
    if isinstance(frames, Atoms):
        raise StructureError(f"{name}: expected a sequence of ase.Atoms, got a single Atoms")
    try:
        frames = list(frames)
    except TypeError:
        raise StructureError(
            f"{name}: expected a sequence of ase.Atoms, got {type(frames).__name__}"
        ) from None
    for index, atoms in enumerate(frames):
        if not isinstance(atoms, Atoms):
            raise StructureError(
                f"{name}[{index}]: expected an ase.Atoms, got {type(atoms).__name__}"
            )
        if len(atoms) == 0:
            raise StructureError(f"{name}[{index}]: expected at least one atom, got none")
        positions = atoms.get_positions()
        if not np.isfinite(positions).all():
            raise StructureError(
                f"{name}[{index}]: expected finite positions, got NaN or infinity"
            )
        pbc = atoms.get_pbc()
        if pbc.any():
            cell = atoms.get_cell().array
            if not np.isfinite(cell).all() or abs(np.linalg.det(cell)) < 1e-12:
                raise StructureError(
                    f"{name}[{index}]: expected a non-singular cell for a periodic structure, "
                    f"got {cell.tolist()}"
                )
    return frames


def species_of(*frame_sets: Sequence[Atoms]) -> np.ndarray:
    """Sorted atomic numbers present in any of the sets."""
    numbers = [np.unique(atoms.numbers) for frames in frame_sets for atoms in frames]
    return np.unique(np.concatenate(numbers)) if numbers else np.zeros(0, dtype=np.int64)


def _neighbours(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, r_j + T - r_i) for every neighbour pair, sorted by i."""
    positions = atoms.get_positions()
    if atoms.get_pbc().any():
        i, j, vectors = primitive_neighbor_list(
            "ijD", atoms.get_pbc(), atoms.get_cell().array, positions, cutoff,
            self_interaction=False,
        )
        order = np.argsort(i, kind="stable")
        return i[order], j[order], vectors[order]
    # A molecule: all pairs directly, far cheaper than a cell list for tens of atoms.
    vectors = positions[None, :, :] - positions[:, None, :]
    distance2 = np.einsum("ijx,ijx->ij", vectors, vectors)
    mask = distance2 < cutoff * cutoff
    np.fill_diagonal(mask, False)
    i, j = np.nonzero(mask)
    return i, j, vectors[i, j]


def radial_weight(r: np.ndarray, settings: KernelSettings) -> np.ndarray:
    """w(r) = d(r) f_c(r) (docs/mathematics.md)."""
    weight = (np.exp(-r / settings.decay_length) if settings.radial_weight == "exp"
              else np.ones_like(r))
    delta = settings.cutoff_smoothing
    if delta > 0:
        start = settings.cutoff - delta
        smooth = 0.5 * (1.0 + np.cos(np.pi * (r - start) / delta))
        weight = np.where(r < start, weight, weight * smooth)
    return np.where(r < settings.cutoff, weight, 0.0)


def pack_structures(
    frames: Sequence[Atoms], settings: KernelSettings, *, species: np.ndarray, name: str = "frames"
) -> PackedArrays:
    """Pack validated frames; ``species`` (sorted atomic numbers) fixes the species indices."""
    centre_counts = np.array([len(atoms) for atoms in frames], dtype=np.int64)
    frame_ptr = np.concatenate([[0], np.cumsum(centre_counts)]).astype(np.int64)
    centre_species = np.searchsorted(species, np.concatenate([a.numbers for a in frames]))
    centres, neighbour_species, vectors = [], [], []
    for index, atoms in enumerate(frames):
        i, j, d = _neighbours(atoms, settings.cutoff)
        if len(d):
            closest = np.sqrt(np.einsum("nx,nx->n", d, d).min())
            if closest < MIN_DISTANCE:
                raise StructureError(
                    f"{name}[{index}]: expected atoms at least {MIN_DISTANCE} Å apart, "
                    f"got two at {closest:.3g} Å"
                )
        centres.append(i + frame_ptr[index])
        neighbour_species.append(np.searchsorted(species, atoms.numbers[j]))
        vectors.append(d)
    centre = np.concatenate(centres).astype(np.int64)
    nb_species = np.concatenate(neighbour_species).astype(np.int64)
    vectors = np.concatenate(vectors).reshape(-1, 3)
    order = np.lexsort((nb_species, centre))  # stable: keeps each frame's neighbour order
    centre, nb_species, vectors = centre[order], nb_species[order], vectors[order]
    n_centres, n_species = int(frame_ptr[-1]), len(species)
    counts = np.zeros((n_centres, n_species), dtype=np.int64)
    np.add.at(counts, (centre, nb_species), 1)
    nb_ptr = np.zeros((n_centres, n_species + 1), dtype=np.int64)
    nb_ptr[:, 1:] = np.cumsum(counts, axis=1)
    row_start = np.concatenate([[0], np.cumsum(counts.sum(axis=1))[:-1]])
    nb_ptr += row_start[:, None]
    r = np.sqrt(np.einsum("nx,nx->n", vectors, vectors))
    sigma = settings.gaussian_width * np.exp(r / settings.decay_length)
    return PackedArrays(
        frame_ptr=frame_ptr,
        species=centre_species.astype(np.int64),
        nb_ptr=nb_ptr,
        r=r,
        sigma2=sigma * sigma,
        weight=radial_weight(r, settings),
        harmonics=real_spherical_harmonics(vectors, settings.lambda_max),
    )
