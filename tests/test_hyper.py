"""Choosing the kernel mixing by cross-validation (wkdist.krr.hyper), the element baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize

from wkdist.krr import hyper


def _synthetic(n, seed, *, c0=0.5, a=2.0, b=0.7, nu_max=3, noise=1.0, with_k0=True):
    """PSD K^nu from random features (Schur products of PSD matrices), y drawn from the GP with
    the known mixing plus noise of variance ~ the regularization."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5))
    z = rng.integers(0, 4, size=(n, 3)).astype(float)  # "element counts"
    counts = z @ z.T
    g = np.exp(-0.1 * ((x[:, None] - x[None]) ** 2).sum(-1))
    k = np.stack([counts if with_k0 else np.zeros_like(counts)]
                 + [g ** nu * counts for nu in range(1, nu_max + 1)])
    kt = np.tensordot(hyper.mixing_coefficients(c0 if with_k0 else 0.0, a, b, nu_max), k, 1)
    y = np.linalg.cholesky(kt + 1e-8 * np.eye(n)) @ rng.standard_normal(n)
    return k, y + noise * rng.standard_normal(n)


def test_mixing_coefficients():
    np.testing.assert_allclose(hyper.mixing_coefficients(0.3, 2.0, 1.5, 3),
                               [0.3, 3.0, 2.0 * 1.5 ** 2 / 2, 2.0 * 1.5 ** 3 / 6])


def test_reported_error_is_the_cholesky_cv_error_and_beats_the_truth():
    k, y = _synthetic(80, 1)
    result = hyper.fit_mixing(k, y, folds=5, seed=3)
    splits = hyper.kfold_splits(80, 5, 3)
    direct = hyper.cv_error(k, y, result.coefficients, splits=splits)
    assert direct == pytest.approx(result.cv_mae, rel=1e-12)
    assert hyper.cv_error(k, y, result.coefficients, splits=splits, loss="rmse") == \
        pytest.approx(result.cv_rmse, rel=1e-12)
    truth = hyper.cv_error(k, y, hyper.mixing_coefficients(0.5, 2.0, 0.7, 3), splits=splits)
    assert result.cv_mae <= truth
    np.testing.assert_allclose(result.coefficients,
                               hyper.mixing_coefficients(result.c0, result.a, result.b, 3))
    assert result.folds == 5 and result.mode == "kfold" and result.n_used == 80
    assert result.to_dict()["coefficients"] == list(result.coefficients)


def test_at_least_as_good_as_grid_and_dual_annealing():
    k, y = _synthetic(50, 7)
    splits = hyper.kfold_splits(50, 5, 0)
    result = hyper.fit_mixing(k, y, folds=5, seed=0)

    def objective(x):
        c = hyper.mixing_coefficients(10 ** x[0], 10 ** x[1], 10 ** x[2], 3)
        return hyper.cv_error(k, y, c, splits=splits)

    annealed = scipy.optimize.dual_annealing(objective, bounds=[(-4, 3), (-3, 4), (-2, 2)],
                                             seed=0, maxfun=1500)
    assert result.cv_mae <= annealed.fun * (1 + 1e-9)
    grid = min(objective((lc, la, lb)) for lc in np.arange(-4, 3.1, 1.0)
               for la in np.arange(-3, 4.1, 1.0) for lb in np.arange(-2, 2.1, 0.5))
    assert result.cv_mae <= grid * (1 + 1e-9)
    assert result.evaluations < annealed.nfev / 5  # and with far fewer evaluations


def test_reproducible_with_a_seed_and_multi_column_targets():
    k, y = _synthetic(60, 2)
    y2 = np.stack([y, 0.5 * y + 0.1], axis=1)
    first = hyper.fit_mixing(k, y2, folds=4, seed=11)
    second = hyper.fit_mixing(k, y2, folds=4, seed=11)
    assert first.coefficients == second.coefficients and first.cv_mae == second.cv_mae
    splits = hyper.kfold_splits(60, 4, 11)
    assert hyper.cv_error(k, y2, first.coefficients, splits=splits) == \
        pytest.approx(first.cv_mae, rel=1e-12)


