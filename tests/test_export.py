"""`wkdist export`: the configured split as extxyz, read back bit for bit by `[data] train/test`."""

from __future__ import annotations

import importlib.util
import warnings

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from store_helpers import ASE_SHAPE_WARNING, error_line, molecules, wkdist_cli, write_case

from wkdist.app.config import DataConfig, load_config
from wkdist.app.dataset import Dataset, load_dataset

pytestmark = ASE_SHAPE_WARNING


def read_back(out, target: str) -> Dataset:
    return load_dataset(DataConfig(train=out / "train.extxyz", test=out / "test.extxyz",
                                   target=target))


def assert_same_split(original: Dataset, exported: Dataset, out) -> None:
    for frames, again, y, y_again, index, name in (
            (original.train_frames, exported.train_frames, original.y_train, exported.y_train,
             original.train_index, "train"),
            (original.test_frames, exported.test_frames, original.y_test, exported.y_test,
             original.test_index, "test")):
        assert len(again) == len(frames)
        np.testing.assert_array_equal(y_again, y)  # bitwise: floats are written by repr
        for a, b in zip(frames, again):
            np.testing.assert_array_equal(b.numbers, a.numbers)
            np.testing.assert_array_equal(b.get_positions(), a.get_positions())
            np.testing.assert_array_equal(b.get_cell().array, a.get_cell().array)
            np.testing.assert_array_equal(b.get_pbc(), a.get_pbc())
        read = ase.io.read(out / f"{name}.extxyz", index=":")
        np.testing.assert_array_equal([atoms.info["index"] for atoms in read], index)


def test_scalar_round_trip_through_the_command(tmp_path):
    config = write_case(tmp_path, n=30, n_train=17, n_test=9, seed=3)
    status, _, err = wkdist_cli("export", config, "--out", tmp_path / "out")
    assert status == 0, err
    out = tmp_path / "out"
    assert f"train: {out / 'train.extxyz'} (17 structures)" in err
    assert "written as energy=" in err
    original = load_dataset(load_config(config).data)
    assert_same_split(original, read_back(out, "energy"), out)
    # `energy=` is the structure's energy for any ASE reader
    first = ase.io.read(out / "train.extxyz", index=0)
    assert first.get_potential_energy() == original.y_train[0]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("kind, components", [("vector", 3), ("tensor", 9)])
def test_vector_and_tensor_round_trip(tmp_path, kind, components):
    rng = np.random.default_rng(5)
    frames = molecules(14)
    key = "dipole" if kind == "vector" else "alpha"
    with warnings.catch_warnings():  # ase 3.29 + numpy 2.5: see store_helpers.molecule
        warnings.filterwarnings("ignore", message="Setting the shape", category=DeprecationWarning)
        for atoms in frames:
            if kind == "vector":
                atoms.calc = SinglePointCalculator(atoms, dipole=rng.normal(size=3))
            else:
                m = rng.normal(size=(3, 3))
                atoms.info[key] = (m + m.T).reshape(-1)
        frames[3].set_cell(np.diag([9.0, 8.0, 7.5]))  # a periodic structure among them
        frames[3].set_pbc([True, True, False])
        ase.io.write(tmp_path / "data.extxyz", frames, format="extxyz")
    (tmp_path / "c.toml").write_text(f'[data]\npath = "data.extxyz"\ntarget = "{key}"\n'
                                     'n_train = 8\nn_test = 5\nseed = 2\n[store]\npath = "s"\n')
    status, _, err = wkdist_cli("export", tmp_path / "c.toml", "--out", tmp_path / "out")
    assert status == 0, err
    assert f"({kind})" in err and f"written as {key}=" in err
    original = load_dataset(load_config(tmp_path / "c.toml").data)
    exported = read_back(tmp_path / "out", key)
    assert exported.y_train.shape == original.y_train.shape == (8, 3 if kind == "vector" else 6)
    assert_same_split(original, exported, tmp_path / "out")


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None,
                    reason='qm9pack is not installed (pip install "wkdist[qm9]")')
def test_qm9_split_round_trip(tmp_path):
    (tmp_path / "c.toml").write_text(
        '[data]\nsource = "qm9"\nn_train = 12\nn_test = 4\nseed = 0\n[store]\npath = "s"\n')
    status, _, err = wkdist_cli("export", tmp_path / "c.toml", "--out", tmp_path / "out")
    assert status == 0, err
    assert "target 'U0' (scalar in eV) written as energy=" in err
    original = load_dataset(load_config(tmp_path / "c.toml").data)
    assert_same_split(original, read_back(tmp_path / "out", "energy"), tmp_path / "out")
    np.testing.assert_array_equal(original.train_index,
                                  [a.info["qm9_index"] for a in original.train_frames])


def test_bad_config_is_one_line_and_writes_nothing(tmp_path):
    config = write_case(tmp_path, n=10, n_train=8, n_test=5)
    status, _, err = wkdist_cli("export", config, "--out", tmp_path / "out")
    assert status == 2
    assert "n_train + n_test = 13: larger than the 10 structures" in error_line(err)
    assert not (tmp_path / "out").exists()
