"""wkdist.WignerKernelRidge and wkdist.WignerCalculator: the library fit against `wkdist run`,
scikit-learn's protocol (clone, GridSearchCV, score), the model directory round trip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from store_helpers import ASE_SHAPE_WARNING, error_line, random_atoms
from store_helpers import wkdist_cli as wkdist_main
from test_pipeline import random_molecules, write_xyz

import wkdist
from wkdist.app.dataset import read_frames
from wkdist.app.estimator import WignerCalculator, WignerKernelRidge
from wkdist.krr.model import baseline_values

pytestmark = ASE_SHAPE_WARNING

SETTINGS = wkdist.KernelSettings(nu_max=2, lambda_max=2)
N_TRAIN, N_TEST = 14, 6


def _energies(frames) -> np.ndarray:
    return np.array([a.get_potential_energy() for a in frames])


def _predictions(path: Path) -> np.ndarray:
    with open(path, newline="") as handle:
        return np.array([float(row["prediction"]) for row in csv.DictReader(handle)])


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """`wkdist run` (real LocalCluster, tiled store and solve) on explicit train/test files."""
    directory = tmp_path_factory.mktemp("estimator")
    frames = random_molecules(N_TRAIN + N_TEST, seed=11)
    write_xyz(directory / "train.xyz", frames[:N_TRAIN])
    write_xyz(directory / "test.xyz", frames[N_TRAIN:])
    # the frames as `wkdist run` reads them (extxyz rounds the energies)
    train, test = read_frames(directory / "train.xyz"), read_frames(directory / "test.xyz")
    (directory / "config.toml").write_text(
        '[data]\ntrain = "train.xyz"\ntest = "test.xyz"\ntarget = "energy"\nunit = "eV"\n'
        f"[kernel]\nnu_max = {SETTINGS.nu_max}\nlambda_max = {SETTINGS.lambda_max}\n"
        '[compute]\ntile_size = 5\nworkers = 2\nthreads_per_worker = 1\n'
        '[store]\npath = "store.zarr"\n')
    status, _, err = wkdist_main("run", directory / "config.toml", "--out", directory / "out")
    assert status == 0, err
    results = json.loads((directory / "out" / "results.json").read_text())
    return {"dir": directory, "train": train, "test": test, "results": results,
            "predictions": _predictions(directory / "out" / "predictions.csv")}


def test_library_fit_equals_wkdist_run_on_the_same_split(case):
    model = WignerKernelRidge(SETTINGS).fit(case["train"], _energies(case["train"]))
    hyper = case["results"]["hyperparameters"]
    assert model.baseline_ == pytest.approx(hyper["baseline"], rel=1e-12)
    # the same kernels and targets: the search ends at the same point, up to what BLAS's
    # last bits (they may depend on array alignment) do to its Nelder-Mead steps
    np.testing.assert_allclose(model.coefficients_, hyper["coefficients"], rtol=1e-9)
    # the KRR part (prediction minus the element baseline): dense solve here, tiled there
    baseline = baseline_values(case["test"], model.baseline_)
    ours = model.predict(case["test"]) - baseline
    theirs = case["predictions"] - baseline
    assert np.max(np.abs(ours - theirs)) <= 1e-10 * np.max(np.abs(theirs))


def test_save_load_and_wkdist_predict_read_the_same_model(case, tmp_path):
    model = WignerKernelRidge(SETTINGS).fit(case["train"], _energies(case["train"]))
    model.save(tmp_path / "model")
    status, out, err = wkdist_main("predict", tmp_path / "model", case["dir"] / "test.xyz",
                                   "--out", tmp_path / "p.csv")
    assert status == 0, err
    np.testing.assert_allclose(_predictions(tmp_path / "p.csv"), model.predict(case["test"]),
                               rtol=1e-10)
    loaded = WignerKernelRidge.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict(case["test"]), model.predict(case["test"]))
    # and the model directory that `wkdist run` wrote loads as an estimator
    from_run = WignerKernelRidge.load(case["dir"] / "out" / "model")
    np.testing.assert_allclose(from_run.predict(case["test"]), case["predictions"], rtol=1e-10)
    # saving again replaces a model; a directory holding anything else is never deleted
    model.save(tmp_path / "model")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(wkdist.DataError, match="is not a wkdist model directory"):
        model.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_constructor_stores_only_and_params_round_trip():
    settings = wkdist.KernelSettings(nu_max=1, lambda_max=0)
    model = WignerKernelRidge(settings, regularization=0.5, folds=3)
    assert model.get_params()["settings"] is settings
    assert not hasattr(model, "model_")
    assert model.set_params(folds=4, mixing="free") is model
    assert (model.folds, model.mixing) == (4, "free")
    with pytest.raises(ValueError, match="lambda_max: not a parameter"):
        model.set_params(lambda_max=3)
    with pytest.raises(wkdist.WkdistError, match="not fitted yet"):
        model.predict(random_atoms(2, seed=0))


def test_bad_targets_are_one_line_errors():
    frames = random_atoms(5, seed=2)
    model = WignerKernelRidge(wkdist.KernelSettings(nu_max=1, lambda_max=0), folds=2)
    with pytest.raises(wkdist.DataError, match="y: expected 5 targets"):
        model.fit(frames, np.zeros(4))
    with pytest.raises(wkdist.DataError, match="y: expected finite targets"):
        model.fit(frames, [0.0, 1.0, np.nan, 2.0, 3.0])
    with pytest.raises(wkdist.DataError, match="expected 1 .scalar., 3 .vector., 6 or 9"):
        model.fit(frames, np.zeros((5, 2)))


def test_unseen_element_follows_the_predict_command(case, caplog):
    """NaN with the structure named, as `wkdist predict` does; finite on request."""
    model = WignerKernelRidge(SETTINGS).fit(case["train"], _energies(case["train"]))
    frames = case["test"][:2] + random_atoms(1, seed=3, elements=("H", "S"))
    predicted = model.predict(frames)
    assert np.all(np.isfinite(predicted[:2])) and np.isnan(predicted[2])
    assert "S not in the training set: structures [2]" in caplog.text
    assert np.all(np.isfinite(model.predict(frames, allow_unseen_elements=True)))


def test_scikit_learn_clone_grid_search_and_score(case):
    sklearn_base = pytest.importorskip("sklearn.base")
    model_selection = pytest.importorskip("sklearn.model_selection")
    frames = case["train"] + case["test"]
    y = _energies(frames)
    estimator = WignerKernelRidge(SETTINGS, coefficients=[1.0, 1.0, 1.0])
    twin = sklearn_base.clone(estimator)
    assert twin is not estimator and twin.get_params() == estimator.get_params()
    search = model_selection.GridSearchCV(estimator, {"regularization": [1e-3, 1.0]},
                                          cv=3).fit(frames, y)
    assert search.best_params_["regularization"] in (1e-3, 1.0)
    best = search.best_estimator_
    predicted = best.predict(case["test"])
    truth = _energies(case["test"])
    r2 = 1 - np.sum((truth - predicted) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert best.score(case["test"], truth) == pytest.approx(r2, rel=1e-12)


def test_ase_calculator_gives_the_model_energy(case):
    model = WignerKernelRidge(SETTINGS).fit(case["train"], _energies(case["train"]))
    atoms = case["test"][0].copy()
    atoms.calc = WignerCalculator(model)
    assert atoms.get_potential_energy() == pytest.approx(model.predict(case["test"][:1])[0],
                                                         rel=1e-14)
    atoms.positions[0] += 0.05  # a moved atom is recomputed, not cached
    assert atoms.get_potential_energy() == pytest.approx(model.predict([atoms])[0], rel=1e-14)


def test_vector_target_fit_predict_and_calculator_refusal(tmp_path):
    frames = random_atoms(12, seed=5)
    # a dipole-like vector: sum of charges times positions about the centre
    charges = {"H": 0.3, "C": -0.2, "O": -0.5}
    y = np.array([sum(charges[s] * (p - a.positions.mean(0))
                      for s, p in zip(a.get_chemical_symbols(), a.positions)) for a in frames])
    model = WignerKernelRidge(wkdist.KernelSettings(nu_max=2, lambda_max=1), folds=3)
    model.fit(frames[:9], y[:9])
    predicted = model.predict(frames[9:])
    assert predicted.shape == (3, 3) and np.all(np.isfinite(predicted))
    model.save(tmp_path / "vector")
    np.testing.assert_array_equal(WignerKernelRidge.load(tmp_path / "vector")
                                  .predict(frames[9:]), predicted)
    with pytest.raises(wkdist.DataError, match="expected a model of a scalar target"):
        WignerCalculator(model)


def test_predict_command_reports_an_unfitted_directory(tmp_path):
    status, _, err = wkdist_main("predict", tmp_path / "nothing", tmp_path / "x.xyz")
    assert status == 2
    assert "model" in error_line(err)


def test_fit_into_a_store_on_a_cluster_is_the_tiled_path_of_wkdist_run(case, tmp_path):
    """store=... with a client: kernel tiles into the store on the workers, the tiled solve;
    the same predictions as the in-memory fit, and a second fit reuses every tile."""
    from distributed import Client, LocalCluster

    from wkdist.tiled.store import missing_tiles, open_store

    y = _energies(case["train"])
    dense = WignerKernelRidge(SETTINGS).fit(case["train"], y)
    store = tmp_path / "store.zarr"
    with pytest.raises(wkdist.DataError, match="needs a Dask client"):
        WignerKernelRidge(SETTINGS, store=store).fit(case["train"], y)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        tiled = WignerKernelRidge(SETTINGS, store=store, tile_size=5).fit(
            case["train"], y, client=client)
        opened = open_store(store)
        assert missing_tiles(opened) == [] and len(opened.tiles()) == 6  # 3 x 3 upper
        np.testing.assert_allclose(tiled.coefficients_, dense.coefficients_, rtol=1e-9)
        baseline = baseline_values(case["test"], dense.baseline_)
        ours = tiled.predict(case["test"]) - baseline
        theirs = dense.predict(case["test"]) - baseline
        assert np.max(np.abs(ours - theirs)) <= 1e-10 * np.max(np.abs(theirs))
        marked = (store / "markers" / "K_train").stat().st_mtime_ns
        again = WignerKernelRidge(SETTINGS, store=store, tile_size=5).fit(
            case["train"], y, client=client)
        assert (store / "markers" / "K_train").stat().st_mtime_ns == marked  # nothing new
        np.testing.assert_array_equal(again.predict(case["test"], client=client),
                                      tiled.predict(case["test"]))
    assert set(WignerKernelRidge().get_params()) >= {"store", "tile_size"}
