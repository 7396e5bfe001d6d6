"""`wkdist tune`: the kernel-hyperparameter search (wkdist/app/tune.py), end to end on tiny data.

The data: 60 random H/C/O molecules of 3-6 atoms whose target is generated from a Wigner
kernel of known gaussian_width (0.2 Å): y = (K^1 + K^2 / 2)(x, anchors) @ w over 8 anchor
molecules, scaled to unit spread. The search must find that width (within the grid spacing)
through the real command: a LocalCluster, the tiled kernel graph, the per-element baseline and
the (c0, a, b) cross-validation of `wkdist fit`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from store_helpers import ASE_SHAPE_WARNING, random_atoms

from wkdist import KernelSettings, structure_kernels
from wkdist.app.config import load_config
from wkdist.cli import main

pytestmark = ASE_SHAPE_WARNING

TRUE_WIDTH = 0.2
KERNEL = {"cutoff": 3.0, "nu_max": 2, "lambda_max": 1, "cutoff_smoothing": 0.5,
          "decay_length": 1.0}
N_TRAIN, N_TEST = 48, 12
GRID = 'gaussian_width = {range = [0.05, 0.8], scale = "log", points = 5}'  # 0.05 .. 0.8, x2


def make_data(directory: Path) -> None:
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = random_atoms(N_TRAIN + N_TEST, seed=3)
    K = structure_kernels(frames, settings=KernelSettings(gaussian_width=TRUE_WIDTH, **KERNEL))
    mixed = K[..., 1] + K[..., 2] / 2
    y = mixed[:, :8] @ np.random.default_rng(1).normal(size=8)
    y /= y.std()
    for atoms, value in zip(frames, y):
        atoms.calc = SinglePointCalculator(atoms, energy=float(value))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting the shape on a NumPy array",
                                category=DeprecationWarning)
        ase.io.write(directory / "mols.xyz", frames, format="extxyz")


def write_config(directory: Path, tune: list[str], *, name: str = "config.toml",
                 kernel: dict | None = None, fit: tuple[str, ...] = ()) -> Path:
    kernel = {**KERNEL, "gaussian_width": 0.03, **(kernel or {})}
    lines = ["[data]", 'path = "mols.xyz"', 'target = "energy"', f"n_train = {N_TRAIN}",
             f"n_test = {N_TEST}", "seed = 0", 'unit = "eV"', "[kernel]",
             *(f"{k} = {json.dumps(v)}" for k, v in kernel.items()),
             "[compute]", "tile_size = 16", "workers = 2", "threads_per_worker = 1",
             "[store]", 'path = "store"', "[fit]", "folds = 4", *fit, "[tune]", *tune]
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return path


def wkdist(*argv) -> tuple[int, str]:
    """``wkdist.cli.main`` in this process; returns (status, stderr)."""
    logger = logging.getLogger("wkdist")
    saved = logger.handlers[:]
    logger.handlers[:] = []
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            status = main([str(a) for a in argv])
    finally:
        logger.handlers[:] = saved
    return status, err.getvalue()


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def settings_of(row: dict[str, str]) -> tuple:
    return tuple(row[name] for name in KernelSettings.field_names())


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tune")
    make_data(directory)
    return directory


@pytest.fixture(scope="module")
def search(case) -> Path:
    """One full search (5 grid points + 2 refinement candidates), shared by the module."""
    config = write_config(case, [GRID, f"n_search = {N_TRAIN}", "folds = 4", "seed = 0",
                                 "refine_rounds = 1"])
    status, err = wkdist("tune", config, "--out", case / "search")
    assert status == 0, err
    return case / "search"


# --------------------------------------------------------------------------- the search


def test_recovers_the_true_width(search):
    rows = read_rows(search / "tune.csv")
    assert [r["phase"] for r in rows] == ["grid"] * 5 + ["refine1"] * 2
    assert len({settings_of(r) for r in rows}) == len(rows)  # no candidate twice
    best = min(rows, key=lambda r: float(r["cv_mae"]))
    width = float(best["gaussian_width"])
    assert TRUE_WIDTH / 2 < width < TRUE_WIDTH * 2  # within one grid spacing (a factor 2)
    wrong = next(r for r in rows if float(r["gaussian_width"]) == 0.05)
    assert float(best["cv_mae"]) < 0.5 * float(wrong["cv_mae"])
    for row in rows:  # every candidate carries its chosen mixing and timing
        assert math.isfinite(float(row["a"])) and float(row["seconds"]) > 0
        assert row["kernels"] == "computed"


def test_outputs_and_best_config(search):
    rows = read_rows(search / "tune.csv")
    best = min(rows, key=lambda r: float(r["cv_mae"]))
    config = load_config(search / "best.toml")
    assert config.kernel == KernelSettings(**{**KERNEL, "gaussian_width":
                                              float(best["gaussian_width"])})
    assert Path(config.store.path).resolve() == (search / "store").resolve()
    assert "tune" in config.sections and not config["tune"].space  # a plain run config
    assert (search / "tune.png").stat().st_size > 1000
    state = json.loads((search / "tune_state.json").read_text())
    assert state["finished"] and state["stop"] == "complete"
    assert len(state["inputs"]["search_index"]) == N_TRAIN
    assert len(list((search / "stores").iterdir())) == len(rows)


def test_best_toml_runs_unchanged(search, tmp_path):
    best = tmp_path / "best"
    shutil.copytree(search, best, ignore=shutil.ignore_patterns("stores"))
    status, err = wkdist("run", best / "best.toml", "--out", tmp_path / "run", "--quiet")
    assert status == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["kernel"] == load_config(best / "best.toml").kernel.to_dict()
    assert results["n_train"] == N_TRAIN and math.isfinite(results["mae"])


def test_reproducible_under_a_budget(case, search):
    """Same seed: the same candidates in the same order with the same CV errors; the budget
    stops the search after max_candidates, and a stopped search is still a finished one."""
    config = write_config(case, [GRID, f"n_search = {N_TRAIN}", "folds = 4", "seed = 0",
                                 "refine_rounds = 1", "max_candidates = 3"], name="budget.toml")
    status, err = wkdist("tune", config, "--out", case / "budget")
    assert status == 0, err
    assert "max_candidates = 3 reached" in err
    again = read_rows(case / "budget" / "tune.csv")
    first = read_rows(search / "tune.csv")[:3]
    assert [settings_of(r) for r in again] == [settings_of(r) for r in first]
    assert [r["cv_mae"] for r in again] == [r["cv_mae"] for r in first]
    assert (case / "budget" / "best.toml").exists()


def test_interrupted_search_resumes_without_repeating(case, search, monkeypatch):
    from wkdist.krr import hyper

    config = write_config(case, [GRID, f"n_search = {N_TRAIN}", "folds = 4", "seed = 0",
                                 "refine_rounds = 1", "max_candidates = 4"], name="resume.toml")
    out = case / "resume"
    real = hyper.fit_mixing
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(hyper, "fit_mixing", interrupted)
    status, err = wkdist("tune", config, "--out", out)
    assert status == 2 and "interrupted" in err
    done = read_rows(out / "tune.csv")
    assert len(done) == 2 and not (out / "best.toml").exists()
    assert not json.loads((out / "tune_state.json").read_text())["finished"]

    counted = []

    def counting(*args, **kwargs):
        counted.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hyper, "fit_mixing", counting)
    status, err = wkdist("tune", config, "--out", out)
    assert status == 0, err
    assert len(counted) == 2  # only the candidates not yet evaluated
    rows = read_rows(out / "tune.csv")
    assert rows[:2] == done  # kept as they were, timings included
    assert [settings_of(r) for r in rows] == [settings_of(r) for r in
                                              read_rows(search / "tune.csv")[:4]]
    assert rows[2]["kernels"] == "reused"  # its tiles were done before the interrupt

    status, err = wkdist("tune", config, "--out", out)  # finished: nothing to evaluate
    assert status == 0 and len(counted) == 2
    assert read_rows(out / "tune.csv") == rows


def test_nu_max_candidates_share_one_kernel_store(case):
    config = write_config(case, ["gaussian_width = [0.2]", "nu_max = [1, 2]",
                                 "n_search = 24", "folds = 3"], name="nu.toml")
    status, err = wkdist("tune", config, "--out", case / "nu")
    assert status == 0, err
    rows = read_rows(case / "nu" / "tune.csv")
    assert [(r["nu_max"], r["kernels"]) for r in rows] == [("1", "computed"), ("2", "reused")]
    assert len(list((case / "nu" / "stores").iterdir())) == 1
    assert float(rows[0]["b"]) > 0


def test_a_damaged_kernel_tile_is_found_on_read_and_recomputed(case):
    """A candidate store's K_train chunk with a flipped byte: the rerun search finds it at the
    moment it reads the kernels, unmarks and recomputes the tile, and scores the same."""
    config = write_config(case, ["gaussian_width = [0.2]", "n_search = 24", "folds = 3"],
                          name="damage.toml")
    status, err = wkdist("tune", config, "--out", case / "damage")
    assert status == 0, err
    [before] = read_rows(case / "damage" / "tune.csv")
    [store] = list((case / "damage" / "stores").iterdir())
    chunk = store / "K_train" / "c" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (case / "damage" / "tune_state.json").unlink()  # evaluate the candidate again
    status, err = wkdist("tune", config, "--out", case / "damage")
    assert status == 0, err
    assert "recomputing it" in err and "K_train" in err
    [after] = read_rows(case / "damage" / "tune.csv")
    assert after["kernels"] == "computed"
    assert float(after["cv_mae"]) == pytest.approx(float(before["cv_mae"]), rel=1e-12)


def test_free_mixing_is_searched_as_fit_searches_it(case):
    """[fit] mixing = "free": the candidates are scored with the per-order coefficients fit
    would choose (never a worse CV error than the exponential mixing on the same kernels), and
    best.toml keeps the mixing."""
    tune = ["gaussian_width = [0.2]", "n_search = 24", "folds = 3"]
    exponential = write_config(case, tune, name="exp.toml")
    free = write_config(case, tune, name="free.toml", fit=('mixing = "free"',))
    status, err = wkdist("tune", exponential, "--out", case / "exp")
    assert status == 0, err
    status, err = wkdist("tune", free, "--out", case / "free")
    assert status == 0, err
    [row_exp] = read_rows(case / "exp" / "tune.csv")
    [row_free] = read_rows(case / "free" / "tune.csv")
    assert float(row_free["cv_mae"]) <= float(row_exp["cv_mae"]) * (1 + 1e-9)
    assert math.isnan(float(row_free["b"])) and float(row_exp["b"]) > 0
    assert load_config(case / "free" / "best.toml")["fit"].mixing == "free"
    assert load_config(case / "exp" / "best.toml")["fit"].mixing == "exponential"
    assert "lambda = 0: coefficients" in (case / "free" / "best.toml").read_text()


def test_a_different_search_in_the_same_directory_is_refused(case, search, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(search, out)
    config = write_config(case, [GRID, f"n_search = {N_TRAIN}", "folds = 3"], name="other.toml")
    status, err = wkdist("tune", config, "--out", out)
    assert status == 2 and "another configuration" in err


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("tune, expected", [
    (["foo = [1.0, 2.0]"], "[tune] foo: unknown key"),
    (["gaussian_width = {range = [0.3, 0.1]}"], "low < high"),
    (["gaussian_width = {range = [0.1, 0.1]}"], "low < high"),
    (["gaussian_width = []"], "non-empty array"),
    (["gaussian_width = {range = [0.1, 0.3], scale = \"cubic\"}"], "scale"),
    (["gaussian_width = [-0.1, 0.2]"], "[tune] gaussian_width: the kernel refuses -0.1"),
    (["cutoff_smoothing = [0.5, 4.0]"], "[tune] cutoff_smoothing: the kernel refuses 4.0"),
    (["cutoff = [2.0, 3.0]", "cutoff_smoothing = [2.5]"], "combination"),
    (["radial_weight = [\"exp\", \"gauss\"]"], "radial_weight"),
    (["nu_max = [0, 2]"], "nu_max"),
    (["gaussian_width = [0.1]", f"n_search = {N_TRAIN + 1}"], "n_search"),
    (["gaussian_width = [0.1]", "max_candidates = 0"], "max_candidates"),
    (["gaussian_width = [0.1]", "max_seconds = 0"], "max_seconds"),
    (["gaussian_width = [0.1]", "folds = 1"], "folds"),
    (["n_search = 10"], "at least one kernel setting"),
])
def test_bad_tune_input_exits_2_with_one_line(case, tmp_path, tune, expected):
    config = write_config(case, tune, name=f"bad{abs(hash(tuple(tune)))}.toml")
    out = tmp_path / "out"
    status, err = wkdist("tune", config, "--out", out)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wkdist: error:"), err
    assert expected in lines[0]
    assert not out.exists()  # nothing claims a search, finished or not


# --------------------------------------------------------------------------- vector and tensor


XTB_NAMES = ["H2O", "NH3", "CH3OH", "H2CO", "HCN", "CH3CHO", "HCOOH", "CH3NO2", "CH3CN",
             "CH3CH2OH"]
XTB_KERNEL = {"cutoff": 3.0, "nu_max": 2, "lambda_max": 2, "cutoff_smoothing": 0.5}
XTB_TRAIN, XTB_TEST, XTB_FOLDS = 24, 6, 4


def write_xtb_config(directory: Path, target: str, tune: list[str], *, name: str) -> Path:
    lines = ["[data]", 'path = "xtb.xyz"', f'target = "{target}"', f"n_train = {XTB_TRAIN}",
             f"n_test = {XTB_TEST}", "seed = 0", "[kernel]",
             *(f"{k} = {json.dumps(v)}" for k, v in XTB_KERNEL.items()),
             "[compute]", "tile_size = 12", "workers = 2", "threads_per_worker = 1",
             "[store]", 'path = "store"', "[fit]", f"folds = {XTB_FOLDS}",
             "[tune]", f"n_search = {XTB_TRAIN}", f"folds = {XTB_FOLDS}", "refine_rounds = 0",
             *tune]
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def xtb_case(tmp_path_factory) -> tuple[Path, list]:
    """30 jittered small molecules with GFN2-xTB dipoles (debye) and polarizabilities
    (bohr^3, 9 numbers in atoms.info["alpha"])."""
    pytest.importorskip("tblite")
    import ase.io
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    from wkdist.data.xtb import xtb_dipoles, xtb_polarizabilities

    directory = tmp_path_factory.mktemp("xtb")
    rng = np.random.default_rng(5)
    frames = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting the shape on a NumPy array",
                                category=DeprecationWarning)
        for i in range(XTB_TRAIN + XTB_TEST):
            atoms = molecule(XTB_NAMES[i % len(XTB_NAMES)])
            atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
            frames.append(atoms)
        dipoles, alphas = xtb_dipoles(frames), xtb_polarizabilities(frames)
        for atoms, mu, alpha in zip(frames, dipoles, alphas):
            atoms.calc = SinglePointCalculator(atoms, dipole=mu)
            atoms.info["alpha"] = alpha.reshape(9)
        ase.io.write(directory / "xtb.xyz", frames, format="extxyz")
    return directory, ase.io.read(directory / "xtb.xyz", index=":")


def dense_cv_parts(frames: list, settings: KernelSettings, parts: dict, coefficients: dict
                   ) -> dict[int, np.ndarray]:
    """CV predictions per structure of each part (n, 2 lambda + 1), from kernels computed here
    by the engine and a dense solve per fold of the split fit_mixing uses."""
    from wkdist import equivariant_structure_kernels
    from wkdist.krr.hyper import kfold_splits

    n = len(frames)
    out = {}
    for lam, y in parts.items():
        d = 2 * lam + 1
        if lam == 0:
            K = structure_kernels(frames, settings=settings).transpose(2, 0, 1)
        else:
            K = equivariant_structure_kernels(frames, settings=settings, lam=lam)
            K = K.transpose(2, 0, 3, 1, 4).reshape(-1, n * d, n * d)
        mixed = np.tensordot(coefficients[lam], K, axes=1)
        y = np.asarray(y).reshape(-1)
        predicted = np.empty(n * d)
        for train, val in kfold_splits(n, XTB_FOLDS, 0):
            t = (train[:, None] * d + np.arange(d)).reshape(-1)
            v = (val[:, None] * d + np.arange(d)).reshape(-1)
            alpha = scipy.linalg.solve(mixed[np.ix_(t, t)] + np.eye(len(t)), y[t])
            predicted[v] = mixed[np.ix_(v, t)] @ alpha
        out[lam] = predicted.reshape(n, d)
    return out


def tune_rows(directory: Path, config: Path) -> tuple[list[dict[str, str]], str, list[int]]:
    status, err = wkdist("tune", config, "--out", directory)
    assert status == 0, err
    state = json.loads((directory / "tune_state.json").read_text())
    return read_rows(directory / "tune.csv"), err, state["inputs"]["search_index"]


def coefficients_of(c0: float, a: float, b: float) -> np.ndarray:
    return np.array([c0] + [a * b ** nu / math.factorial(nu)
                            for nu in range(1, XTB_KERNEL["nu_max"] + 1)])


def test_tune_vector_target_scores_the_mean_error_norm(xtb_case, tmp_path):
    """Dipoles: (a, b) of the lambda = 1 part by CV, each candidate scored by the mean norm of
    a structure's CV error (checked against a dense computation); best.toml runs unchanged."""
    from wkdist.engine.targets import to_spherical

    directory, frames = xtb_case
    config = write_xtb_config(directory, "dipole", ["gaussian_width = [0.1, 0.3]"],
                              name="dipole.toml")
    rows, err, index = tune_rows(directory / "dipole", config)
    assert len(rows) == 2 and "CV mean error norm" in err and "CV MAE" not in err
    assert all(float(r["c0"]) == 0.0 and float(r["a"]) > 0 for r in rows)
    chosen = [frames[i] for i in index]
    mu = np.array([atoms.calc.results["dipole"] for atoms in chosen])
    for row in rows:
        settings = KernelSettings(**{**XTB_KERNEL, "gaussian_width": float(row["gaussian_width"])})
        c = {1: coefficients_of(0.0, float(row["a"]), float(row["b"]))}
        predicted = dense_cv_parts(chosen, settings, to_spherical(mu, "vector"), c)[1]
        norms = np.linalg.norm(predicted - to_spherical(mu, "vector")[1], axis=1)
        assert float(row["cv_mae"]) == pytest.approx(np.mean(norms), rel=1e-8)
        assert np.mean(norms) < 0.5 * np.mean(np.linalg.norm(mu, axis=1))  # it learned
    best = min(rows, key=lambda r: float(r["cv_mae"]))
    assert load_config(directory / "dipole" / "best.toml").kernel.gaussian_width == float(
        best["gaussian_width"])
    status, err = wkdist("run", directory / "dipole" / "best.toml", "--out", tmp_path / "run",
                         "--quiet")
    assert status == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["target_kind"] == "vector" and math.isfinite(results["mae"])


