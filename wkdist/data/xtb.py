"""GFN2-xTB dipole vectors and polarizability tensors of neutral molecules, via ``tblite``.

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

Polarizability: :func:`xtb_polarizability` gives the static dipole polarizability
alpha_ij = d mu_i / d F_j of GFN2-xTB, a symmetric rank-2 tensor in the frame of the coordinates
(under a rotation Q it becomes Q alpha Q^T; it is even under inversion), in atomic units
(bohr^3 = e·bohr per (Hartree/(e·bohr)); 1 bohr^3 = 0.148185 Å^3). It is computed by central
finite differences of the SCF dipole in a uniform external field of ±F along x, y and z (six
single points, tblite's ``electric-field`` interaction, whose energy term is -mu·F with F in
Hartree/(e·bohr)), with the SCF converged more tightly than for :func:`xtb_dipole`
(``accuracy`` 1e-3 instead of tblite's default 1), and then symmetrized. With F = 5e-4 a.u. the
result agrees with -d²E/dF² and is converged to ~1e-5 relative; the raw asymmetry is ~1e-6
relative. GFN2-xTB uses a minimal valence basis (H: 1s only; C, N, O: 2s 2p), so its response
polarizabilities are typically much smaller than the real ones (water ~2.5 bohr^3 isotropic,
with almost no out-of-plane response; methane ~6.5; benzene ~43): a model target, not a physical
reference. They are also not the (larger) D4 dispersion-model alpha(0) the ``xtb`` program prints.

tblite is imported inside the functions: ``import wkdist`` does not need it. tblite's OpenMP
thread count is fixed when it is first loaded; set ``OMP_NUM_THREADS`` beforehand to limit it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase import Atoms

from ..errors import DataError

__all__ = [
    "BOHR_ANGSTROM",
    "EBOHR_TO_DEBYE",
    "METHOD",
    "POLARIZABILITY_ACCURACY",
    "POLARIZABILITY_FIELD",
    "xtb_dipole",
    "xtb_dipoles",
    "xtb_polarizabilities",
    "xtb_polarizability",
]

BOHR_ANGSTROM = 0.529177210903  # Å per bohr, CODATA 2018
EBOHR_TO_DEBYE = 2.541746473  # debye per e·bohr, CODATA 2018 (e·a0 / (1e-21 C·m / c))
METHOD = "GFN2-xTB"
POLARIZABILITY_FIELD = 5e-4  # finite-difference field step, Hartree/(e·bohr)
POLARIZABILITY_ACCURACY = 1e-3  # tblite SCF accuracy for the polarizability (default 1)
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
    what = f"xTB dipole of {_label(atoms, label)}"
    dipole = _single_point_dipole(*_checked_input(atoms, what), what) * EBOHR_TO_DEBYE
    if not np.isfinite(dipole).all():
        raise DataError(f"{what}: tblite returned a non-finite dipole")
    return dipole


def _checked_input(atoms: Atoms, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(atomic numbers, positions in bohr) of a usable molecule, else DataError."""
    if len(atoms) == 0:
        raise DataError(f"{what}: the structure has no atoms")
    if atoms.pbc.any():
        raise DataError(f"{what}: periodic structures have no unique dipole")
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if not np.isfinite(positions).all():
        raise DataError(f"{what}: non-finite positions")
    return np.asarray(atoms.numbers, dtype=np.int64), positions / BOHR_ANGSTROM


def _single_point_dipole(numbers: np.ndarray, positions: np.ndarray, what: str, *,
                         field: np.ndarray | None = None,
                         accuracy: float | None = None) -> np.ndarray:
    """One neutral GFN2-xTB single point (optionally in a uniform field): dipole in e·bohr."""
    Calculator, tblite_errors = _tblite()
    try:
        calc = Calculator(METHOD, numbers, positions, charge=0.0, color=False)
        calc.set("verbosity", 0)  # the default, 1, prints the SCF iterations
        if accuracy is not None:
            calc.set("accuracy", accuracy)
        if field is not None:
            _add_field(calc, field)
        dipole = calc.singlepoint().get("dipole")
    except tblite_errors as exc:
        raise DataError(f"{what}: tblite failed ({exc})") from None
    return np.asarray(dipole, dtype=np.float64).reshape(3)


