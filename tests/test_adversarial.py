"""Damaged, replaced and hand-edited files, and bad input, as an adversary would try them.

Every case runs the real command (``wkdist.cli.main``, a real LocalCluster with worker
processes where the command starts one) on a real store on disk, and checks for one line
``wkdist: error: ...`` with exit status 2 naming what is at fault, or for the repaired result
being the original one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import ASE_SHAPE_WARNING, error_line
from store_helpers import wkdist_cli as wkdist
from test_pipeline import make_case

from wkdist import errors as wkdist_errors
from wkdist import read_kernels
from wkdist.tiled.checkpoint import Markers

pytestmark = ASE_SHAPE_WARNING


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One `wkdist run` on the tiny case of test_pipeline: (case dir, results)."""
    case = tmp_path_factory.mktemp("adversarial")
    config = make_case(case)
    status, _, err = wkdist("run", config, "--out", case / "out", "--quiet")
    assert status == 0, err
    return case, json.loads((case / "out" / "results.json").read_text())


@pytest.fixture
def case(finished, tmp_path):
    """A private copy of the finished case: (case dir, results of the original run)."""
    source, results = finished
    copy = tmp_path / "case"
    shutil.copytree(source, copy)
    shutil.rmtree(copy / "out")
    return copy, results


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def predictions(path: Path) -> np.ndarray:
    rows = path.read_text().splitlines()[1:]
    return np.array([float(row.split(",")[-1]) for row in rows])


def factor_dirs(store: Path) -> list[Path]:
    return sorted(p for p in (store / "solve").iterdir() if p.is_dir())


# --------------------------------------------------------------------------- kernel tiles


@pytest.mark.parametrize("damage", ["replaced", "flipped"])
def test_damaged_kernel_tile_stops_fit_naming_it_and_the_repair(case, damage):
    """A K_train chunk replaced by another valid chunk (its own Crc32c matches) or with a
    flipped byte: fit stops with one line naming the tile and `wkdist kernels --verify`, and
    unmarks it; after that command, fit gives the original results."""
    case, original = case
    store = case / "store.zarr"
    chunk = store / "K_train" / "c" / "0" / "0" / "0"
    if damage == "replaced":
        shutil.copyfile(store / "K_train" / "c" / "0" / "1" / "1", chunk)
    else:
        flip_byte(chunk)
    status, _, err = wkdist("fit", case / "config.toml", "--out", case / "out")
    assert status == 2
    line = error_line(err)
    assert "kernel tile K_train (0, 0)" in line and "--verify" in line, line
    assert Markers(store, "markers/K_train").expected(0, 0, None) is None  # unmarked
    assert not (case / "out" / "results.json").exists()
    status, _, err = wkdist("kernels", case / "config.toml", "--verify", "--quiet")
    assert status == 0, err
    status, _, err = wkdist("fit", case / "config.toml", "--out", case / "out")
    assert status == 0, err
    results = json.loads((case / "out" / "results.json").read_text())
    assert results["mae"] == pytest.approx(original["mae"], rel=1e-12, abs=0)


def test_damaged_off_diagonal_train_tile_is_found(case):
    """An off-diagonal K_train tile, stored once and read for both triangles, is checked
    against its marker however it is read."""
    case, _ = case
    store = case / "store.zarr"
    assert not (store / "K_train" / "c" / "0" / "1" / "0").exists()  # no mirror on disk
    flip_byte(store / "K_train" / "c" / "0" / "0" / "1")
    with pytest.raises(wkdist_errors.DamagedTileError, match=r"K_train \(0, 1\) \(read as "
                       r"chunk \(1, 0\)\)"):
        read_kernels(store)[:, 5:10, 0:5]
    status, _, err = wkdist("fit", case / "config.toml", "--out", case / "out")
    assert status == 2
    line = error_line(err)
    assert "K_train (0, 1)" in line, line
    assert Markers(store, "markers/K_train").expected(0, 1, None) is None


# --------------------------------------------------------------------------- factor tiles


@pytest.mark.parametrize("damage", ["replaced", "flipped"])
def test_damaged_factor_tile_is_recomputed_by_fit(case, damage):
    """A factor tile re-encoded with other values (valid Crc32c) or with a flipped byte: fit
    finds it at its read, recomputes it and gives the original weights and predictions."""
    case, original = case
    store = case / "store.zarr"
    (factor,) = factor_dirs(store)
    if damage == "replaced":
        array = zarr.open_array(zarr.storage.LocalStore(factor), path="L", mode="r+")
        array[0:2, 0:2] = array[0:2, 0:2] * 1.5
    else:
        flip_byte(factor / "L" / "c" / "0" / "0")
    status, _, err = wkdist("fit", case / "config.toml", "--out", case / "out")
    assert status == 0, err
    assert "factor tile" in err and "recomputing it" in err, err
    results = json.loads((case / "out" / "results.json").read_text())
    assert results["mae"] == pytest.approx(original["mae"], rel=1e-12, abs=0)
    assert results["factor_tiles"]["computed"] == 1


