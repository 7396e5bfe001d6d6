"""Every error wkdist raises on purpose.

Each class also inherits the built-in exception a caller would catch for the same problem, so
``except ValueError`` keeps working while ``except WkdistError`` catches everything of ours.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "WkdistError",
    "SettingsError",
    "StructureError",
    "ConfigError",
    "SlurmError",
    "DataError",
    "StoreError",
    "MissingTilesError",
    "DamagedTileError",
    "LockedError",
    "NotPositiveDefiniteError",
]


class WkdistError(Exception):
    """Base class of every error wkdist raises deliberately."""


class SettingsError(WkdistError, ValueError):
    """A kernel setting is out of its domain."""


class StructureError(WkdistError, ValueError):
    """An input structure cannot be used (empty, non-finite, overlapping atoms)."""


class ConfigError(WkdistError, ValueError):
    """A configuration file has an unknown key, a wrong type or an impossible value."""


class SlurmError(ConfigError):
    """SLURM cannot run the worker jobs as configured: no sbatch, a rejected option or
    partition, jobs pending beyond [compute] pending_timeout, or jobs dying before they start."""


class DataError(WkdistError, ValueError):
    """Input data (files, targets, splits) cannot be used."""


class StoreError(WkdistError, ValueError):
    """A zarr store is unusable, or belongs to other settings or data."""


class MissingTilesError(StoreError, KeyError):
    """Kernel tiles a step needs are not in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DamagedTileError(StoreError):
    """A stored tile's bytes do not match the checksum its completion marker recorded.

    Raised where the tile is read (often in a worker); ``marker`` names the marker the driver
    clears (``wkdist.tiled.checkpoint.unmark``) so the next run recomputes the tile: workers
    never write markers.
    """

    def __init__(self, message: str, marker: Any = None, kind: str = "kernel") -> None:
        super().__init__(message, marker, kind)
        self.marker = marker
        self.kind = kind  # "kernel" or "factor"

    def __str__(self) -> str:
        return str(self.args[0])


class LockedError(WkdistError, OSError):
    """Another live process holds the lock of a store or an output directory."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotPositiveDefiniteError(WkdistError, np.linalg.LinAlgError):
    """The regularized kernel matrix is not positive definite."""
