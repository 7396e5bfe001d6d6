"""`wkdist run`, `wkdist fit` and `wkdist predict` end to end on a tiny extxyz data set.

The data: 20 random H/C/O molecules of 3-6 atoms with an ``energy=`` key (which ASE's extxyz
reader moves into a SinglePointCalculator). The target is a per-element sum plus a smooth pair
term, so the kernel has something to learn. One `wkdist run` (real LocalCluster, 2 workers) is
shared by the module; tests that change things work on a copy of its directory.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import zarr
from store_helpers import ASE_SHAPE_WARNING, error_line, random_atoms
from store_helpers import wkdist_cli as wkdist

from wkdist import KernelSettings, read_kernels, structure_kernels
from wkdist.app.config import load_config
from wkdist.app.dataset import load_dataset
from wkdist.tiled.checkpoint import Markers

pytestmark = ASE_SHAPE_WARNING

ELEMENTS = ("H", "C", "O")
E_ATOM = {"H": -0.5, "C": -3.0, "O": -4.0}
W_PAIR = {"H": 0.3, "C": 1.0, "O": 0.7}
N_TRAIN, N_TEST = 14, 6


# --------------------------------------------------------------------------- helpers


def random_molecules(n: int, *, seed: int, elements=ELEMENTS, energy: bool = True) -> list:
    """``random_atoms`` with an energy: per-element terms plus a decaying pair term."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = random_atoms(n, seed=seed, elements=elements)
    for atoms in frames:
        symbols, pos = atoms.get_chemical_symbols(), atoms.positions
        e = sum(E_ATOM.get(s, -1.0) for s in symbols)
        for a in range(len(atoms)):
            for b in range(a):
                e += (W_PAIR.get(symbols[a], 0.5) * W_PAIR.get(symbols[b], 0.5)
                      * np.exp(-np.linalg.norm(pos[a] - pos[b])))
        if energy:
            atoms.calc = SinglePointCalculator(atoms, energy=float(e))
    return frames


def write_xyz(path: Path, frames: list) -> None:
    import ase.io

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting the shape on a NumPy array",
                                category=DeprecationWarning)
        ase.io.write(path, frames, format="extxyz")


def read_xyz(path: Path) -> list:
    from wkdist.app.dataset import read_frames

    return read_frames(path)


def write_config(directory: Path, *, fit: dict | None = None, name: str = "config.toml") -> Path:
    lines = ["[data]", 'path = "mols.xyz"', 'target = "energy"', f"n_train = {N_TRAIN}",
             f"n_test = {N_TEST}", "seed = 3", 'unit = "eV"',
             "[kernel]", "nu_max = 2", "lambda_max = 2",
             "[compute]", "tile_size = 5", "workers = 2", "threads_per_worker = 1",
             "[store]", 'path = "store.zarr"']
    if fit:
        lines.append("[fit]")
        for key, value in fit.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return path


