"""wkdist.krr.model: save_model / load_model round trip, Model.predict, and refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr
from ase import Atoms
from store_helpers import ASE_SHAPE_WARNING, random_atoms

from wkdist import KernelSettings, structure_kernels
from wkdist.errors import StoreError
from wkdist.krr.model import FORMAT_VERSION, Part, baseline_values, load_model, save_model

pytestmark = ASE_SHAPE_WARNING
SETTINGS = KernelSettings(nu_max=2, lambda_max=2)
BASELINE = {"H": -0.5, "C": -3.0, "O": -4.0}


@pytest.fixture
def saved(tmp_path):
    train = random_atoms(9, seed=1)
    # one periodic training structure: its cell and pbc must survive the round trip
    train[4].cell = np.diag([6.0, 7.0, 8.0])
    train[4].pbc = [True, True, False]
    alpha = np.random.default_rng(2).normal(size=len(train))
    part = Part(lam=0, alpha=alpha, coefficients=np.array([0.3, 0.02, 0.001]),
                regularization=0.7, baseline=BASELINE)
    path = save_model(tmp_path / "model", parts=[part], train_frames=train, settings=SETTINGS,
                      target="energy", unit="eV", wkdist_version="test")
    return path, train, alpha


def test_round_trip(saved, tmp_path):
    path, train, alpha = saved
    assert path == tmp_path / "model"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging directory left
    model = load_model(path)
    np.testing.assert_array_equal(model.alpha, alpha)
    assert len(model.train_frames) == len(train)
    for a, b in zip(model.train_frames, train):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.get_positions(), b.get_positions())
        np.testing.assert_array_equal(a.get_cell().array, b.get_cell().array)
        np.testing.assert_array_equal(a.get_pbc(), b.get_pbc())
    assert model.settings == SETTINGS
    np.testing.assert_array_equal(model.coefficients, [0.3, 0.02, 0.001])
    assert model.regularization == 0.7 and model.baseline == BASELINE
    assert model.target == "energy" and model.unit == "eV"
    attrs = dict(zarr.open_group(path, mode="r").attrs)
    assert attrs["format"] == "wkdist-model" and attrs["format_version"] == FORMAT_VERSION
    assert attrs["wkdist_version"] == "test"
    assert not list(path.rglob("*.pkl")) and not list(path.rglob("*.pickle"))


def test_save_over_an_existing_model_replaces_it(saved, tmp_path):
    path, train, alpha = saved
    part = Part(lam=0, alpha=2 * alpha, coefficients=np.ones(3), regularization=1.0)
    save_model(path, parts=[part], train_frames=train[:5] + train[5:], settings=SETTINGS,
               target="energy", unit=None, wkdist_version="test")
    model = load_model(path)
    np.testing.assert_array_equal(model.alpha, 2 * alpha)
    assert model.baseline is None and model.unit is None
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_predict_is_the_contract_formula(saved):
    path, train, alpha = saved
    model = load_model(path)
    new = random_atoms(5, seed=3)
    c = np.array([0.3, 0.02, 0.001])
    kernels = structure_kernels(new, train, settings=SETTINGS)  # (n, n_train, nu_max + 1)
    b = np.array([sum(BASELINE[s] for s in a.get_chemical_symbols()) for a in new])
    expected = b + (kernels @ c) @ alpha
    np.testing.assert_allclose(model.predict(new), expected, rtol=1e-10, atol=0)
    # blocks of 2 structures of each set: the same numbers up to the order of the sums
    np.testing.assert_allclose(model.predict(new, block=2), expected, rtol=1e-12, atol=0)


def test_prediction_on_workers_equals_this_process_bitwise(saved):
    """The blocks of the new and the training structures go to worker processes in waves
    (the training blocks read from the model directory there); the driver sums them in the
    same order as in this process."""
    from distributed import Client, LocalCluster

    path, train, _ = saved
    model = load_model(path)
    new = random_atoms(7, seed=5)
    here = model.predict(new, block=3)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        there = model.predict(new, client=client, block=3)
        # other structures, as many: other task keys, never the first call's results
        other = random_atoms(7, seed=6)
        np.testing.assert_array_equal(model.predict(other, client=client, block=3),
                                      model.predict(other, block=3))
    np.testing.assert_array_equal(here, there)


def test_unseen_elements_and_baseline_values(saved):
    path, _, _ = saved
    model = load_model(path)
    mixed = Atoms("CNF", positions=[[0, 0, 0], [1.2, 0, 0], [0, 1.3, 0]])
    assert model.unseen_elements([mixed]) == ["N", "F"]  # by atomic number
    assert model.unseen_elements(random_atoms(3, seed=4)) == []
    lone = Atoms("Ne2", positions=[[0, 0, 0], [1.5, 0, 0]])
    assert np.isnan(model.predict([lone])[0])  # refused by default: NaN
    assert model.predict([lone], allow_unseen_elements=True)[0] == 0.0  # no kernel, no weight
    both = model.predict([lone] + random_atoms(2, seed=4))
    assert np.isnan(both[0]) and np.isfinite(both[1:]).all()
    assert model.unseen_rows([random_atoms(1, seed=4)[0], mixed, lone]) == [1, 2]
    np.testing.assert_array_equal(
        baseline_values([mixed, Atoms("H2O", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]])],
                        BASELINE), [-3.0, -5.0])
    np.testing.assert_array_equal(baseline_values([mixed], None), [0.0])


def edit_attrs(path, **changes):
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"].update(changes)
    (path / "zarr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage, error, message", [
    ("absent", StoreError, "found no zarr.json"),
    ("empty_dir", StoreError, "found no zarr.json"),
    ("garbage_json", StoreError, "cannot read .*zarr.json .*truncated or edited"),
    ("truncated_json", StoreError, "cannot read .*zarr.json .*truncated or edited"),
    ("format_version", StoreError, "version 2 at .*, got 'wkdist-model' version 3"),
    ("format", StoreError, "got 'kernel-store' version 2"),
    ("no_alpha", StoreError, "alpha/.* is missing"),
    ("bad_settings", StoreError, "attributes .* do not match their checksum"),
    ("unknown_setting", StoreError, "attributes .* do not match their checksum"),
    ("coefficients", StoreError, "attributes .* do not match their checksum"),
    ("baseline_element", StoreError, "attributes .* do not match their checksum"),
    ("no_manifest", StoreError, "no checksum manifest"),
    ("flipped_alpha", StoreError, "alpha/c/0 is damaged or edited"),
    ("deleted_chunk", StoreError, "alpha/c/0 is missing"),
    ("array_shape", StoreError, "alpha/zarr.json is damaged or edited"),
    ("unknown_codec", StoreError, "train_positions/zarr.json is damaged or edited"),
    ("extra_file", StoreError, "alpha/c/1 is not part of the model"),
])
def test_load_model_refusals(saved, tmp_path, damage, error, message):
    path, _, _ = saved
    target = path
    if damage == "absent":
        target = tmp_path / "absent"
    elif damage == "empty_dir":
        target = tmp_path / "empty"
        target.mkdir()
    elif damage == "garbage_json":
        (path / "zarr.json").write_text("{not json")
    elif damage == "format_version":
        edit_attrs(path, format_version=3)
    elif damage == "format":
        edit_attrs(path, format="kernel-store")
    elif damage == "no_alpha":
        shutil.rmtree(path / "alpha")
    elif damage == "bad_settings":
        settings = dict(SETTINGS.to_dict(), cutoff=-1.0)
        edit_attrs(path, settings=settings)
    elif damage == "unknown_setting":
        edit_attrs(path, settings=dict(SETTINGS.to_dict(), colour="blue"))
    elif damage == "coefficients":
        edit_attrs(path, coefficients=[1.0, 2.0])
    elif damage == "baseline_element":
        edit_attrs(path, baseline={**BASELINE, "Xx": 1.0})
    elif damage == "truncated_json":
        text = (path / "zarr.json").read_bytes()
        (path / "zarr.json").write_bytes(text[:len(text) // 2])
    elif damage == "no_manifest":
        meta = json.loads((path / "zarr.json").read_text())
        del meta["attributes"]["manifest"]
        (path / "zarr.json").write_text(json.dumps(meta))
    elif damage == "flipped_alpha":
        chunk = path / "alpha" / "c" / "0"
        data = bytearray(chunk.read_bytes())
        data[6] ^= 0x10  # an exponent byte of alpha[0]
        chunk.write_bytes(bytes(data))
    elif damage == "deleted_chunk":
        (path / "alpha" / "c" / "0").unlink()
    elif damage in ("array_shape", "unknown_codec"):
        name = "alpha" if damage == "array_shape" else "train_positions"
        meta = json.loads((path / name / "zarr.json").read_text())
        if damage == "array_shape":
            meta["shape"] = [meta["shape"][0] + 1]
        else:
            meta["codecs"].append({"name": "no-such-codec", "configuration": {}})
        (path / name / "zarr.json").write_text(json.dumps(meta))
    elif damage == "extra_file":
        shutil.copyfile(path / "alpha" / "c" / "0", path / "alpha" / "c" / "1")
    with pytest.raises(error, match=message):
        load_model(target)