def test_holdout_mode_and_subsample():
    k, y = _synthetic(120, 4)
    result = hyper.fit_mixing(k, y, mode="holdout", holdout_fraction=0.25, seed=5, max_size=100)
    assert result.mode == "holdout" and result.folds == 1 and result.n_used == 100
    subset = np.sort(np.random.default_rng(5).choice(120, size=100, replace=False))
    ks, ys = k[:, subset][:, :, subset], y[subset]
    split = hyper.holdout_split(100, 0.25, 5)
    assert len(split[0][1]) == 25
    assert hyper.cv_error(ks, ys, result.coefficients, splits=split) == \
        pytest.approx(result.cv_mae, rel=1e-12)
    truth = hyper.cv_error(ks, ys, hyper.mixing_coefficients(0.5, 2.0, 0.7, 3), splits=split)
    assert result.cv_mae <= truth


def test_without_k0_c0_is_zero():
    k, y = _synthetic(60, 3, with_k0=False)
    result = hyper.fit_mixing(k, y, folds=5, seed=0)
    assert result.c0 == 0.0 and result.coefficients[0] == 0.0
    splits = hyper.kfold_splits(60, 5, 0)
    truth = hyper.cv_error(k, y, hyper.mixing_coefficients(0.0, 2.0, 0.7, 3), splits=splits)
    assert result.cv_mae <= truth


def test_bad_inputs():
    k, y = _synthetic(20, 0)
    with pytest.raises(ValueError, match="mode"):
        hyper.fit_mixing(k, y, mode="bayes")
    with pytest.raises(ValueError, match="y: expected shape"):
        hyper.fit_mixing(k, y[:-1])
    with pytest.raises(ValueError, match="folds"):
        hyper.fit_mixing(k, y, folds=1)


def test_species_baseline_recovers_weights_exactly():
    rng = np.random.default_rng(0)
    symbols = ["H", "C", "N", "O", "F"]
    structures = [list(rng.choice(symbols, size=rng.integers(3, 20))) for _ in range(200)]
    counts, found = hyper.element_counts(structures, symbols)
    assert found == symbols and counts.sum() == sum(map(len, structures))
    weights = {"H": -13.6, "C": -1029.8, "N": -1485.3, "O": -2042.6, "F": -2713.2}
    y = counts @ np.array([weights[s] for s in symbols])
    baseline = hyper.species_baseline(counts, y, symbols)
    assert set(baseline) == set(symbols)
    for s in symbols:
        assert baseline[s] == pytest.approx(weights[s], rel=1e-12, abs=1e-10)
    np.testing.assert_allclose(hyper.baseline_values(counts, baseline, symbols), y, rtol=1e-12)
    assert not hyper.baseline_values(counts, None, symbols).any()
    with pytest.raises(ValueError, match="scalar target"):
        hyper.species_baseline(counts, np.stack([y, y], 1), symbols)
    assert math.isfinite(sum(baseline.values()))


def test_free_mixing_is_never_worse_and_reports_its_own_cholesky_error():
    k, y = _synthetic(90, 4)
    splits = hyper.kfold_splits(90, 5, 2)
    exponential = hyper.fit_mixing(k, y, folds=5, seed=2)
    free = hyper.fit_mixing(k, y, folds=5, seed=2, mixing="free")
    assert free.mixing == "free" and free.b is None
    assert exponential.mixing == "exponential" and exponential.b > 0
    assert hyper.cv_error(k, y, free.coefficients, splits=splits) == pytest.approx(
        free.cv_mae, rel=1e-12)
    # it starts from the exponential optimum and only accepts improvements
    assert free.cv_mae <= exponential.cv_mae * (1 + 1e-9)
    # log coordinates: every coefficient positive, so the mixed kernel stays PSD
    assert np.all(np.array(free.coefficients) > 0)


def test_free_mixing_on_an_exponential_truth_matches_the_exponential_search():
    k, y = _synthetic(80, 1)
    exponential = hyper.fit_mixing(k, y, folds=5, seed=3)
    free = hyper.fit_mixing(k, y, folds=5, seed=3, mixing="free")
    assert exponential.cv_mae * 0.97 <= free.cv_mae <= exponential.cv_mae * (1 + 1e-9)


