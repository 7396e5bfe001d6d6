"""Data sets wkdist knows how to load (QM9 through the optional ``qm9pack`` files)."""

from .qm9 import Qm9, load_qm9
from .xtb import xtb_dipole, xtb_dipoles, xtb_polarizabilities, xtb_polarizability

__all__ = [
    "Qm9",
    "load_qm9",
    "xtb_dipole",
    "xtb_dipoles",
    "xtb_polarizability",
    "xtb_polarizabilities",
]