def test_tune_tensor_target_scores_the_frobenius_error_norm(xtb_case):
    """Polarizabilities: each part's (a, b) by CV; the score is the mean Frobenius norm of the
    3 x 3 CV error, here rebuilt in Cartesian form from dense per-part predictions."""
    from wkdist.engine.targets import from_spherical, tensor_matrices, to_spherical
    from wkdist.krr.hyper import element_counts, species_baseline

    directory, frames = xtb_case
    config = write_xtb_config(directory, "alpha", ["gaussian_width = [0.3]", "nu_max = [1, 2]"],
                              name="alpha.toml")
    rows, err, index = tune_rows(directory / "alpha", config)
    assert len(rows) == 2 and "CV mean error norm" in err
    chosen = [frames[i] for i in index]
    alpha = np.array([atoms.info["alpha"] for atoms in chosen])
    stored = alpha.reshape(-1, 3, 3)[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]
    parts = to_spherical(stored, "tensor")
    counts, symbols = element_counts([a.get_chemical_symbols() for a in chosen])
    weights = species_baseline(counts, parts[0], symbols)
    baseline = counts @ np.array([weights[s] for s in symbols])
    parts[0] = parts[0] - baseline
    for row in rows:
        nu_max = int(row["nu_max"])
        settings = KernelSettings(**{**XTB_KERNEL, "gaussian_width": 0.3, "nu_max": nu_max})
        c = {0: coefficients_of(float(row["c0"]), float(row["a"]), float(row["b"])),
             2: coefficients_of(0.0, float(row["a_lambda2"]), float(row["b_lambda2"]))}
        c = {lam: v[:nu_max + 1] for lam, v in c.items()}
        predicted = dense_cv_parts(chosen, settings, parts, c)
        predicted[0] = predicted[0][:, 0] + baseline
        error = tensor_matrices(from_spherical(predicted, "tensor")) - alpha.reshape(-1, 3, 3)
        frobenius = np.linalg.norm(error, axis=(1, 2))
        assert float(row["cv_mae"]) == pytest.approx(np.mean(frobenius), rel=1e-8)
        assert float(row["cv_rmse"]) == pytest.approx(
            np.sqrt(np.mean(frobenius ** 2) / 6), rel=1e-8)
    header = (directory / "alpha" / "best.toml").read_text().splitlines()[1]
    assert "lambda = 0: c0" in header and "lambda = 2: a" in header
    assert load_config(directory / "alpha" / "best.toml").kernel.lambda_max == 2