def _frame_label(index: int, atoms: Atoms) -> str | None:
    """Error label of frame ``index`` of a list (None: QM9 frames name themselves)."""
    if "qm9_index" in atoms.info:
        return None
    return f"frame {index} ({atoms.get_chemical_formula() or 'no atoms'})"


def xtb_dipoles(frames: Iterable[Atoms]) -> np.ndarray:
    """GFN2-xTB dipoles of neutral molecules, (n, 3) in debye (see :func:`xtb_dipole`)."""
    out = [xtb_dipole(atoms, label=_frame_label(i, atoms)) for i, atoms in enumerate(frames)]
    return np.array(out, dtype=np.float64).reshape(-1, 3)


def _add_field(calc, vector: np.ndarray) -> None:
    """Add a uniform electric field (Hartree/(e·bohr)) to a tblite Calculator."""
    vector = np.ascontiguousarray(vector, dtype=np.float64).reshape(3)
    try:
        calc.add("electric-field", vector)
    except TypeError:
        # tblite 0.8.0's library.new_electric_field hands the array unconverted to cffi, which
        # wants a double*: pass a cffi array instead (tblite copies the three numbers)
        from tblite.library import ffi

        calc.add("electric-field", ffi.new("double[3]", vector.tolist()))


def xtb_polarizability(
    atoms: Atoms,
    *,
    field: float = POLARIZABILITY_FIELD,
    accuracy: float = POLARIZABILITY_ACCURACY,
    label: str | None = None,
) -> np.ndarray:
    """GFN2-xTB static dipole polarizability of the neutral molecule ``atoms``, (3, 3) in bohr^3.

    alpha[i, j] = d mu_i / d F_j by central differences, (mu(+F e_j) - mu(-F e_j)) / (2 F), from
    six SCF single points in a uniform field of strength ``field`` (Hartree/(e·bohr)) along the
    coordinate axes, each converged to tblite's ``accuracy``; the result is symmetrized,
    (alpha + alpha.T) / 2. See the module docstring for conventions and accuracy. ``label`` and
    the errors raised are as in :func:`xtb_dipole`.
    """
    field = float(field)
    accuracy = float(accuracy)
    if not (np.isfinite(field) and field > 0.0):
        raise ValueError(f"field must be a positive finite number, got {field!r}")
    if not (np.isfinite(accuracy) and accuracy > 0.0):
        raise ValueError(f"accuracy must be a positive finite number, got {accuracy!r}")
    what = f"xTB polarizability of {_label(atoms, label)}"
    numbers, positions = _checked_input(atoms, what)

    def dipole_in(vector: np.ndarray) -> np.ndarray:  # e·bohr
        return _single_point_dipole(numbers, positions, what, field=vector, accuracy=accuracy)

    alpha = np.empty((3, 3), dtype=np.float64)
    for j, step in enumerate(np.eye(3) * field):
        alpha[:, j] = (dipole_in(step) - dipole_in(-step)) / (2.0 * field)
    if not np.isfinite(alpha).all():
        raise DataError(f"{what}: tblite returned a non-finite dipole")
    return 0.5 * (alpha + alpha.T)


def xtb_polarizabilities(frames: Iterable[Atoms], **kwargs) -> np.ndarray:
    """GFN2-xTB polarizabilities of neutral molecules, (n, 3, 3) in bohr^3.

    ``kwargs`` (``field``, ``accuracy``) go to :func:`xtb_polarizability`.
    """
    out = [xtb_polarizability(atoms, label=_frame_label(i, atoms), **kwargs)
           for i, atoms in enumerate(frames)]
    return np.array(out, dtype=np.float64).reshape(-1, 3, 3)
