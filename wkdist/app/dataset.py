"""Frames, targets and the train/test split that [data] describes.

Targets are read from ``atoms.info[KEY]``, else ``atoms.calc.results[KEY]``: ASE's extxyz reader
moves keys named like calculator properties (energy, dipole, ...) into a SinglePointCalculator.
``index`` is the 0-based position of a structure in its input file (QM9: the ``Index`` column).
The split is a seeded permutation: rows follow the permutation order, which the store records.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ..engine.targets import normalize_targets
from ..errors import DataError
from .config import DataConfig

__all__ = ["Dataset", "load_dataset", "read_frames", "read_targets", "fingerprint"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Dataset:
    """The split data: frames, targets (n,) or (n, components) and input-file indices."""

    train_frames: list[Atoms]
    test_frames: list[Atoms]
    y_train: np.ndarray
    y_test: np.ndarray
    train_index: np.ndarray
    test_index: np.ndarray
    target: str
    unit: str | None
    # what names a structure to the user: the input file of each set ("QM9" for QM9), so a
    # message can say "FILE frame K" with K its position in that file (train_index/test_index)
    sources: tuple[str, str] = ("train", "test")

    @property
    def n_train(self) -> int:
        return len(self.train_frames)

    @property
    def n_test(self) -> int:
        return len(self.test_frames)

    def fingerprint(self) -> str:
        """sha256 over positions, numbers, cells, targets and the split (the store checks it)."""
        return fingerprint(self)

    def check_structures(self) -> None:
        """Every structure usable (atoms, finite positions, cell, no two atoms closer than
        MIN_DISTANCE), before any cluster or store exists; StructureError names the structure
        by its input file and its 0-based position in it."""
        from ..engine.structures import MIN_DISTANCE, check_frames
        from ..errors import StructureError

        for frames, index, source in ((self.train_frames, self.train_index, self.sources[0]),
                                      (self.test_frames, self.test_index, self.sources[1])):
            for atoms, position in zip(frames, index):
                where = (f"QM9 Index {int(position)}" if source == "QM9"
                         else f"{source} frame {int(position)}")
                try:
                    check_frames([atoms], where)
                except StructureError as error:
                    raise StructureError(str(error).replace(f"{where}[0]", where, 1)) from None
                pair = _closest_pair(atoms)
                if pair is not None and pair[2] < MIN_DISTANCE:
                    raise StructureError(
                        f"{where}: expected atoms at least {MIN_DISTANCE} Å apart, got atoms "
                        f"{pair[0]} and {pair[1]} (0-based) at {pair[2]:.3g} Å")

    def absent_test_elements(self) -> list[int]:
        """Atomic numbers in the test set that no training structure has (their kernel is 0)."""
        train = set(np.unique(np.concatenate([a.numbers for a in self.train_frames])).tolist())
        test = {int(z) for a in self.test_frames for z in a.numbers}
        return sorted(test - train)


def _closest_pair(atoms: Atoms) -> tuple[int, int, float] | None:
    """(i, j, distance) of the two closest atoms, periodic images included; None for one
    atom alone."""
    if atoms.get_pbc().any():
        from ase.neighborlist import neighbor_list

        from ..engine.structures import MIN_DISTANCE

        i, j, d = neighbor_list("ijd", atoms, 2 * MIN_DISTANCE)
        if not len(d):
            return None
        k = int(np.argmin(d))
        return int(i[k]), int(j[k]), float(d[k])
    if len(atoms) < 2:
        return None
    positions = atoms.get_positions()
    diff = positions[:, None, :] - positions[None, :, :]
    distance = np.sqrt(np.einsum("ijx,ijx->ij", diff, diff))
    distance[np.diag_indices_from(distance)] = np.inf
    i, j = np.unravel_index(int(np.argmin(distance)), distance.shape)
    return int(min(i, j)), int(max(i, j)), float(distance[i, j])


def fingerprint(data: Dataset) -> str:
    digest = hashlib.sha256()

    def add(array: Any) -> None:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())

    for frames, y, index in ((data.train_frames, data.y_train, data.train_index),
                             (data.test_frames, data.y_test, data.test_index)):
        add(np.asarray(index, dtype=np.int64))
        add(np.asarray(y, dtype=np.float64))
        for atoms in frames:
            add(atoms.numbers.astype(np.int64))
            add(atoms.get_positions().astype(np.float64))
            add(atoms.get_cell().array.astype(np.float64))
            add(atoms.get_pbc())
    return digest.hexdigest()


def read_frames(path: Path | str) -> list[Atoms]:
    """All frames of an ASE-readable file; DataError when unreadable or empty."""
    import ase.io

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # ase 3.29 under numpy 2.5 deprecates "setting the shape" inside Atoms.copy (which
            # its extxyz reader calls for energy=/dipole= keys): not the user's problem.
            warnings.filterwarnings("ignore", message="Setting the shape on a NumPy array",
                                    category=DeprecationWarning)
            frames = ase.io.read(path, index=":")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as error:  # ase raises many types for a malformed or unknown file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path}: cannot read structures ({reason})") from None
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        raise DataError(f"{path}: expected at least one structure, got an empty file")
    for position, atoms in enumerate(frames):
        if len(atoms) == 0:
            raise DataError(f"{path}: structure {position} has no atoms")
    return list(frames)


def read_targets(frames: Sequence[Atoms], key: str, *, name: str) -> np.ndarray:
    """Target of every frame: (n,) scalars, (n, 3) vectors or (n, 6) symmetric tensors
    (``wkdist.engine.targets``: 9 numbers are checked for symmetry and reduced to 6)."""
    values = []
    for position, atoms in enumerate(frames):
        if key in atoms.info:
            value = atoms.info[key]
        elif atoms.calc is not None and key in getattr(atoms.calc, "results", {}):
            value = atoms.calc.results[key]
        else:
            raise DataError(f"{name}: structure {position} has no target {key!r} "
                            "(looked in atoms.info and the calculator results)")
        try:
            value = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(f"{name}: structure {position}: target {key!r} is not numeric, "
                            f"got {value!r}") from None
        if not np.isfinite(value).all():
            raise DataError(f"{name}: structure {position}: target {key!r} is NaN or infinite")
        if values and value.shape != values[0].shape:
            raise DataError(f"{name}: structure {position}: target {key!r} has "
                            f"{value.size} components, structure 0 has {values[0].size}")
        values.append(value)
    return normalize_targets(np.stack(values), name=f"{name}: target {key!r}")


def _choose(n_available: int, n_wanted: int | None, rng: np.random.Generator,
            what: str) -> np.ndarray:
    if n_wanted is None:
        return np.arange(n_available)
    if n_wanted > n_available:
        raise DataError(f"{what}: asked for {n_wanted} structures, the data has {n_available}")
    return rng.permutation(n_available)[:n_wanted]


def load_dataset(config: DataConfig) -> Dataset:
    """Load and split what [data] describes. Raises DataError with a one-line message."""
    rng = np.random.default_rng(config.seed)
    if config.source == "qm9":
        from ..data.qm9 import load_qm9  # optional data package; imported only when asked for

        if config.target == "polarizability":
            # qm9pack's tensors are not in the frame of its coordinates (measured): a covariant
            # fit would learn noise. Its invariants would be fine, but they are not stored.
            raise DataError("[data] target: 'polarizability' of QM9 cannot be fitted: qm9pack's "
                            "tensors are not given in the frame of its coordinates")
        qm9 = load_qm9()
        total = config.n_train + config.n_test
        if total > qm9.n:
            raise DataError(f"n_train + n_test = {total}: larger than QM9 ({qm9.n} molecules)")
        order = rng.permutation(qm9.n)
        parts = []
        for rows in (order[:config.n_train], order[config.n_train:total]):
            frames = qm9.frames(rows)
            y = np.asarray(qm9.targets(rows, key=config.target), dtype=np.float64)
            index = np.array([a.info["qm9_index"] for a in frames], dtype=np.int64)
            parts.append((frames, y, index))
        unit = config.unit or ("eV" if config.target == "U0" else None)
        sources = ("QM9", "QM9")
    elif config.path is not None:
        frames = read_frames(config.path)
        y = read_targets(frames, config.target, name=str(config.path))
        total = config.n_train + config.n_test
        if total > len(frames):
            raise DataError(f"n_train + n_test = {total}: larger than the {len(frames)} "
                            f"structures of {config.path}")
        order = rng.permutation(len(frames))
        parts = [([frames[i] for i in rows], y[rows], rows.astype(np.int64))
                 for rows in (order[:config.n_train], order[config.n_train:total])]
        unit = config.unit
        sources = (str(config.path), str(config.path))
    else:
        parts = []
        for file, n_wanted, what in ((config.train, config.n_train, "n_train"),
                                     (config.test, config.n_test, "n_test")):
            frames = read_frames(file)
            y = read_targets(frames, config.target, name=str(file))
            rows = _choose(len(frames), n_wanted, rng, f"{what} ({file})")
            parts.append(([frames[i] for i in rows], y[rows], rows.astype(np.int64)))
        unit = config.unit
        sources = (str(config.train), str(config.test))
    (train_frames, y_train, train_index), (test_frames, y_test, test_index) = parts
    if y_train.shape[1:] != y_test.shape[1:]:
        raise DataError(f"target {config.target!r}: train and test have different shapes "
                        f"{y_train.shape[1:]} and {y_test.shape[1:]}")
    return Dataset(
        train_frames=list(train_frames), test_frames=list(test_frames),
        y_train=y_train, y_test=y_test, train_index=train_index, test_index=test_index,
        target=config.target, unit=unit, sources=sources,
    )
