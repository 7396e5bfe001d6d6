"""GFN2-xTB dipole vectors of neutral molecules, computed with the optional ``tblite`` package.

Why: QM9 ships only the magnitude of the (B3LYP) dipole moment, and qm9pack's polarizability
tensors are not given in the frame of the stored coordinates, so neither serves as a covariant
(vector or tensor) target. A GFN2-xTB single point on the QM9 geometry gives a dipole vector in
the frame of the coordinates, cheaply (~5 ms for a QM9 molecule on one core), as a benchmark
for learning vector targets. GFN2-xTB is not B3LYP: its |mu| is typically ~10-20 % larger than
QM9's, so the two are not interchangeable.

Units: positions are read in Å from ``atoms`` and handed to tblite in bohr; tblite returns the
dipole in e·bohr, which is returned here in debye (1 e·bohr = 2.541746473 D, CODATA 2018, the
release the QM9 loader's Hartree-to-eV factor comes from).

Origin: the dipole of a system with total charge q changes by -q·t when the origin moves by t,
so only for a neutral molecule is it independent of the origin (and of a translation of the
coordinates). The molecule is therefore always computed neutral (``charge=0``); tblite chooses
the spin from the electron count (closed shell for every QM9 molecule). Under a rotation Q of
the coordinates the dipole becomes Q @ mu, and under inversion -mu: a polar vector.

tblite is imported inside the functions: ``import wkdist`` does not need it. tblite's OpenMP
thread count is fixed when it is first loaded; set ``OMP_NUM_THREADS`` beforehand to limit it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase import Atoms

from ..errors import DataError

__all__ = ["BOHR_ANGSTROM", "EBOHR_TO_DEBYE", "METHOD", "xtb_dipole", "xtb_dipoles"]

BOHR_ANGSTROM = 0.529177210903  # Å per bohr, CODATA 2018
EBOHR_TO_DEBYE = 2.541746473  # debye per e·bohr, CODATA 2018 (e·a0 / (1e-21 C·m / c))
METHOD = "GFN2-xTB"
_INSTALL_HINT = "pip install tblite (or pip install 'wkdist[xtb]')"


def _tblite() -> tuple[type, tuple[type[Exception], ...]]:
    """tblite's Calculator and the exceptions it raises, imported on first use."""
    try:
        from tblite.exceptions import TBLiteRuntimeError, TBLiteTypeError, TBLiteValueError
        from tblite.interface import Calculator
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "tblite":
            raise DataError(f"xTB dipoles need tblite, not installed: {_INSTALL_HINT}") from None
        raise
    except ImportError as exc:  # installed, but its shared library cannot load (libgomp, ...)
        raise DataError(f"tblite is installed but cannot be imported ({exc})") from None
    return Calculator, (TBLiteRuntimeError, TBLiteTypeError, TBLiteValueError)


def _label(atoms: Atoms, label: str | None) -> str:
    if label is not None:
        return label
    index = atoms.info.get("qm9_index")
    formula = atoms.get_chemical_formula() or "no atoms"
    return f"qm9_index {index} ({formula})" if index is not None else formula


def xtb_dipole(atoms: Atoms, *, label: str | None = None) -> np.ndarray:
    """GFN2-xTB dipole moment of the neutral molecule ``atoms``, (3,) in debye.

    ``label`` names the structure in error messages (default: its ``qm9_index`` and formula).
    Raises DataError when tblite is missing, the structure is unusable (empty, periodic,
    non-finite positions) or tblite fails on it (SCF not converged, atoms too close, ...).
    """
    Calculator, tblite_errors = _tblite()
    name = _label(atoms, label)
    if len(atoms) == 0:
        raise DataError(f"xTB dipole of {name}: the structure has no atoms")
    if atoms.pbc.any():
        raise DataError(f"xTB dipole of {name}: periodic structures have no unique dipole")
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if not np.isfinite(positions).all():
        raise DataError(f"xTB dipole of {name}: non-finite positions")
    try:
        calc = Calculator(METHOD, np.asarray(atoms.numbers, dtype=np.int64),
                          positions / BOHR_ANGSTROM, charge=0.0, color=False)
        calc.set("verbosity", 0)  # the default, 1, prints the SCF iterations
        dipole = calc.singlepoint().get("dipole")
    except tblite_errors as exc:
        raise DataError(f"xTB dipole of {name}: tblite failed ({exc})") from None
    dipole = np.asarray(dipole, dtype=np.float64).reshape(3) * EBOHR_TO_DEBYE
    if not np.isfinite(dipole).all():
        raise DataError(f"xTB dipole of {name}: tblite returned a non-finite dipole")
    return dipole


def xtb_dipoles(frames: Iterable[Atoms]) -> np.ndarray:
    """GFN2-xTB dipoles of neutral molecules, (n, 3) in debye (see :func:`xtb_dipole`)."""
    out = []
    for i, atoms in enumerate(frames):
        formula = atoms.get_chemical_formula()
        label = None if "qm9_index" in atoms.info else f"frame {i} ({formula or 'no atoms'})"
        out.append(xtb_dipole(atoms, label=label))
    return np.array(out, dtype=np.float64).reshape(-1, 3)
