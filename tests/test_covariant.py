"""Vector and tensor targets end to end: `wkdist run` (real LocalCluster, tiled store, tiled
Cholesky) on tiny data sets whose dipoles and tensors are exact covariant functions of the
structures, checked against symmetry and against dense scipy solves of the same matrices.
"""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
import scipy.linalg
import zarr
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from scipy.spatial.transform import Rotation
from store_helpers import ASE_SHAPE_WARNING, error_line, random_atoms
from store_helpers import wkdist_cli as wkdist

from wkdist import read_kernels
from wkdist.engine.targets import tensor_matrices, to_spherical
from wkdist.krr.model import load_model

pytestmark = ASE_SHAPE_WARNING

CHARGE = {"H": 0.3, "C": -0.2, "O": -0.5}
N_TRAIN, N_TEST = 14, 6
KERNEL = ["nu_max = 3", "lambda_max = 2", "gaussian_width = 0.3", "decay_length = 2.0"]
FIXED = "coefficients = [0.5, 2.0, 1.0, 0.3]"


def dipole(atoms: Atoms) -> np.ndarray:
    """Point charges about the centroid plus a three-body term: covariant, not linear."""
    r = atoms.positions - atoms.positions.mean(axis=0)
    q = np.array([CHARGE[s] for s in atoms.get_chemical_symbols()])
    mu = (q[:, None] * r).sum(axis=0)
    return mu + 0.1 * np.cross(r[0], r[1]) @ np.cross(r[0], r[1]) * r[2]


def tensor(atoms: Atoms) -> np.ndarray:
    r = atoms.positions - atoms.positions.mean(axis=0)
    w = 1.0 + np.abs([CHARGE[s] for s in atoms.get_chemical_symbols()])
    return np.einsum("i,ir,is->rs", w, r, r) + w.sum() * np.eye(3)


def transformed(frames: list[Atoms], matrix: np.ndarray) -> list[Atoms]:
    """Every structure mapped by ``matrix`` (positions r -> matrix r) with its targets."""
    out = []
    for atoms in frames:
        moved = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions @ matrix.T)
        mu = atoms.calc.results["dipole"]
        moved.calc = SinglePointCalculator(moved, dipole=matrix @ mu)
        moved.info["alpha"] = (matrix @ atoms.info["alpha"].reshape(3, 3) @ matrix.T).reshape(9)
        out.append(moved)
    return out


def make_frames(seed: int = 11) -> list[Atoms]:
    frames = random_atoms(N_TRAIN + N_TEST, seed=seed)
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, dipole=dipole(atoms))
        atoms.info["alpha"] = tensor(atoms).reshape(9)
    return frames


