"""Small molecules, configs and a local cluster shared by the store/graph/CLI tests."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule as _ase_molecule

import wkdist.cli

# ase 3.29 under numpy 2.5 emits a DeprecationWarning ("Setting the shape on a NumPy array") in
# Atoms.copy, which ase.build.molecule and ase.io.write call; filterwarnings=error would turn it
# into a failure. Test modules that write structures set ``pytestmark = ASE_SHAPE_WARNING``.
ASE_SHAPE_WARNING = pytest.mark.filterwarnings(
    "ignore:Setting the shape on a NumPy array:DeprecationWarning")

def random_atoms(n: int, *, seed: int, elements=("H", "C", "O")) -> list:
    """``n`` random molecules of 3-6 atoms, no two atoms closer than 0.9 Å (seeded)."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        count = int(rng.integers(3, 7))
        symbols = [str(s) for s in rng.choice(elements, size=count)]
        positions: list[np.ndarray] = []
        while len(positions) < count:
            p = rng.uniform(0.0, 2.5, 3)
            if all(np.linalg.norm(p - q) > 0.9 for q in positions):
                positions.append(p)
        frames.append(Atoms(symbols, positions=np.array(positions)))
    return frames


NAMES = ["H2O", "CH4", "NH3", "C2H6", "CH3OH", "C2H4", "HCN", "CO2", "H2CO", "C2H2"]
KERNEL = {"nu_max": 3, "lambda_max": 2}


def molecule(name: str):
    """ase.build.molecule; ase 3.29 under numpy 2.5 emits a DeprecationWarning ("Setting the
    shape on a NumPy array") in it, which filterwarnings=error would turn into a failure."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting the shape on a NumPy array",
                                category=DeprecationWarning)
        return _ase_molecule(name)


def molecules(n: int, *, seed: int = 0, target: str = "U") -> list:
    """``n`` jittered small molecules with a scalar target in info[target]."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = molecule(NAMES[i % len(NAMES)])
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.info[target] = float(rng.normal())
        frames.append(atoms)
    return frames


def write_case(directory: Path, *, n: int = 30, n_train: int = 20, n_test: int = 7,
               tile_size: int = 6, workers: int = 2, kernel: dict | None = None,
               seed: int = 1, store: str = "store.zarr") -> Path:
    """An extxyz file and a config next to it; returns the config path."""
    ase.io.write(directory / "mols.xyz", molecules(n), format="extxyz")
    kernel = dict(KERNEL if kernel is None else kernel)
    lines = ["[data]", 'path = "mols.xyz"', 'target = "U"', f"n_train = {n_train}",
             f"n_test = {n_test}", f"seed = {seed}", "[kernel]"]
    lines += [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"'
              for k, v in kernel.items()]
    lines += ["[compute]", f"tile_size = {tile_size}", f"workers = {workers}",
              "threads_per_worker = 1", "[store]", f'path = "{store}"']
    config = directory / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def reference(store_path: Path, xyz: Path, settings) -> tuple[np.ndarray, np.ndarray]:
    """K_train, K_test computed directly with structure_kernels in the store's split order."""
    import zarr

    from wkdist import structure_kernels

    group = zarr.open_group(store_path, mode="r")
    frames = ase.io.read(xyz, index=":")
    train = [frames[i] for i in group["train_index"][...]]
    test = [frames[i] for i in group["test_index"][...]]
    k_train = structure_kernels(train, settings=settings).transpose(2, 0, 1)
    k_test = structure_kernels(test, train, settings=settings).transpose(2, 0, 1)
    return k_train, k_test


def read_kernels(store_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The full K_train and K_test of a store, through the package's one reader."""
    return wkdist.read_kernels(store_path, "K_train")[...], wkdist.read_kernels(
        store_path, "K_test")[...]


def wkdist_cli(*argv) -> tuple[int, str, str]:
    """``wkdist.cli.main`` in this process; returns (status, stdout, stderr).

    The ``wkdist`` logger's handler is bound to the stderr of the first ``main`` call, so it is
    removed before and after: each call gets one on the stderr captured here.
    """
    logger = logging.getLogger("wkdist")
    saved = logger.handlers[:]
    logger.handlers[:] = []
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = wkdist.cli.main([str(a) for a in argv])
    finally:
        logger.handlers[:] = saved
    return status, out.getvalue(), err.getvalue()


def error_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert err.count("wkdist: error:") == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("wkdist: error: "), err
    return last
