"""``wkdist export CONFIG.toml --out DIR``: the configured data set and split as extxyz files.

``DIR/train.extxyz`` and ``DIR/test.extxyz`` hold the structures in split order (the rows of the
store), each with ``index`` (0-based position in the input file; QM9: the original ``Index``)
and the target: ``energy=`` for a scalar, so that ASE and other codes read it as the
structure's energy, and the target's own name for a vector (3 numbers) or a symmetric tensor
(6 numbers: xx, xy, xz, yy, yz, zz). A config with ``[data] train``/``test`` set to these files
and ``target = "energy"`` (scalars) or the same name reproduces the split exactly.

The files are written here rather than through ``ase.io.write``, whose extxyz writer rounds
positions to 1e-8 Å: every float is written by ``repr``, so a round trip is bit-exact.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

__all__ = ["write_extxyz", "export_dataset"]

# Info keys of every exported frame besides the target; the target may not take these names.
_RESERVED = ("index", "pbc", "Lattice", "Properties")


def _number(value: float) -> str:
    return repr(float(value))


def _frame(atoms: Atoms, info: dict[str, object]) -> str:
    fields = ["Properties=species:S:1:pos:R:3"]
    cell = atoms.get_cell().array
    if np.any(cell):
        fields.append('Lattice="' + " ".join(_number(v) for v in cell.reshape(-1)) + '"')
    for key, value in info.items():
        array = np.asarray(value)
        if array.ndim == 0:
            fields.append(f"{key}={int(value) if array.dtype.kind in 'iu' else _number(value)}")
        else:
            fields.append(f'{key}="' + " ".join(_number(v) for v in array.reshape(-1)) + '"')
    fields.append('pbc="' + " ".join("T" if p else "F" for p in atoms.get_pbc()) + '"')
    lines = [str(len(atoms)), " ".join(fields)]
    for symbol, position in zip(atoms.get_chemical_symbols(), atoms.get_positions()):
        lines.append(f"{symbol} " + " ".join(_number(v) for v in position))
    return "\n".join(lines) + "\n"


def write_extxyz(path: Path, frames: Sequence[Atoms], y: np.ndarray, index: np.ndarray, *,
                 target_key: str) -> None:
    """Write ``frames`` with ``index`` and their target ``y`` (scalars as ``energy``, else
    under ``target_key``) to ``path``, atomically: a partial file is never left at ``path``."""
    key = "energy" if np.ndim(y) == 1 else target_key
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w") as stream:
            for atoms, value, position in zip(frames, y, index):
                stream.write(_frame(atoms, {"index": int(position), key: value}))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def export_dataset(config_path: str | os.PathLike, out: str | os.PathLike) -> list[str]:
    """Export the data set and split of a config; returns the lines to tell the user."""
    from ..engine.targets import target_kind
    from ..errors import DataError
    from .config import load_config
    from .dataset import load_dataset

    config = load_config(config_path)
    data = load_dataset(config.data)
    kind = target_kind(data.y_train)
    if kind != "scalar" and data.target in _RESERVED:
        raise DataError(f"[data] target: {data.target!r} cannot be exported under its own name "
                        f"(reserved: {', '.join(_RESERVED)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, frames, y, index in (("train", data.train_frames, data.y_train, data.train_index),
                                   ("test", data.test_frames, data.y_test, data.test_index)):
        path = out / f"{name}.extxyz"
        write_extxyz(path, frames, y, index, target_key=data.target)
        lines.append(f"{name}: {path} ({len(frames)} structures)")
    key = "energy" if kind == "scalar" else data.target
    unit = f" in {data.unit}" if data.unit else ""
    lines.append(f"target {data.target!r} ({kind}{unit}) written as {key}=; read them back with "
                 f'[data] train = "{out / "train.extxyz"}", test = "{out / "test.extxyz"}", '
                 f'target = "{key}"')
    return lines