def write_case(directory: Path, frames: list[Atoms], target: str, *, fit: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting the shape on a NumPy array",
                                category=DeprecationWarning)
        # ASE's binary trajectory keeps every bit (extxyz rounds positions to 1e-8 Å, which
        # would limit the rotation test to ~1e-8)
        ase.io.write(directory / "mols.traj", frames)
    lines = ["[data]", 'path = "mols.traj"', f'target = "{target}"', f"n_train = {N_TRAIN}",
             f"n_test = {N_TEST}", "seed = 2", "[kernel]", *KERNEL,
             "[compute]", "tile_size = 5", "workers = 2", "threads_per_worker = 1",
             "[store]", 'path = "store.zarr"', "[fit]", "folds = 4", fit]
    config = directory / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def run(directory: Path, frames: list[Atoms], target: str, fit: str = ""
        ) -> tuple[dict, np.ndarray]:
    config = write_case(directory, frames, target, fit=fit)
    status, _, err = wkdist("run", config, "--out", directory / "out", "--quiet")
    assert status == 0, err
    results = json.loads((directory / "out" / "results.json").read_text())
    with open(directory / "out" / "predictions.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    return results, np.array(rows[1:], dtype=float)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The original data set and the same one rotated by a random Q, for both target kinds,
    with (c0, a, b) chosen by CV and with given coefficients ("fixed")."""
    q = Rotation.random(random_state=4).as_matrix()
    frames = make_frames()
    out = {}
    for target in ("dipole", "alpha"):
        for name, data in (("plain", frames), ("rotated", transformed(frames, q))):
            directory = tmp_path_factory.mktemp(f"{target}_{name}")
            out[target, name] = (directory, *run(directory, data, target))
            directory = tmp_path_factory.mktemp(f"{target}_{name}_fixed")
            out[target, name + "_fixed"] = (directory, *run(directory, data, target, FIXED))
    return q, out


def test_vector_outputs_and_store_layout(runs):
    _, out = runs
    directory, results, rows = out["dipole", "plain"]
    assert results["target_kind"] == "vector"
    for key in ("mae", "rmse", "mae_magnitude"):
        assert results[key] > 0
    with open(directory / "out" / "predictions.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["index", "target_x", "target_y", "target_z",
                      "prediction_x", "prediction_y", "prediction_z"]
    assert rows.shape == (N_TEST, 7)
    errors = rows[:, 4:] - rows[:, 1:4]
    assert results["mae"] == pytest.approx(np.mean(np.abs(errors)), rel=1e-12)
    magnitudes = np.linalg.norm(rows[:, 4:], axis=1) - np.linalg.norm(rows[:, 1:4], axis=1)
    assert results["mae_magnitude"] == pytest.approx(np.mean(np.abs(magnitudes)), rel=1e-12)
    hyper = results["hyperparameters"]
    assert hyper["coefficients"][0] == 0.0 and hyper["baseline"] is None  # no c0 for lambda 1
    assert [p["lambda"] for p in hyper["parts"]] == [1]

    group = zarr.open_group(directory / "store.zarr", mode="r")
    assert "K_train" not in group and "K_test" not in group  # lambda = 0 is not needed
    assert group["K_train_lambda1"].shape == (4, 3 * N_TRAIN, 3 * N_TRAIN)
    assert group["K_train_lambda1"].chunks == (4, 15, 15)  # a tile of 5 structures
    assert group["K_test_lambda1"].shape == (4, 3 * N_TEST, 3 * N_TRAIN)
    assert group["y_train"].shape == (N_TRAIN, 3)
    k = read_kernels(directory / "store.zarr", "K_train_lambda1")[...]
    assert np.isfinite(k).all() and not k[0].any()  # K^0 = 0 for lambda >= 1
    np.testing.assert_allclose(k, k.transpose(0, 2, 1), rtol=0, atol=1e-13 * np.abs(k).max())


def test_tensor_outputs(runs):
    _, out = runs
    directory, results, rows = out["alpha", "plain"]
    assert results["target_kind"] == "tensor"
    with open(directory / "out" / "predictions.csv", newline="") as handle:
        header = next(csv.reader(handle))
    suffixes = ["xx", "xy", "xz", "yy", "yz", "zz"]
    assert header == (["index"] + [f"target_{s}" for s in suffixes]
                      + [f"prediction_{s}" for s in suffixes])
    target, prediction = rows[:, 1:7], rows[:, 7:]
    assert results["mae"] == pytest.approx(np.mean(np.abs(prediction - target)), rel=1e-12)
    t, p = to_spherical(target, "tensor"), to_spherical(prediction, "tensor")
    assert results["mae_lambda0"] == pytest.approx(np.mean(np.abs(p[0] - t[0])), rel=1e-9)
    assert results["mae_lambda2"] == pytest.approx(np.mean(np.abs(p[2] - t[2])), rel=1e-9)
    parts = results["hyperparameters"]["parts"]
    assert [p_["lambda"] for p_ in parts] == [0, 2]
    assert parts[0]["baseline"] is not None and parts[1]["baseline"] is None
    assert parts[1]["coefficients"][0] == 0.0
    group = zarr.open_group(directory / "store.zarr", mode="r")
    assert group["K_train"].shape == (4, N_TRAIN, N_TRAIN)  # the trace: the scalar path
    assert group["K_train_lambda2"].shape == (4, 5 * N_TRAIN, 5 * N_TRAIN)


@pytest.mark.parametrize("search", ["fixed", "cv"])
@pytest.mark.parametrize("target", ["dipole", "alpha"])
def test_rotating_every_structure_rotates_every_prediction(runs, target, search):
    """Given coefficients: exact to 1e-10. Chosen by CV: the CV loss is rotation invariant
    (mean error norms), but the optimizer stops within its tolerance of the same point, so
    the chosen coefficients and predictions agree to ~1e-8 only."""
    q, out = runs
    suffix, tolerance = ("_fixed", 1e-10) if search == "fixed" else ("", 1e-6)
    _, plain, rows = out[target, "plain" + suffix]
    _, turned, rows_turned = out[target, "rotated" + suffix]
    np.testing.assert_array_equal(rows[:, 0], rows_turned[:, 0])
    for a, b in zip(plain["hyperparameters"]["parts"], turned["hyperparameters"]["parts"]):
        np.testing.assert_allclose(b["coefficients"], a["coefficients"], rtol=tolerance)
    if target == "dipole":
        expected, got = rows[:, 4:] @ q.T, rows_turned[:, 4:]
    else:
        expected = (q @ tensor_matrices(rows[:, 7:]) @ q.T).reshape(-1, 9)
        got = tensor_matrices(rows_turned[:, 7:]).reshape(-1, 9)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance * scale)
    # the invariants of the fit do not see the rotation either
    invariant = ("rmse", "mae_magnitude") if target == "dipole" else ("mae_lambda0",)
    for key in invariant:  # (a tensor's RMSE over its 6 stored components is not invariant)
            assert turned[key] == pytest.approx(plain[key], rel=tolerance)


def test_an_inverted_structure_flips_its_predicted_dipole(runs):
    _, out = runs
    directory, _, rows = out["dipole", "plain"]
    model = load_model(directory / "out" / "model")
    frames = ase.io.read(directory / "mols.traj", ":")
    test = [frames[int(i)] for i in rows[:, 0]]
    inverted = [Atoms(a.get_chemical_symbols(), positions=-a.positions) for a in test]
    prediction = model.predict(test)
    np.testing.assert_allclose(prediction, rows[:, 4:], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.predict(inverted), -prediction, rtol=0,
                               atol=1e-10 * np.abs(prediction).max())


@pytest.mark.parametrize("target,lam", [("dipole", 1), ("alpha", 2), ("alpha", 0)])
def test_tiled_solve_equals_dense_scipy_solve(runs, target, lam):
    _, out = runs
    directory, results, rows = out[target, "plain"]
    group = zarr.open_group(directory / "store.zarr", mode="r")
    suffix = "" if lam == 0 else f"_lambda{lam}"
    part = next(p for p in results["hyperparameters"]["parts"] if p["lambda"] == lam)
    c = np.asarray(part["coefficients"])
    k_train = np.tensordot(c, read_kernels(directory / "store.zarr",
                                                  "K_train" + suffix)[...], axes=1)
    k_test = np.tensordot(c, read_kernels(directory / "store.zarr",
                                                 "K_test" + suffix)[...], axes=1)
    kind = "vector" if target == "dipole" else "tensor"
    y_train = to_spherical(group["y_train"][...], kind)[lam]
    baseline_train = baseline_test = 0.0
    if lam == 0:  # the trace part carries the per-element baseline of the scalar path
        weights = load_model(directory / "out" / "model").parts[0].baseline
        frames = ase.io.read(directory / "mols.traj", ":")
        baseline_train, baseline_test = (
            np.array([sum(weights[s] for s in frames[int(i)].get_chemical_symbols())
                      for i in group[name][...]]) for name in ("train_index", "test_index"))
    matrix = k_train + part["regularization"] * np.eye(len(k_train))
    alpha = scipy.linalg.cho_solve(scipy.linalg.cho_factor(matrix),
                                   np.reshape(y_train - baseline_train, -1))
    dense = baseline_test + k_test @ alpha
    predicted = to_spherical(rows[:, 4:] if kind == "vector" else rows[:, 7:], kind)[lam]
    np.testing.assert_allclose(np.reshape(predicted, -1), dense, rtol=0,
                               atol=1e-9 * np.abs(dense).max())


def test_predict_command_writes_vector_columns(runs, tmp_path):
    _, out = runs
    directory, _, rows = out["dipole", "plain"]
    status, text, err = wkdist("predict", directory / "out" / "model", directory / "mols.traj")
    assert status == 0, err
    lines = list(csv.reader(text.splitlines()))
    assert lines[0] == ["index", "target_x", "target_y", "target_z",
                        "prediction_x", "prediction_y", "prediction_z"]
    table = np.array(lines[1:], dtype=float)
    assert len(table) == N_TRAIN + N_TEST
    by_index = {int(r[0]): r for r in table}
    for row in rows:
        np.testing.assert_allclose(by_index[int(row[0])][4:], row[4:], rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------------------- bad input


def _bad_case(tmp_path: Path, edit) -> str:
    frames = make_frames(seed=12)
    edit(frames)
    config = write_case(tmp_path, frames, "alpha" if "alpha" in frames[0].info else "dipole")
    status, _, err = wkdist("run", config, "--out", tmp_path / "out", "--quiet")
    assert status == 2, err
    assert not (tmp_path / "out" / "results.json").exists()
    assert not (tmp_path / "store.zarr").exists()  # refused before anything was written
    return error_line(err)


def _set_dipole(frames, index, value):
    frames[index].calc = SinglePointCalculator(frames[index], dipole=np.asarray(value))
    for atoms in frames:
        atoms.info.pop("alpha", None)


def test_vector_with_the_wrong_number_of_components_is_refused(tmp_path):
    def edit(frames):
        for atoms in frames:
            atoms.info.pop("alpha")
            atoms.calc = SinglePointCalculator(atoms, dipole=np.ones(4))
    line = _bad_case(tmp_path, edit)
    assert "target 'dipole'" in line and "3 (vector), 6 or 9" in line and "got 4" in line


def test_nan_component_is_refused(tmp_path):
    line = _bad_case(tmp_path, lambda f: _set_dipole(f, 3, [0.1, np.nan, 0.2]))
    assert "structure 3" in line and "NaN" in line


def test_mixed_target_shapes_are_refused(tmp_path):
    line = _bad_case(tmp_path, lambda f: _set_dipole(f, 5, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    assert "structure 5" in line and "6 components" in line and "structure 0 has 3" in line


def test_asymmetric_tensor_is_refused(tmp_path):
    def edit(frames):
        t = frames[7].info["alpha"].copy()
        t[1] += 0.5  # T_xy != T_yx
        frames[7].info["alpha"] = t
    line = _bad_case(tmp_path, edit)
    assert "structure 7" in line and "symmetric 3x3 tensor" in line


def test_plan_counts_the_lambda_kernels(tmp_path):
    config = write_case(tmp_path, make_frames(seed=13), "alpha")
    status, out, err = wkdist("plan", config)
    assert status == 0, err
    assert "tensor target, kernel orders lambda = 0, 2" in out
    # per order: 3 x 3 tiles of 5 structures for 14 train, 2 x 3 for 6 test
    assert "12 of K_train computed" in out and "12 of K_test" in out
    assert not (tmp_path / "store.zarr").exists()


def test_damaged_lambda_tile_is_found_and_recomputed(runs, tmp_path):
    _, out = runs
    source = out["dipole", "plain"][0]
    case = tmp_path / "case"
    shutil.copytree(source, case)
    store = case / "store.zarr"
    original = read_kernels(store, "K_train_lambda1")[...]
    chunk = store / "K_train_lambda1" / "c" / "0" / "0" / "1"  # tile (0, 1), 15 x 15 rows
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    status, text, err = wkdist("status", store, "--verify")
    assert status == 1, err
    assert "K_train_lambda1: 5/6 tiles done" in text and "K_train_lambda1[0,1]" in text
    status, _, err = wkdist("kernels", case / "config.toml")
    assert status == 0, err
    assert "computed 1 of 12 tiles (11 already done)" in err
    repaired = read_kernels(store, "K_train_lambda1")[...]
    assert repaired.tobytes() == original.tobytes()
