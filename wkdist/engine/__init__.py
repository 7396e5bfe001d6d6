"""The kernel engine: settings, structures, target types and the public kernel functions.

Layer 2 of the package (``wkdist.kernels`` below, ``wkdist.tiled`` above). The kernel
functions live in :mod:`wkdist.engine.api`, imported on first use so that reading the settings
does not load ase.
"""

import importlib as _importlib

__all__ = ["KernelSettings", "REFERENCE_QM9", "structure_kernels",
           "equivariant_structure_kernels"]

from .settings import REFERENCE_QM9, KernelSettings


def __getattr__(name: str) -> object:
    if name in ("structure_kernels", "equivariant_structure_kernels"):
        return getattr(_importlib.import_module("wkdist.engine.api"), name)
    raise AttributeError(f"module 'wkdist.engine' has no attribute {name!r}")