def test_free_mixing_without_k0_and_bad_value():
    k, y = _synthetic(60, 5, with_k0=False)
    free = hyper.fit_mixing(k, y, folds=4, seed=0, mixing="free")
    assert free.c0 == 0.0 and free.coefficients[0] == 0.0
    assert free.cv_mae <= hyper.fit_mixing(k, y, folds=4, seed=0).cv_mae * (1 + 1e-9)
    with pytest.raises(ValueError, match="mixing: expected 'exponential' or 'free', got 'x'"):
        hyper.fit_mixing(k, y, mixing="x")


@pytest.mark.parametrize("value", [0, 0.0, -1.0, float("nan"), float("inf"), True, "1"])
def test_regularization_has_one_rule_everywhere(value, tmp_path):
    """A finite number > 0 in the search, the tiled solve, the estimator and the config."""
    import zarr
    from store_helpers import random_atoms

    from wkdist import ConfigError, WignerKernelRidge
    from wkdist.app.config import parse_config
    from wkdist.krr.solve import cholesky_factor

    rng = np.random.default_rng(0)
    kernels = np.stack([np.eye(6)] * 3)
    with pytest.raises(ValueError, match="regularization: expected a finite number > 0"):
        hyper.fit_mixing(kernels, rng.normal(size=6), folds=2, regularization=value)
    group = zarr.open_group(tmp_path / "store", mode="w")
    group.create_array("K_train", data=kernels, chunks=(3, 6, 6))
    with pytest.raises(ValueError, match="regularization: expected a finite number > 0"):
        cholesky_factor(group, coefficients=[1.0, 1.0, 1.0], regularization=value)
    frames = random_atoms(3, seed=0)
    with pytest.raises(ValueError, match="regularization: expected a finite number > 0"):
        WignerKernelRidge(regularization=value).fit(frames, [1.0, 2.0, 3.0])
    document = {"data": {"source": "qm9", "n_train": 2, "n_test": 1}, "store": {"path": "s"},
                "fit": {"regularization": value}}
    with pytest.raises(ConfigError, match=r"\[fit\] regularization: expected a positive"):
        parse_config(document)


class _Memory:
    """A checkpoint kept in memory, as wkdist fit keeps one in the store."""

    def __init__(self, content=None):
        self.content = content
        self.saves = 0

    def load(self):
        return self.content

    def save(self, content):
        self.content = content
        self.saves += 1


@pytest.mark.parametrize("mixing", ["exponential", "free"])
def test_a_killed_search_resumes_from_its_checkpoint_to_the_same_result(mixing, monkeypatch):
    """A search started again with part of its evaluated shapes replays them without an
    eigendecomposition and ends bitwise where the uninterrupted search ended."""
    import scipy.linalg

    k, y = _synthetic(60, 7)
    options = dict(folds=4, seed=3, mixing=mixing, max_free=30)
    whole = _Memory()
    full = hyper.fit_mixing(k, y, checkpoint=whole, **options)
    assert whole.saves >= 1 and len(whole.content["cache"]) == full.evaluations
    partial = _Memory({"cache": whole.content["cache"][: full.evaluations // 2],
                       "history": whole.content["history"][: full.evaluations // 2]})
    calls = []
    original = scipy.linalg.eigh
    monkeypatch.setattr(scipy.linalg, "eigh", lambda *a, **kw: calls.append(1) or original(*a,
                                                                                         **kw))
    resumed = hyper.fit_mixing(k, y, checkpoint=partial, **options)
    assert resumed.coefficients == full.coefficients and resumed.cv_mae == full.cv_mae
    assert resumed.history == full.history
    # only the shapes after the checkpoint were evaluated again (4 folds each)
    assert len(calls) == 4 * (full.evaluations - full.evaluations // 2)
    calls.clear()
    again = hyper.fit_mixing(k, y, checkpoint=whole, **options)  # a finished search: no work
    assert calls == [] and again.coefficients == full.coefficients