def test_status_verify_checks_factor_tiles_and_model_directories(case):
    case, _ = case
    store = case / "store.zarr"
    status, out, err = wkdist("status", store, "--verify")
    assert status == 0 and "every done tile and factor tile is intact" in out, out + err
    (factor,) = factor_dirs(store)
    flip_byte(factor / "L" / "c" / "0" / "0")
    status, out, err = wkdist("status", store, "--verify")
    assert status == 1, out + err
    assert f"solve/{factor.name}/L (0, 0)" in out and "next `wkdist fit` recomputes" in out
    assert Markers(factor, "markers").expected(0, 0, None) is None


def test_truncated_store_metadata_is_one_line(case):
    case, _ = case
    store = case / "store.zarr"
    for name in ("zarr.json", "K_train/zarr.json", "markers/K_test/zarr.json"):
        file = store / name
        saved = file.read_bytes()
        file.write_bytes(saved[:len(saved) // 3])
        for argv in (("status", store), ("fit", case / "config.toml", "--out", case / "out")):
            status, _, err = wkdist(*argv)
            assert status == 2, err
            line = error_line(err)
            assert str(file) in line and "truncated or edited" in line, line
        file.write_bytes(saved)
    assert not (case / "out").exists()


def test_truncated_factor_metadata_is_recomputed(case):
    case, original = case
    (factor,) = factor_dirs(case / "store.zarr")
    file = factor / "L" / "zarr.json"
    file.write_bytes(file.read_bytes()[:40])
    status, _, err = wkdist("fit", case / "config.toml", "--out", case / "out")
    assert status == 0, err
    assert "unreadable (truncated or edited)" in err
    results = json.loads((case / "out" / "results.json").read_text())
    assert results["mae"] == pytest.approx(original["mae"], rel=1e-12, abs=0)


# --------------------------------------------------------------------------- models


@pytest.fixture
def model(finished, tmp_path):
    """A private copy of the finished run's model, and the structures of its test set."""
    source, _ = finished
    copy = tmp_path / "model"
    shutil.copytree(source / "out" / "model", copy)
    return copy, source / "mols.xyz"


@pytest.mark.parametrize("damage", ["flip", "delete", "shape", "baseline"])
def test_predict_refuses_a_damaged_model(model, damage):
    model, xyz = model
    if damage == "flip":
        flip_byte(model / "alpha" / "c" / "0", offset=6)
    elif damage == "delete":
        (model / "alpha" / "c" / "0").unlink()
    elif damage == "shape":
        meta = json.loads((model / "alpha" / "zarr.json").read_text())
        meta["shape"] = [meta["shape"][0] - 1]
        (model / "alpha" / "zarr.json").write_text(json.dumps(meta))
    else:
        meta = json.loads((model / "zarr.json").read_text())
        meta["attributes"]["baseline"]["Qq"] = 1.0
        (model / "zarr.json").write_text(json.dumps(meta))
    status, out, err = wkdist("predict", model, xyz)
    assert status == 2 and out == ""
    line = error_line(err)
    assert str(model) in line, line
    status, _, err = wkdist("status", model, "--verify")
    assert status == 2 and error_line(err) == line


def test_status_verify_of_an_intact_model(model):
    model, _ = model
    status, out, err = wkdist("status", model, "--verify")
    assert status == 0 and "files match their checksums" in out, out + err


def test_unseen_elements_are_nan_with_their_rows_named(model, tmp_path):
    """A QM9-like model asked about S and Cl: those rows are NaN and named on stderr; the
    option gives the zero-baseline numbers instead."""
    from ase import Atoms
    from test_pipeline import random_molecules, write_xyz

    model, _ = model
    frames = random_molecules(3, seed=11, energy=False)
    frames.insert(1, Atoms("CSH4", positions=[[0, 0, 0], [1.8, 0, 0], [-0.6, 0.9, 0],
                                               [-0.6, -0.9, 0], [2.2, 1.3, 0], [0, 0, 1.1]]))
    frames.append(Atoms("CClH3", positions=[[0, 0, 0], [1.8, 0, 0], [-0.4, 1.0, 0],
                                             [-0.4, -0.5, 0.9], [-0.4, -0.5, -0.9]]))
    write_xyz(tmp_path / "new.xyz", frames)
    status, out, err = wkdist("predict", model, tmp_path / "new.xyz")
    assert status == 0, err
    values = np.array([float(r.split(",")[-1]) for r in out.splitlines()[1:]])
    assert np.isnan(values[[1, 4]]).all() and np.isfinite(values[[0, 2, 3]]).all()
    assert "elements S, Cl never occur" in err and "structures 1, 4 of" in err, err
    status, out, err = wkdist("predict", model, tmp_path / "new.xyz", "--allow-unseen-elements")
    assert status == 0, err
    allowed = np.array([float(r.split(",")[-1]) for r in out.splitlines()[1:]])
    assert np.isfinite(allowed).all()
    np.testing.assert_array_equal(allowed[[0, 2, 3]], values[[0, 2, 3]])


# --------------------------------------------------------------------------- bad input, early


def test_two_atoms_at_one_position_named_by_file_and_frame(tmp_path):
    """Refused before any cluster starts or store is created, naming the file and the frame's
    position in it, not its position inside a tile."""
    from test_pipeline import random_molecules, write_xyz

    config = make_case(tmp_path)
    frames = random_molecules(20, seed=7)
    frames[5].positions[2] = frames[5].positions[0]
    write_xyz(tmp_path / "mols.xyz", frames)
    for argv in (("kernels", config, "--quiet"), ("run", config, "--out", tmp_path / "out")):
        status, _, err = wkdist(*argv)
        assert status == 2
        line = error_line(err)
        assert f"{tmp_path / 'mols.xyz'} frame 5: expected atoms at least" in line, line
        assert "atoms 0 and 2" in line and "dashboard" not in err
        assert not (tmp_path / "store.zarr").exists()


def test_store_of_other_settings_refused_before_a_cluster(case):
    case, _ = case
    config = case / "config.toml"
    config.write_text(config.read_text().replace("nu_max = 2", "nu_max = 3"))
    for argv in (("kernels", config, "--quiet"), ("run", config, "--out", case / "out"),
                 ("fit", config, "--out", case / "out")):
        status, _, err = wkdist(*argv)
        assert status == 2
        line = error_line(err)
        assert "made for other settings or data: kernel nu_max 2 in the store, 3 now" in line
        assert "dashboard" not in err


@pytest.mark.parametrize("text, message", [
    ("[fit]\nfolds = 1\n", "[fit] folds: expected an integer >= 2, got 1"),
    ("[fit]\ncoefficients = [1.0, 2.0]\n", "[fit] coefficients: expected 3 numbers"),
])
def test_fit_settings_refused_when_the_config_is_read(tmp_path, text, message):
    config = make_case(tmp_path)
    config.write_text(config.read_text() + text)
    status, _, err = wkdist("run", config, "--out", tmp_path / "out")
    assert status == 2 and message in error_line(err)
    assert "dashboard" not in err and not (tmp_path / "store.zarr").exists()


def test_config_that_is_not_utf8(tmp_path):
    config = make_case(tmp_path)
    config.write_bytes(config.read_bytes() + b"# caf\xe9\n")
    for command in ("kernels", "plan"):
        status, _, err = wkdist(command, config)
        assert status == 2
        assert error_line(err) == (f"wkdist: error: {config}: not valid TOML (not UTF-8: byte "
                                   "0xe9 at line 17)")


def test_lambda_max_far_too_large_is_warned_and_priced(tmp_path):
    """lambda_max 20 on 20 molecules: the plan's cost grows with lambda_max instead of saying
    "about 0 s", and reading the config warns with the factor."""
    from wkdist.app.config import lambda_cost

    config = make_case(tmp_path)
    status, small, err = wkdist("plan", config)
    assert status == 0 and "lambda_max" not in err, err
    config.write_text(config.read_text().replace("lambda_max = 2", "lambda_max = 20"))
    status, large, err = wkdist("plan", config)
    assert status == 0, err
    assert "[kernel] lambda_max = 20: each structure pair costs about 251,881 times" in err
    assert "measured at lambda_max 3, scaled by x2.52e+05 for lambda_max 20" in large
    kernels = [line for line in large.splitlines() if line.startswith("cost: kernels")]
    assert kernels and "about 0 s" not in kernels[0]
    assert " min on " in kernels[0] or " h on " in kernels[0], kernels[0]  # minutes, at least
    assert lambda_cost(3) == 1.0 and lambda_cost(6) == pytest.approx(66, rel=0.01)
    assert lambda_cost(9) / lambda_cost(6) == pytest.approx(12.4 / 0.63, rel=0.5)
