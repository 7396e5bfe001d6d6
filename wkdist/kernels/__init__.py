"""Numba kernels on plain arrays: no dask, zarr or ase imports here or below."""

from .coupling import real_clebsch_gordan
from .harmonics import real_spherical_harmonics
from .plans import coupling_table, equivariant_schedule, invariant_schedule
from .radial import scaled_spherical_in
from .wigner import PackedArrays, pair_kernels

__all__ = [
    "real_clebsch_gordan",
    "real_spherical_harmonics",
    "coupling_table",
    "invariant_schedule",
    "equivariant_schedule",
    "scaled_spherical_in",
    "PackedArrays",
    "pair_kernels",
]
