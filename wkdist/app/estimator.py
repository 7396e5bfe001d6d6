"""Wigner-kernel ridge regression from Python: a scikit-learn style estimator and an ASE calculator.

``WignerKernelRidge`` follows scikit-learn's conventions without importing it: the constructor
only stores its parameters, ``fit(frames, y)`` returns self, learned state ends in ``_``,
``get_params`` / ``set_params`` make ``sklearn.base.clone`` and ``GridSearchCV`` work, and
``score`` is R^2. Without ``store`` it fits in memory (dense kernels and a LAPACK Cholesky: a
few thousand structures). With ``store`` (a path) and ``fit(..., client=...)`` it goes the way of
``wkdist run``: the kernel tiles into that store on the client's workers (resumable), the
mixing search on at most ``max_search`` structures, the tiled Cholesky and solve. The fitted
model is the one ``wkdist run`` writes: ``save(path)`` writes the model directory that
``wkdist predict`` reads, ``load(path)`` reads one back, and the same baseline, mixing search
and algebra give the same predictions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ..engine.api import equivariant_structure_kernels, structure_kernels
from ..engine.settings import KernelSettings
from ..engine.targets import lambdas_of, normalize_targets, target_kind, to_spherical
from ..errors import DataError
from ..krr.hyper import check_regularization, element_counts, fit_mixing, species_baseline
from ..krr.model import Model, Part, baseline_values, load_model, save_model
from ..krr.solve import solve_dense
from .config import DEFAULT_TILE_SIZE

__all__ = ["WignerKernelRidge", "WignerCalculator"]

log = logging.getLogger(__name__)

_PARAMS = ("settings", "regularization", "folds", "mode", "mixing", "seed", "baseline",
           "max_search", "coefficients", "target", "unit", "store", "tile_size")


def _training_kernels(frames: Sequence[Atoms], settings: KernelSettings, lam: int) -> np.ndarray:
    """K^nu(train, train) as (nu_max + 1, n d, n d), rows as in the store (structure * d + mu)."""
    if lam == 0:
        return np.moveaxis(structure_kernels(frames, settings=settings), -1, 0)
    block = equivariant_structure_kernels(frames, frames, settings=settings, lam=lam)
    n, _, depth, d, _ = block.shape
    return block.transpose(2, 0, 3, 1, 4).reshape(depth, n * d, n * d)


def _targets(y: Any, name: str) -> np.ndarray:
    """(n,), (n, 3) or (n, 6) (tensors as xx, xy, xz, yy, yz, zz) from scalars, vectors,
    (n, 3, 3), (n, 9) or (n, 6) tensors."""
    y = np.asarray(y, dtype=np.float64)
    return normalize_targets(y.reshape(len(y), -1) if y.ndim > 2 else y, name=name)


class WignerKernelRidge:
    """Kernel ridge regression with Wigner kernels: y_hat(x) = b(x) + sum_j K_mix(x, x_j) alpha_j.

    Parameters
    ----------
    settings : KernelSettings or None
        Kernel settings; None means ``KernelSettings()`` (the defaults).
    regularization : float
        The ridge added to the diagonal of K_mix (fixed, as in the paper; the mixing's scale a
        plays the role of the ridge parameter).
    folds, mode, seed, max_search :
        How the mixing is chosen: ``folds``-fold CV (``mode="kfold"``) or one held-out part
        (``"holdout"``), with ``seed``, on at most ``max_search`` training structures.
    mixing : {"exponential", "free"}
        c_nu = a b^nu / nu! (the paper's mixing) or free per-order coefficients.
    baseline : bool
        Fit a per-element least-squares baseline b(x) first (scalar targets and tensor traces).
    coefficients : sequence of float or None
        c_0 .. c_nu_max given: no search (scalar targets only).
    target, unit : str
        Names recorded in a saved model.
    store : str or Path or None
        A kernel store directory: ``fit(frames, y, client=...)`` then computes the kernel tiles
        there on the client's workers and solves with the tiled Cholesky, as ``wkdist run``.
    tile_size : int
        Structures per kernel tile of the store.

    Attributes
    ----------
    model_ : wkdist.krr.model.Model
        The fitted model (weights, coefficients, baseline, training structures).
    coefficients_ : numpy.ndarray
        c_0 .. c_nu_max of the (first) part.
    alpha_ : numpy.ndarray
        KRR weights of the (first) part.
    baseline_ : dict or None
        {element symbol: weight}.
    search_ : list of dict
        The mixing search of each part (``MixingResult.to_dict()``), empty when coefficients
        were given.
    """

    def __init__(self, settings: KernelSettings | None = None, *, regularization: float = 1.0,
                 folds: int = 10, mode: str = "kfold", mixing: str = "exponential",
                 seed: int = 0, baseline: bool = True, max_search: int = 5000,
                 coefficients: Sequence[float] | None = None, target: str = "y",
                 unit: str | None = None, store: str | Path | None = None,
                 tile_size: int = DEFAULT_TILE_SIZE) -> None:
        self.settings = settings
        self.regularization = regularization
        self.folds = folds
        self.mode = mode
        self.mixing = mixing
        self.seed = seed
        self.baseline = baseline
        self.max_search = max_search
        self.coefficients = coefficients
        self.target = target
        self.unit = unit
        self.store = store
        self.tile_size = tile_size

    # ------------------------------------------------------------------ scikit-learn protocol

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters (scikit-learn's protocol)."""
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params: Any) -> WignerKernelRidge:
        """Set constructor parameters; returns self (scikit-learn's protocol)."""
        for name, value in params.items():
            if name not in _PARAMS:
                raise ValueError(f"{name}: not a parameter of WignerKernelRidge (expected one "
                                 f"of {', '.join(_PARAMS)})")
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self) -> Any:
        """A regressor on lists of structures (no 2-D array input), for scikit-learn's tools;
        only scikit-learn calls this, so it alone imports scikit-learn."""
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(estimator_type="regressor",
                    target_tags=TargetTags(required=True, multi_output=True),
                    regressor_tags=RegressorTags(),
                    input_tags=InputTags(two_d_array=False, allow_nan=False),
                    no_validation=True)

    def __repr__(self) -> str:
        defaults = WignerKernelRidge()
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if v != getattr(defaults, k)]
        return f"WignerKernelRidge({', '.join(changed)})"

    # ------------------------------------------------------------------ fit and predict

    def fit(self, frames: Sequence[Atoms], y: Any, *, client: Any = None) -> WignerKernelRidge:
        """Choose the mixing (unless ``coefficients`` were given) and solve for the weights.

        Parameters
        ----------
        frames : sequence of ase.Atoms
            The training structures (at least 2).
        y : array_like
            (n,) scalars, (n, 3) vectors or (n, 3, 3) / (n, 6) / (n, 9) symmetric tensors.
        client : distributed.Client or None
            With ``store``: the cluster that computes the kernel tiles and the tiled solve
            (required then).

        Returns
        -------
        WignerKernelRidge
            self, fitted.
        """
        frames = list(frames)
        y = _targets(y, "y")
        check_regularization(self.regularization)
        if len(frames) < 2:
            raise DataError(f"frames: expected at least 2 training structures, got {len(frames)}")
        if y.shape[0] != len(frames):
            raise DataError(f"y: expected {len(frames)} targets (one per structure), got "
                            f"{y.shape[0]}")
        if not np.all(np.isfinite(y)):
            raise DataError("y: expected finite targets, got NaN or infinite values")
        settings = self.settings if self.settings is not None else KernelSettings()
        kind = target_kind(y)
        if self.coefficients is not None and kind != "scalar":
            raise DataError("coefficients: given coefficients apply to scalar targets only")
        parts_y = to_spherical(y, kind)
        baseline = None
        if self.baseline and 0 in parts_y:
            counts, symbols = element_counts([a.get_chemical_symbols() for a in frames])
            baseline = species_baseline(counts, parts_y[0], symbols)
        b_train = baseline_values(frames, baseline)

        if self.store is not None:
            if client is None:
                raise DataError("client: a fit into a store (store=...) needs a Dask client; "
                                "give fit(frames, y, client=...) or store=None")
            parts, searches = self._fit_tiled(frames, y, parts_y, baseline, b_train, settings,
                                              client)
            self.model_ = Model.in_memory(parts=tuple(parts), kind=kind, train_frames=frames,
                                          settings=settings, target=self.target, unit=self.unit)
            self.search_ = searches
            return self
        parts, searches = [], []
        for lam in lambdas_of(kind):
            d = 2 * lam + 1
            rhs = parts_y[lam] - b_train if lam == 0 else parts_y[lam].reshape(-1)
            kernels = _training_kernels(frames, settings, lam)
            if self.coefficients is not None:
                coefficients = np.asarray(self.coefficients, dtype=np.float64)
                if coefficients.shape != (settings.nu_max + 1,):
                    raise DataError(f"coefficients: expected {settings.nu_max + 1} numbers "
                                    f"(c_0 .. c_nu_max), got {coefficients.size}")
            else:
                # the same subset rule as `wkdist fit`: the first max_search structures
                m = min(len(frames), self.max_search)
                result = fit_mixing(kernels[:, :m * d, :m * d], rhs[:m * d],
                                    folds=min(self.folds, m), seed=self.seed,
                                    regularization=self.regularization, mode=self.mode,
                                    block=d, mixing=self.mixing)
                coefficients = np.asarray(result.coefficients)
                searches.append({"lambda": lam, **result.to_dict()})
            alpha = solve_dense(kernels, rhs, coefficients=coefficients,
                                regularization=self.regularization)
            parts.append(Part(lam=lam, alpha=alpha, coefficients=coefficients,
                              regularization=float(self.regularization),
                              baseline=baseline if lam == 0 else None))
        self.model_ = Model.in_memory(parts=tuple(parts), kind=kind, train_frames=frames,
                            settings=settings, target=self.target, unit=self.unit)
        self.search_ = searches
        return self

    def _fit_tiled(self, frames: list[Atoms], y: np.ndarray, parts_y: dict[int, np.ndarray],
                   baseline: dict[str, float] | None, b_train: np.ndarray,
                   settings: KernelSettings, client: Any) -> tuple[list[Part], list[dict]]:
        """The way of ``wkdist run``: kernel tiles into ``store`` on the client's workers,
        the search on the first max_search structures, the tiled Cholesky and solve."""
        import zarr

        from ..krr.solve import fit_weights
        from ..tiled.store import strict_reads
        from ..tiled.tiles import kernel_array
        from .compute import compute_kernels
        from .config import ComputeConfig, Config, DataConfig, FitConfig, StoreConfig
        from .dataset import Dataset
        from .pipeline import search_mixing

        n = len(frames)
        dataset = Dataset(train_frames=frames, test_frames=[], y_train=y,
                          y_test=np.zeros((0,) + y.shape[1:]), train_index=np.arange(n),
                          test_index=np.zeros(0, dtype=np.int64), target=self.target,
                          unit=self.unit, sources=("frames", "frames"))
        fit = FitConfig(regularization=float(self.regularization), folds=self.folds,
                        mode=self.mode, mixing=self.mixing, seed=self.seed,
                        baseline=self.baseline, max_search=self.max_search,
                        coefficients=None if self.coefficients is None
                        else tuple(float(c) for c in self.coefficients))
        config = Config(data=DataConfig(), kernel=settings,
                        compute=ComputeConfig(tile_size=self.tile_size),
                        store=StoreConfig(path=Path(self.store)), sections={"fit": fit})
        compute_kernels(config, client=client, dataset=dataset, progress=False)
        group = zarr.open_group(zarr.storage.LocalStore(Path(self.store)), mode="r+")
        parts, searches = [], []
        with strict_reads():
            for lam, rhs in parts_y.items():
                rhs = rhs - b_train if lam == 0 else rhs.reshape(-1)
                chosen = search_mixing(group, rhs, fit, settings.nu_max, lam, client=client)
                if chosen["search"] is not None:
                    searches.append({"lambda": lam, **chosen["search"]})
                alpha, _ = fit_weights(group, rhs, coefficients=chosen["coefficients"],
                                       regularization=fit.regularization, client=client,
                                       kernel=kernel_array("train", lam))
                parts.append(Part(lam=lam, alpha=alpha,
                                  coefficients=np.asarray(chosen["coefficients"]),
                                  regularization=fit.regularization,
                                  baseline=baseline if lam == 0 else None))
        return parts, searches

    def _fitted(self) -> Model:
        model = getattr(self, "model_", None)
        if model is None:
            raise DataError("WignerKernelRidge: not fitted yet; call fit(frames, y) or load()")
        return model

    @property
    def coefficients_(self) -> np.ndarray:
        return self._fitted().coefficients

    @property
    def alpha_(self) -> np.ndarray:
        return self._fitted().alpha

    @property
    def baseline_(self) -> dict[str, float] | None:
        return self._fitted().baseline

    def predict(self, frames: Sequence[Atoms], *, allow_unseen_elements: bool = False,
                client: Any = None) -> np.ndarray:
        """Predict the target of new structures.

        Parameters
        ----------
        frames : sequence of ase.Atoms
            Structures to predict.
        allow_unseen_elements : bool
            The rule of ``wkdist predict``: a structure with an element no training structure
            has is NaN (logged with its position), unless this is true (then a zero kernel and
            a zero baseline weight for such elements).
        client : distributed.Client or None
            Compute the kernels block by block on its workers (in waves) instead of here.

        Returns
        -------
        numpy.ndarray
            (n,), (n, 3) or (n, 6) (tensors as xx, xy, xz, yy, yz, zz).
        """
        model = self._fitted()
        frames = list(frames)
        rows = model.unseen_rows(frames)
        if rows:
            log.warning("element(s) %s not in the training set: structures %s %s",
                        ", ".join(model.unseen_elements(frames)), rows,
                        "predicted with a zero kernel and baseline for them"
                        if allow_unseen_elements else "are NaN")
        return model.predict(frames, allow_unseen_elements=allow_unseen_elements, client=client)

    def score(self, frames: Sequence[Atoms], y: Any) -> float:
        """R^2 of the predictions over all components (scikit-learn's regressor score).

        Parameters
        ----------
        frames : sequence of ase.Atoms
            Structures with known targets.
        y : array_like
            Their targets, in any shape :meth:`fit` accepts.

        Returns
        -------
        float
            1 - sum (y - y_hat)^2 / sum (y - mean y)^2 (0 when y is constant).
        """
        predicted = self.predict(frames)
        y = _targets(y, "y").reshape(predicted.shape)
        residual = float(np.sum((y - predicted) ** 2))
        total = float(np.sum((y - y.mean(axis=0)) ** 2))
        return 1.0 - residual / total if total > 0 else 0.0

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write the model directory that ``wkdist predict`` reads (atomically).

        Parameters
        ----------
        path : str or Path
            The directory to write: a new path, or a model directory to replace.

        Returns
        -------
        Path
            The model directory.
        """
        model = self._fitted()
        try:
            package_version = version("wkdist")
        except PackageNotFoundError:  # a source tree without installed metadata
            from .. import __version__ as package_version
        return save_model(path, parts=model.parts, kind=model.kind,
                          train_frames=model.train_frames, settings=model.settings,
                          target=model.target, unit=model.unit, wkdist_version=package_version)

    @classmethod
    def load(cls, path: str | Path) -> WignerKernelRidge:
        """A fitted estimator from a model directory.

        Parameters
        ----------
        path : str or Path
            ``DIR/model`` of ``wkdist run --out DIR``, or a directory :meth:`save` wrote.

        Returns
        -------
        WignerKernelRidge
            Fitted, with the saved settings and regularization.
        """
        model = load_model(path)
        first = model.parts[0]
        estimator = cls(model.settings, regularization=first.regularization,
                        baseline=first.baseline is not None, target=model.target,
                        unit=model.unit)
        estimator.model_ = model
        estimator.search_ = []
        return estimator


class WignerCalculator(Calculator):
    """An ASE calculator giving the ``energy`` of a fitted scalar model.

    ``atoms.calc = WignerCalculator(WignerKernelRidge().fit(frames, energies))`` or
    ``WignerCalculator(WignerKernelRidge.load("runs/demo/model"))``; then
    ``atoms.get_potential_energy()``. Forces are not available (the model has no gradients).
    """

    implemented_properties = ["energy"]

    def __init__(self, model: WignerKernelRidge, **kwargs: Any) -> None:
        if model._fitted().kind != "scalar":
            raise DataError(f"WignerCalculator: expected a model of a scalar target, got a "
                            f"{model._fitted().kind} model")
        super().__init__(**kwargs)
        self.model = model

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.results["energy"] = float(self.model.predict([self.atoms])[0])
