"""Scalar, vector and symmetric-tensor targets and their irreducible (spherical) parts.

A target is fitted by one KRR model per irreducible part lambda (docs/mathematics.md):

=========  ==========================  ===================================================
kind       stored ``y`` (per structure)  parts fitted
=========  ==========================  ===================================================
scalar     ()                          lambda = 0: the value itself
vector     (3,) x, y, z                lambda = 1: (y, z, x), the real-harmonic order
tensor     (6,) xx, xy, xz, yy, yz, zz  lambda = 0: trace / sqrt(3); lambda = 2: five parts
=========  ==========================  ===================================================

The parts are the coordinates of the target in an orthonormal basis (Frobenius inner product
for tensors), so the map is an isometry and rotating a structure by Q maps part lambda by the
D^lambda(Q) of ``wkdist.kernels.harmonics`` (Y(Q r) = D Y(r)): exactly how the rows of the
equivariant kernels transform, so predictions rotate with their structures. The lambda = 2 basis
is B_m with x^T B_m x proportional to Y_2m(x) |x|^2, built from the same harmonics code so the
two conventions cannot drift apart.

Input: a tensor is given as 9 numbers (row-major 3 x 3) or as 6 numbers in the order
xx, xy, xz, yy, yz, zz (the order of predictions.csv). Nine numbers must be symmetric to
1e-8 relative to the largest entry; within that they are symmetrized, beyond it refused (an
antisymmetric part is a lambda = 1 pseudovector these models would silently drop).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import DataError
from ..kernels.harmonics import real_spherical_harmonics

__all__ = [
    "KINDS",
    "target_kind",
    "normalize_targets",
    "lambdas_of",
    "to_spherical",
    "from_spherical",
    "tensor_matrices",
    "column_suffixes",
    "target_errors",
]

KINDS = {1: "scalar", 3: "vector", 6: "tensor"}
_LAMBDAS = {"scalar": (0,), "vector": (1,), "tensor": (0, 2)}
_VECTOR_TO_SPHERICAL = (1, 2, 0)  # (y, z, x)
# upper triangle, row-major: the 6-number order of input files and predictions.csv
_TENSOR_SLOTS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
_SYMMETRY_TOLERANCE = 1e-8


def target_kind(y: np.ndarray) -> str:
    """"scalar", "vector" or "tensor" for normalized targets (n,), (n, 3) or (n, 6)."""
    y = np.asarray(y)
    components = 1 if y.ndim == 1 else y.shape[1]
    if y.ndim > 2 or components not in KINDS:
        raise DataError(f"targets: expected shape (n,), (n, 3) or (n, 6), got {y.shape}")
    return KINDS[components]


def lambdas_of(kind: str) -> tuple[int, ...]:
    """The irreducible parts a target of this kind is fitted by."""
    return _LAMBDAS[kind]


def normalize_targets(y: np.ndarray, *, name: str) -> np.ndarray:
    """(n,) scalars, (n, 3) vectors, (n, 6) tensors from what a file gave per structure.

    ``y`` is (n, components) or (n,) as read; 9 components are a row-major 3 x 3 tensor, checked
    for symmetry and reduced to the 6 stored numbers. Anything else raises DataError.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        return y
    components = y.shape[1]
    if components in (1, 3, 6):
        return y[:, 0] if components == 1 else y
    if components != 9:
        raise DataError(f"{name}: expected 1 (scalar), 3 (vector), 6 or 9 (symmetric 3x3 "
                        f"tensor) numbers per structure, got {components}")
    matrices = y.reshape(-1, 3, 3)
    asymmetry = np.abs(matrices - matrices.transpose(0, 2, 1)).max(axis=(1, 2))
    scale = np.abs(matrices).max(axis=(1, 2))
    bad = np.flatnonzero(asymmetry > _SYMMETRY_TOLERANCE * np.maximum(scale, 1e-300))
    if bad.size:
        k = int(bad[0])
        raise DataError(f"{name}: structure {k}: expected a symmetric 3x3 tensor, got one whose "
                        f"largest |T_ij - T_ji| is {asymmetry[k]:.3g} (largest |T_ij| "
                        f"{scale[k]:.3g})")
    symmetric = 0.5 * (matrices + matrices.transpose(0, 2, 1))
    return np.stack([symmetric[:, r, s] for r, s in _TENSOR_SLOTS], axis=1)


