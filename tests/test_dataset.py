import math
import warnings

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from store_helpers import ASE_SHAPE_WARNING, molecule, molecules

from wkdist.app.config import DataConfig
from wkdist.app.dataset import load_dataset, read_frames, read_targets
from wkdist.errors import DataError

pytestmark = ASE_SHAPE_WARNING


def with_energy(n, seed=0):
    frames = molecules(n, seed=seed)
    with warnings.catch_warnings():  # ase 3.29 + numpy 2.5: see store_helpers.molecule
        warnings.filterwarnings("ignore", message="Setting the shape", category=DeprecationWarning)
        for i, atoms in enumerate(frames):
            atoms.calc = SinglePointCalculator(atoms, energy=float(i), dipole=[i, 2.0 * i, 0.5])
    return frames


def test_targets_from_calculator_results(tmp_path):
    ase.io.write(tmp_path / "e.xyz", with_energy(12), format="extxyz")
    data = load_dataset(DataConfig(path=tmp_path / "e.xyz", target="energy", n_train=8,
                                   n_test=3, seed=4))
    assert (data.n_train, data.n_test) == (8, 3)
    # targets were energy = position in the file, so index and y agree
    np.testing.assert_array_equal(data.y_train, data.train_index.astype(float))
    np.testing.assert_array_equal(data.y_test, data.test_index.astype(float))
    assert not set(data.train_index) & set(data.test_index)
    vector = load_dataset(DataConfig(path=tmp_path / "e.xyz", target="dipole", n_train=8,
                                     n_test=3, seed=4))
    assert vector.y_train.shape == (8, 3)


def test_split_is_seeded(tmp_path):
    ase.io.write(tmp_path / "m.xyz", molecules(20), format="extxyz")
    config = DataConfig(path=tmp_path / "m.xyz", target="U", n_train=10, n_test=5, seed=7)
    a, b = load_dataset(config), load_dataset(config)
    np.testing.assert_array_equal(a.train_index, b.train_index)
    assert a.fingerprint() == b.fingerprint()
    c = load_dataset(DataConfig(path=tmp_path / "m.xyz", target="U", n_train=10, n_test=5,
                                seed=8))
    assert c.fingerprint() != a.fingerprint()


def test_train_test_files(tmp_path):
    ase.io.write(tmp_path / "a.xyz", molecules(6), format="extxyz")
    ase.io.write(tmp_path / "b.xyz", molecules(4, seed=1), format="extxyz")
    data = load_dataset(DataConfig(train=tmp_path / "a.xyz", test=tmp_path / "b.xyz",
                                   target="U"))
    assert (data.n_train, data.n_test) == (6, 4)
    np.testing.assert_array_equal(data.test_index, np.arange(4))
    with pytest.raises(DataError,
                       match=r"^n_test \(.*b.xyz\): asked for 5 structures, the data has 4"):
        load_dataset(DataConfig(train=tmp_path / "a.xyz", test=tmp_path / "b.xyz",
                                target="U", n_test=5))


def test_absent_test_elements(tmp_path):
    train = [molecule("CH4"), molecule("H2O")]
    test = [molecule("NH3")]
    for atoms in train + test:
        atoms.info["U"] = 1.0
    ase.io.write(tmp_path / "a.xyz", train, format="extxyz")
    ase.io.write(tmp_path / "b.xyz", test, format="extxyz")
    data = load_dataset(DataConfig(train=tmp_path / "a.xyz", test=tmp_path / "b.xyz", target="U"))
    assert data.absent_test_elements() == [7]


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_frames(tmp_path / "absent.xyz")
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(DataError, match="empty.xyz"):
        read_frames(tmp_path / "empty.xyz")
    (tmp_path / "junk.xyz").write_text("this is\nnot an xyz file\n")
    with pytest.raises(DataError, match="cannot read structures"):
        read_frames(tmp_path / "junk.xyz")
    frames = molecules(5)
    del frames[3].info["U"]
    with pytest.raises(DataError, match=r"structure 3 has no target 'U'"):
        read_targets(frames, "U", name="f")
    frames = molecules(5)
    frames[2].info["U"] = math.nan
    with pytest.raises(DataError, match=r"structure 2: target 'U' is NaN"):
        read_targets(frames, "U", name="f")
    ase.io.write(tmp_path / "m.xyz", molecules(5), format="extxyz")
    with pytest.raises(DataError, match=r"^n_train \+ n_test = 6: larger than the 5 structures"):
        load_dataset(DataConfig(path=tmp_path / "m.xyz", target="U", n_train=4, n_test=2))
