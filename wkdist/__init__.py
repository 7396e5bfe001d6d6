"""wkdist: Wigner kernels and kernel ridge regression at data-set scale.

The engine is imported lazily so that ``import wkdist.kernels`` (numba on plain arrays) pulls
in neither ase nor dask nor zarr.
"""

import importlib as _importlib

from .engine.settings import REFERENCE_QM9, KernelSettings
from .errors import (
    ConfigError,
    DataError,
    MissingTilesError,
    NotPositiveDefiniteError,
    SettingsError,
    StoreError,
    StructureError,
    WkdistError,
)

__version__ = "0.2.0"

_LAZY = {
    "structure_kernels": "wkdist.engine.api",
    "equivariant_structure_kernels": "wkdist.engine.api",
    "WignerKernelRidge": "wkdist.app.estimator",
    "WignerCalculator": "wkdist.app.estimator",
    "read_kernels": "wkdist.tiled.store",
}

__all__ = [
    "KernelSettings",
    "REFERENCE_QM9",
    "structure_kernels",
    "equivariant_structure_kernels",
    "WignerKernelRidge",
    "WignerCalculator",
    "read_kernels",
    "WkdistError",
    "SettingsError",
    "StructureError",
    "ConfigError",
    "DataError",
    "StoreError",
    "MissingTilesError",
    "NotPositiveDefiniteError",
    "__version__",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wkdist' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public API only, lazy names included: help(wkdist) lists what dir() returns, and
    # submodules imported along the way (errors, settings, kernels) are not part of it.
    return sorted(__all__)