def _tensor_from_slots(y: np.ndarray) -> np.ndarray:
    out = np.empty((len(y), 3, 3))
    for c, (r, s) in enumerate(_TENSOR_SLOTS):
        out[:, r, s] = out[:, s, r] = y[:, c]
    return out


def tensor_matrices(y: np.ndarray) -> np.ndarray:
    """(n, 3, 3) symmetric matrices from the stored (n, 6) form."""
    return _tensor_from_slots(np.asarray(y, dtype=np.float64))


@functools.cache
def _lambda2_basis() -> np.ndarray:
    """(5, 3, 3): orthonormal traceless symmetric B_m with x^T B_m x ~ Y_2m(x) |x|^2."""
    rng = np.random.default_rng(20261124)
    points = rng.normal(size=(40, 3))
    values = real_spherical_harmonics(points, 2)[:, 4:9] * np.sum(points**2, axis=1)[:, None]
    # a symmetric B has 6 unknowns: x^T B x = sum_slots B_rs x_r x_s (x2 off the diagonal)
    design = np.stack([(1.0 if r == s else 2.0) * points[:, r] * points[:, s]
                       for r, s in _TENSOR_SLOTS], axis=1)
    slots, *_ = np.linalg.lstsq(design, values, rcond=None)
    basis = _tensor_from_slots(slots.T)
    basis /= np.linalg.norm(basis, axis=(1, 2))[:, None, None]
    basis.setflags(write=False)
    return basis


def to_spherical(y: np.ndarray, kind: str) -> dict[int, np.ndarray]:
    """{lambda: part}: (n,) for lambda = 0, (n, 2 lambda + 1) otherwise."""
    y = np.asarray(y, dtype=np.float64)
    if kind == "scalar":
        return {0: y}
    if kind == "vector":
        return {1: y[:, _VECTOR_TO_SPHERICAL]}
    matrices = _tensor_from_slots(y)
    return {0: np.trace(matrices, axis1=1, axis2=2) / math.sqrt(3.0),
            2: np.einsum("mrs,nrs->nm", _lambda2_basis(), matrices)}


def from_spherical(parts: dict[int, np.ndarray], kind: str) -> np.ndarray:
    """The stored Cartesian form ((n,), (n, 3) or (n, 6)) from the parts of ``to_spherical``."""
    if kind == "scalar":
        return np.asarray(parts[0], dtype=np.float64)
    if kind == "vector":
        spherical = np.asarray(parts[1], dtype=np.float64)
        out = np.empty_like(spherical)
        out[:, _VECTOR_TO_SPHERICAL] = spherical
        return out
    matrices = (np.asarray(parts[0], dtype=np.float64)[:, None, None] / math.sqrt(3.0)
                * np.eye(3) + np.einsum("nm,mrs->nrs", parts[2], _lambda2_basis()))
    return np.stack([matrices[:, r, s] for r, s in _TENSOR_SLOTS], axis=1)


def column_suffixes(kind: str) -> tuple[str, ...]:
    """Suffixes of the target_/prediction_ columns of predictions.csv."""
    if kind == "scalar":
        return ("",)
    if kind == "vector":
        return ("_x", "_y", "_z")
    return tuple("_" + "xyz"[r] + "xyz"[s] for r, s in _TENSOR_SLOTS)


def target_errors(target: np.ndarray, prediction: np.ndarray, kind: str) -> dict[str, float]:
    """results.json errors: ``mae``/``rmse`` over every stored Cartesian component (the columns
    of predictions.csv), plus ``mae_magnitude`` (vectors: mean | |pred| - |target| |) or
    ``mae_lambda0`` and ``mae_lambda2`` (tensors: mean absolute error of the parts' components).
    """
    target = np.asarray(target, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64)
    error = prediction - target
    out = {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error**2)))}
    if kind == "vector":
        out["mae_magnitude"] = float(np.mean(np.abs(np.linalg.norm(prediction, axis=1)
                                                    - np.linalg.norm(target, axis=1))))
    elif kind == "tensor":
        t, p = to_spherical(target, kind), to_spherical(prediction, kind)
        out["mae_lambda0"] = float(np.mean(np.abs(p[0] - t[0])))
        out["mae_lambda2"] = float(np.mean(np.abs(p[2] - t[2])))
    return out
