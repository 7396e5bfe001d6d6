"""wkdist: Wigner kernels and kernel ridge regression at data-set scale."""

from .engine import equivariant_structure_kernels, structure_kernels
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
from .settings import KernelSettings

__version__ = "0.1.0"

__all__ = [
    "KernelSettings",
    "structure_kernels",
    "equivariant_structure_kernels",
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