def test_tune_refuses_a_lambda_max_below_the_target(xtb_case, tmp_path):
    directory, _ = xtb_case
    config = write_xtb_config(directory, "alpha", ["lambda_max = [1, 2]"], name="low.toml")
    status, err = wkdist("tune", config, "--out", tmp_path / "low")
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, err
    assert lines[0] == ("wkdist: error: [tune] lambda_max: a tensor target 'alpha' needs "
                        "lambda_max >= 2, got 1")
    assert not (tmp_path / "low").exists()


def test_best_toml_keeps_every_key_of_the_config(tmp_path):
    """best.toml is the user's document edited: [kernel] replaced, [store] moved, data paths
    made absolute, [tune] and [fit] coefficients dropped; every other key, however rare, kept."""
    import tomllib

    from wkdist.app.tune import config_toml

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "train.xyz").write_text("")
    (tmp_path / "sub" / "test.xyz").write_text("")
    source = tmp_path / "config.toml"
    source.write_text(
        '[data]\ntrain = "sub/train.xyz"\ntest = "sub/test.xyz"\ntarget = "U"\nunit = "eV"\n'
        "[kernel]\ncutoff = 4.5\nnu_max = 3\n"
        '[compute]\ntile_size = 64\nworkers = 3\nthreads_per_worker = 2\n'
        'dashboard_address = ":0"\n'
        '[store]\npath = "elsewhere.zarr"\n'
        '[fit]\nregularization = 0.01\nfolds = 4\nseed = 9\nmode = "kfold"\n'
        'baseline = false\nmax_search = 123\nlearning_curve = [10, 20]\n'
        "coefficients = [1.0, 0.5, 0.25, 0.125]\n"
        "[tune]\ncutoff = [4.0, 5.0]\nfolds = 3\n")
    config = load_config(source)
    winner = KernelSettings(cutoff=5.0, nu_max=3, gaussian_width=0.07)
    text = config_toml(config, winner, header=["first line", "second"])
    assert text.startswith("# first line\n# second\n")
    written = tomllib.loads(text)
    expected = tomllib.loads(source.read_text())
    del expected["tune"], expected["fit"]["coefficients"]
    expected["kernel"] = winner.to_dict()
    expected["store"]["path"] = "store"
    for key in ("train", "test"):
        expected["data"][key] = str((tmp_path / "sub" / f"{key}.xyz").resolve())
    assert written == expected
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "best.toml").write_text(text)
    again = load_config(tmp_path / "out" / "best.toml")
    assert again.kernel == winner and again["fit"].max_search == 123