def make_case(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_xyz(directory / "mols.xyz", random_molecules(N_TRAIN + N_TEST, seed=7))
    return write_config(directory)


def read_predictions(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def split_frames(case: Path):
    """Train and test frames in the store's split order, with their targets."""
    group = zarr.open_group(case / "store.zarr", mode="r")
    frames = read_xyz(case / "mols.xyz")
    train_index = group["train_index"][...]
    test_index = group["test_index"][...]
    train = [frames[i] for i in train_index]
    test = [frames[i] for i in test_index]
    return (train, test, train_index, test_index, group["y_train"][...], group["y_test"][...])


def baseline_of(frames, baseline) -> np.ndarray:
    if baseline is None:
        return np.zeros(len(frames))
    return np.array([sum(baseline[s] for s in a.get_chemical_symbols()) for a in frames])


def rebuild(case: Path, results: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test predictions from results.json alone (plus the data): (prediction, b_test, alpha)."""
    train, test, _, _, y_train, _ = split_frames(case)
    settings = KernelSettings(**results["kernel"])
    hyper = results["hyperparameters"]
    c = np.asarray(hyper["coefficients"])
    k_train = structure_kernels(train, settings=settings) @ c  # (n, n, nu+1) @ (nu+1,)
    k_test = structure_kernels(test, train, settings=settings) @ c
    b_train = baseline_of(train, hyper["baseline"])
    b_test = baseline_of(test, hyper["baseline"])
    matrix = k_train + hyper["regularization"] * np.eye(len(train))
    alpha = scipy.linalg.solve(matrix, y_train - b_train, assume_a="pos")
    return b_test + k_test @ alpha, b_test, alpha


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One `wkdist run` on the tiny case: (case dir, out dir, stderr)."""
    case = tmp_path_factory.mktemp("case")
    config = make_case(case)
    status, _, err = wkdist("run", config, "--out", case / "out", "--quiet")
    assert status == 0, err
    return case, case / "out", err


def copy_case(done, tmp_path: Path) -> Path:
    case = tmp_path / "case"
    shutil.copytree(done[0], case)
    return case


# --------------------------------------------------------------------------- wkdist run


def test_run_writes_results_predictions_and_model(done):
    case, out, err = done
    assert "computed 12 of 12 tiles (0 already done)" in err  # 6 upper K_train + 2 x 3 K_test
    results = json.loads((out / "results.json").read_text())
    for key in ("mae", "rmse", "unit", "n_train", "n_test", "hyperparameters", "timings"):
        assert key in results, key
    assert results["unit"] == "eV"
    assert (results["n_train"], results["n_test"]) == (N_TRAIN, N_TEST)
    hyper = results["hyperparameters"]
    assert len(hyper["coefficients"]) == 3  # nu_max + 1
    assert all(isinstance(c, float) and c >= 0 for c in hyper["coefficients"])
    assert hyper["regularization"] == 1.0
    assert set(hyper["baseline"]) == set(ELEMENTS)
    assert isinstance(results["timings"], dict) and results["timings"]
    assert all(v >= 0 for v in results["timings"].values())

    header, rows = read_predictions(out / "predictions.csv")
    assert header == ["index", "target", "prediction"]
    assert len(rows) == N_TEST
    _, test, _, test_index, _, y_test = split_frames(case)
    frames = read_xyz(case / "mols.xyz")
    assert [int(r[0]) for r in rows] == test_index.tolist()
    for row, k in zip(rows, test_index):
        target = float(row[1])
        assert repr(target) == row[1] and repr(float(row[2])) == row[2]  # written by repr
        # index is the position in the input file; its energy= came through the calculator
        assert target == frames[k].calc.results["energy"]
    np.testing.assert_array_equal([float(r[1]) for r in rows], y_test)
    prediction = np.array([float(r[2]) for r in rows])
    error = prediction - y_test
    assert results["mae"] == pytest.approx(np.mean(np.abs(error)), rel=1e-12)
    assert results["rmse"] == pytest.approx(np.sqrt(np.mean(error ** 2)), rel=1e-12)
    # the per-element baseline alone explains most of the target: the fit is sensible
    assert results["mae"] < 0.25 * np.std(y_test - y_test.mean()) + 0.5

    model = out / "model"
    assert (model / "zarr.json").is_file()
    attrs = dict(zarr.open_group(model, mode="r").attrs)
    assert attrs["coefficients"] == hyper["coefficients"]
    assert attrs["regularization"] == hyper["regularization"]
    assert attrs["baseline"] == hyper["baseline"]
    assert attrs["target"] == "energy" and attrs["unit"] == "eV"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_results_json_alone_rebuilds_the_predictions(done):
    case, out, _ = done
    results = json.loads((out / "results.json").read_text())
    config = load_config(case / "config.toml")
    assert results["kernel"] == config.kernel.to_dict()
    # the store's split is the one [data] describes
    dataset = load_dataset(config.data)
    _, _, train_index, test_index, y_train, y_test = split_frames(case)
    np.testing.assert_array_equal(dataset.train_index, train_index)
    np.testing.assert_array_equal(dataset.test_index, test_index)
    np.testing.assert_array_equal(dataset.y_train, y_train)

    mine, b_test, alpha = rebuild(case, results)
    _, rows = read_predictions(out / "predictions.csv")
    theirs = np.array([float(r[2]) for r in rows])
    np.testing.assert_allclose(theirs, mine, rtol=1e-8, atol=0)
    # the kernel part on its own (it is small next to the baseline here)
    kernel_part = mine - b_test
    assert np.max(np.abs(kernel_part)) > 1e-6
    np.testing.assert_allclose(theirs - b_test, kernel_part, rtol=1e-6,
                               atol=1e-8 * np.max(np.abs(kernel_part)))
    stored = zarr.open_group(out / "model", mode="r")["alpha"][...]
    np.testing.assert_allclose(stored, alpha, rtol=1e-8, atol=1e-12 * np.max(np.abs(alpha)))


def test_predict_training_structures_gives_the_fitted_values(done, tmp_path):
    case, out, _ = done
    results = json.loads((out / "results.json").read_text())
    train, _, _, _, y_train, _ = split_frames(case)
    write_xyz(tmp_path / "train.xyz", train)
    status, stdout, err = wkdist("predict", out / "model", tmp_path / "train.xyz",
                                 "--out", tmp_path / "p.csv")
    assert status == 0, err
    assert stdout == "" and f"predictions: {tmp_path / 'p.csv'}" in err
    header, rows = read_predictions(tmp_path / "p.csv")
    assert header == ["index", "target", "prediction"]
    assert [int(r[0]) for r in rows] == list(range(N_TRAIN))
    np.testing.assert_array_equal([float(r[1]) for r in rows], y_train)
    alpha = zarr.open_group(out / "model", mode="r")["alpha"][...]
    fitted = y_train - results["hyperparameters"]["regularization"] * alpha
    np.testing.assert_allclose([float(r[2]) for r in rows], fitted, rtol=1e-8, atol=0)

    # the same structures without the target: no target column; no --out: standard output
    for atoms in train:
        atoms.calc = None
    write_xyz(tmp_path / "bare.xyz", train)
    status, stdout, err = wkdist("predict", out / "model", tmp_path / "bare.xyz")
    assert status == 0, err
    lines = stdout.splitlines()
    assert lines[0] == "index,prediction" and len(lines) == N_TRAIN + 1
    np.testing.assert_array_equal([float(line.split(",")[1]) for line in lines[1:]],
                                  [float(r[2]) for r in rows])


def test_predict_test_structures_matches_predictions_csv(done, tmp_path):
    case, out, _ = done
    _, test, _, _, _, _ = split_frames(case)
    write_xyz(tmp_path / "test.xyz", test)
    status, stdout, err = wkdist("predict", out / "model", tmp_path / "test.xyz")
    assert status == 0, err
    _, rows = read_predictions(out / "predictions.csv")
    got = [line.split(",") for line in stdout.splitlines()[1:]]
    np.testing.assert_allclose([float(g[2]) for g in got], [float(r[2]) for r in rows],
                               rtol=1e-10, atol=0)
    assert [g[1] for g in got] == [r[1] for r in rows]  # the targets, bitwise


def test_predict_unseen_element_warns_and_is_zero(done, tmp_path):
    from ase import Atoms

    case, out, _ = done
    molecule = read_xyz(case / "mols.xyz")[0]
    molecule.calc = None
    lone = molecule.copy()
    lone += Atoms("N", positions=[[30.0, 0.0, 0.0]])  # beyond the cutoff of every atom
    nitrogen = Atoms("N2", positions=[[0, 0, 0], [1.1, 0, 0]])
    near = molecule.copy()
    near += Atoms("N", positions=[molecule.positions[0] + [1.2, 0.0, 0.0]])
    write_xyz(tmp_path / "new.xyz", [molecule, lone, nitrogen, near])
    status, stdout, err = wkdist("predict", out / "model", tmp_path / "new.xyz",
                                 "--allow-unseen-elements")
    assert status == 0, err
    warning = [line for line in err.splitlines() if "never occur" in line]
    assert len(warning) == 1 and "N" in warning[0] and "wkdist: error" not in err
    assert "structures 1, 2, 3 of" in warning[0]
    values = [float(line.split(",")[1]) for line in stdout.splitlines()[1:]]
    assert len(values) == 4 and np.isfinite(values).all()
    assert values[1] == pytest.approx(values[0], rel=1e-12, abs=1e-12)  # isolated N adds 0
    assert values[2] == 0.0  # no kernel to any training structure, no baseline weight for N


@pytest.mark.parametrize("damage, message", [
    ("not_a_model", "expected a wkdist model directory"),
    ("format_version", "expected format 'wkdist-model' version 2"),
    ("format", "expected format 'wkdist-model' version 2"),
    ("alpha_missing", "alpha/c/0 is missing"),
])
def test_predict_refuses_what_is_not_a_model(done, tmp_path, damage, message):
    case, out, _ = done
    model = tmp_path / "model"
    if damage == "not_a_model":
        model.mkdir()
        (model / "notes.txt").write_text("nothing here")
    else:
        shutil.copytree(out / "model", model)
        if damage == "alpha_missing":
            shutil.rmtree(model / "alpha")
        else:
            meta = json.loads((model / "zarr.json").read_text())
            if damage == "format_version":
                meta["attributes"]["format_version"] = 3
            else:
                meta["attributes"]["format"] = "something-else"
            (model / "zarr.json").write_text(json.dumps(meta))
    status, stdout, err = wkdist("predict", model, case / "mols.xyz")
    assert status == 2 and stdout == ""
    line = error_line(err)
    assert message in line, line
    if damage == "format_version":
        assert "version 3" in line


def test_predict_bad_structures_file_is_one_line(done, tmp_path):
    _, out, _ = done
    status, _, err = wkdist("predict", out / "model", tmp_path / "absent.xyz")
    assert status == 2 and "absent.xyz: no such file" in error_line(err)
    (tmp_path / "empty.xyz").write_text("")
    status, _, err = wkdist("predict", out / "model", tmp_path / "empty.xyz")
    assert status == 2 and "empty.xyz" in error_line(err)


# --------------------------------------------------------------------------- resuming, fit


def test_rerun_is_resumable_and_bitwise_identical(done, tmp_path):
    case = copy_case(done, tmp_path)
    before = (case / "out" / "predictions.csv").read_bytes()
    status, _, err = wkdist("run", case / "config.toml", "--out", case / "out", "--quiet")
    assert status == 0, err
    assert "computed 0 of 12 tiles (12 already done)" in err
    assert (case / "out" / "predictions.csv").read_bytes() == before
    # into a fresh directory too
    status, _, err = wkdist("run", case / "config.toml", "--out", case / "again", "--quiet")
    assert status == 0, err
    assert "computed 0 of 12 tiles" in err
    assert (case / "again" / "predictions.csv").read_bytes() == before
    a = json.loads((case / "out" / "results.json").read_text())
    b = json.loads((case / "again" / "results.json").read_text())
    assert a["hyperparameters"] == b["hyperparameters"] and a["mae"] == b["mae"]


def test_fit_with_missing_tiles_exits_2_naming_them(done, tmp_path):
    case = copy_case(done, tmp_path)
    markers = Markers(case / "store.zarr", "markers/K_train")
    assert markers.expected(0, 1, None) is not None
    markers.unmark(0, 1)
    status, _, err = wkdist("fit", case / "config.toml", "--out", case / "fitted")
    assert status == 2
    line = error_line(err)
    assert "K_train[0,1]" in line and "1 of 12 kernel tiles are missing" in line, line
    assert f"wkdist kernels {case / 'config.toml'}" in line, line
    assert not (case / "fitted" / "results.json").exists()
    # `wkdist kernels` computes the one tile; fit then reproduces the run's predictions
    status, _, err = wkdist("kernels", case / "config.toml", "--quiet")
    assert status == 0 and "computed 1 of 12 tiles" in err, err
    status, _, err = wkdist("fit", case / "config.toml", "--out", case / "fitted")
    assert status == 0, err
    assert ((case / "fitted" / "predictions.csv").read_bytes()
            == (case / "out" / "predictions.csv").read_bytes())


def test_fit_without_a_store_exits_2(done, tmp_path):
    case = copy_case(done, tmp_path)
    shutil.rmtree(case / "store.zarr")
    status, _, err = wkdist("fit", case / "config.toml", "--out", case / "fitted")
    assert status == 2
    line = error_line(err)
    assert "no such store" in line and "wkdist kernels" in line, line
    assert not (case / "fitted" / "results.json").exists()
    assert not (case / "store.zarr").exists()  # fit never creates a store


def test_given_coefficients_and_learning_curve(done, tmp_path):
    case = copy_case(done, tmp_path)
    # c_nu at the scale of the default "exact" kernels (K^nu ~ (8 pi^2)^-nu of "paper")
    coefficients = [0.01, 1.5, 3.0]
    config = write_config(case, name="given.toml",
                          fit={"coefficients": coefficients, "learning_curve": [10, 5],
                               "regularization": 0.5})
    status, _, err = wkdist("fit", config, "--out", case / "given")
    assert status == 0, err
    assert "(given)" in err
    results = json.loads((case / "given" / "results.json").read_text())
    hyper = results["hyperparameters"]
    assert hyper["coefficients"] == coefficients and hyper["regularization"] == 0.5
    assert results["search"] is None
    curve = results["learning_curve"]
    assert [p["n_train"] for p in curve] == [5, 10, N_TRAIN]
    assert all(np.isfinite(p["mae"]) and np.isfinite(p["rmse"]) and p["rmse"] >= p["mae"]
               for p in curve)
    assert curve[-1]["mae"] == results["mae"]
    # the kernel matters with these coefficients, and results.json still rebuilds it all
    mine, b_test, _ = rebuild(case, results)
    _, rows = read_predictions(case / "given" / "predictions.csv")
    theirs = np.array([float(r[2]) for r in rows])
    assert np.max(np.abs(mine - b_test)) > 1e-2
    np.testing.assert_allclose(theirs, mine, rtol=1e-8, atol=0)
    # and it differs from the searched run (a stale factor would not)
    _, first = read_predictions(case / "out" / "predictions.csv")
    assert not np.allclose(theirs, [float(r[2]) for r in first], rtol=1e-6)


def test_scale_check_validates_each_factor_at_full_n(done, tmp_path):
    """[fit] scale_check: each factor of the searched coefficients fitted on all but the last
    validation_fraction of the training rows; the best validation MAE scales the model."""
    case = copy_case(done, tmp_path)
    first = json.loads((case / "out" / "results.json").read_text())
    searched = np.asarray(first["hyperparameters"]["coefficients"])
    factors = [0.01, 1.0, 100.0]
    config = write_config(case, name="check.toml",
                          fit={"scale_check": factors, "validation_fraction": 0.25})
    status, _, err = wkdist("fit", config, "--out", case / "check")
    assert status == 0, err
    assert err.count("scale check:") == 3
    results = json.loads((case / "check" / "results.json").read_text())
    check = results["scale_check"]
    held = round(0.25 * N_TRAIN)
    kept = N_TRAIN - held
    assert (check["n_fit"], check["n_validation"]) == (kept, held)
    # each point against a dense solve on the leading rows of the stored kernels
    train, _, _, _, y_train, _ = split_frames(case)
    k_train = read_kernels(case / "store.zarr", "K_train")[...]
    y = y_train - baseline_of(train, results["hyperparameters"]["baseline"])
    for point, factor in zip(check["points"], factors):
        k = np.tensordot(factor * searched, k_train, axes=1)
        alpha = scipy.linalg.solve(k[:kept, :kept] + np.eye(kept), y[:kept], assume_a="pos")
        mae = np.mean(np.abs(k[kept:, :kept] @ alpha - y[kept:]))
        assert point["factor"] == factor
        assert point["validation_mae"] == pytest.approx(mae, rel=1e-9)
    best = min(check["points"], key=lambda p: p["validation_mae"])
    assert check["factor"] == best["factor"]
    np.testing.assert_allclose(results["hyperparameters"]["coefficients"],
                               best["factor"] * searched, rtol=1e-12)
    assert results["timings"]["scale_check_s"] > 0


def test_a_switched_off_body_order_is_reported(done, tmp_path):
    """c_nu mean(diag K^nu) below 1e-6 of the largest order: a warning on stderr and in
    results.json naming the order and the effective nu_max; none for the searched fit."""
    case, out, err = done
    results = json.loads((out / "results.json").read_text())
    assert results["warnings"] == [] and "WARNING" not in err
    k_train = read_kernels(case / "store.zarr", "K_train")[...]
    diagonal = np.einsum("kii->k", k_train) / N_TRAIN
    [part] = results["order_contributions"]
    assert part["lambda"] == 0
    np.testing.assert_allclose(part["values"],
                               np.array(results["hyperparameters"]["coefficients"]) * diagonal,
                               rtol=1e-12)

    case = copy_case(done, tmp_path)
    top = max(0.01 * diagonal[0], 0.02 * diagonal[1])
    for c2, weak in ((1e-8 * top / diagonal[2], True), (1e-4 * top / diagonal[2], False)):
        config = write_config(case, name="weak.toml",
                              fit={"coefficients": [0.01, 0.02, float(c2)]})
        status, _, err = wkdist("fit", config, "--out", case / f"weak{weak}")
        assert status == 0, err
        results = json.loads((case / f"weak{weak}" / "results.json").read_text())
        if not weak:
            assert results["warnings"] == [] and "WARNING" not in err
            continue
        [message] = results["warnings"]
        assert message.startswith("fit: body order nu = 2 contributes less than 1e-06")
        assert "effectively of order nu_max = 1" in message
        assert "given [fit] coefficients" in message
        assert f"wkdist: WARNING: {message}" in err


def test_weak_order_message_names_the_search():
    from wkdist.app.pipeline import _weak_orders

    values, message = _weak_orders([2.0, 1.0, 3e-11, 1e-12], np.array([1.0, 4.0, 2.0, 1.0]),
                                   label=" (lambda = 1)", search={"n_used": 45})
    assert values == [2.0, 4.0, 6e-11, 1e-12]
    assert message.startswith("fit (lambda = 1): body orders nu = 2, 3 contribute less than")
    assert "effectively of order nu_max = 1" in message
    assert "CV search on 45 structures switched them off" in message
    _, message = _weak_orders([1.0, 1e-9, 1.0], np.ones(3), label="", search=None)
    assert "nu = 1 contributes" in message and "effectively absent" in message
    assert _weak_orders([0.0, 1.0, 1e-5], np.ones(3), label="", search=None)[1] is None


def test_learning_curve_point_without_baseline(done, tmp_path):
    """learning_curve n: a dense fit on the first n training rows, checked by hand."""
    case = copy_case(done, tmp_path)
    coefficients = [0.01, 0.02, 0.0005]
    config = write_config(case, name="lc.toml",
                          fit={"coefficients": coefficients, "learning_curve": [8],
                               "baseline": False, "folds": 4})
    status, _, err = wkdist("fit", config, "--out", case / "lc")
    assert status == 0, err
    results = json.loads((case / "lc" / "results.json").read_text())
    assert results["hyperparameters"]["baseline"] is None
    mine, b_test, _ = rebuild(case, results)
    assert not b_test.any()
    _, rows = read_predictions(case / "lc" / "predictions.csv")
    np.testing.assert_allclose([float(r[2]) for r in rows], mine, rtol=1e-8, atol=0)
    point = results["learning_curve"][0]
    assert point["n_train"] == 8 and np.isfinite(point["mae"])


@pytest.mark.parametrize("fit, message", [
    ({"coefficients": [1.0, 2.0]}, "[fit] coefficients: expected 3 numbers"),
    ({"bogus": 1}, "[fit] bogus: unknown key"),
    ({"coefficients": []}, "[fit] coefficients: expected a non-empty array"),
    ({"regularization": 0}, "[fit] regularization: expected a positive number"),
    ({"learning_curve": [1]}, "[fit] learning_curve: expected"),
    ({"mode": "loo"}, "[fit] mode: expected one of 'kfold', 'holdout'"),
    ({"scale_check": [1, 0]}, "[fit] scale_check: expected a non-empty array of positive"),
    ({"validation_fraction": 1}, "[fit] validation_fraction: expected a number between 0"),
])
def test_bad_fit_section_exits_2(done, tmp_path, fit, message):
    case = copy_case(done, tmp_path)
    config = write_config(case, name="bad.toml", fit=fit)
    status, _, err = wkdist("fit", config, "--out", case / "bad")
    assert status == 2
    line = error_line(err)
    assert message in line, line
    assert not (case / "bad" / "results.json").exists()


def test_process_boundary_predict_via_python_m(done, tmp_path):
    """`python -m wkdist predict` in a fresh process: the same numbers as in-process."""
    case, out, _ = done
    _, test, _, _, _, _ = split_frames(case)
    write_xyz(tmp_path / "test.xyz", test)
    proc = subprocess.run([sys.executable, "-m", "wkdist", "predict", str(out / "model"),
                           str(tmp_path / "test.xyz")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    status, stdout, _ = wkdist("predict", out / "model", tmp_path / "test.xyz")
    assert status == 0 and proc.stdout == stdout


def test_predict_on_a_local_cluster_matches_in_process(done, tmp_path):
    case, out, _ = done
    _, test, _, _, _, _ = split_frames(case)
    write_xyz(tmp_path / "test.xyz", test)
    status, here, err = wkdist("predict", out / "model", tmp_path / "test.xyz")
    assert status == 0, err
    status, there, err = wkdist("predict", out / "model", tmp_path / "test.xyz",
                                "--cluster", "local", "--workers", "1")
    assert status == 0, err
    assert there.splitlines()[0] == here.splitlines()[0]
    np.testing.assert_allclose([float(line.split(",")[2]) for line in there.splitlines()[1:]],
                               [float(line.split(",")[2]) for line in here.splitlines()[1:]],
                               rtol=1e-12, atol=0)
    status, _, err = wkdist("predict", out / "model", tmp_path / "test.xyz",
                            "--cluster", "slurm")
    assert status == 2 and '--cluster: expected "local" or "tcp://host:port"' in error_line(err)


def test_python_m_wkdist_cli_knows_predict():
    proc = subprocess.run([sys.executable, "-m", "wkdist.cli", "predict", "--help"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


def test_the_mixing_search_is_checkpointed_in_the_store_and_a_refit_replays_it(done, tmp_path,
                                                                              monkeypatch):
    """The shapes the fit's search evaluated are in STORE/search/<key> (zarr attributes,
    written by the driver); a second fit of the same store replays them and chooses the
    same coefficients without evaluating a shape again."""
    case = copy_case(done, tmp_path)
    results = json.loads((case / "out" / "results.json").read_text())
    group = zarr.open_group(case / "store.zarr", mode="r")
    (key,) = list(group["search"].group_keys())
    progress = group["search"][key].attrs["progress"]
    assert len(progress["cache"]) == results["search"]["evaluations"]
    import scipy.linalg

    def no_eigendecomposition(*args, **kwargs):
        raise AssertionError("a shape was evaluated again")

    monkeypatch.setattr(scipy.linalg, "eigh", no_eigendecomposition)
    status, _, err = wkdist("fit", case / "config.toml", "--out", case / "again")
    assert status == 0, err
    again = json.loads((case / "again" / "results.json").read_text())
    assert again["hyperparameters"]["coefficients"] == results["hyperparameters"]["coefficients"]
    assert list(zarr.open_group(case / "store.zarr", mode="r")["search"].group_keys()) == [key]
