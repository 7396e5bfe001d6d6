"""wkdist.engine.targets: shapes of vector/tensor targets and their irreducible parts.

The parts must transform exactly like the rows of the equivariant kernels (Y(Q r) = D Y(r)),
checked against D matrices fitted from the independent harmonics of tests/wkref.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from wkref import real_harmonics, wigner_d_from_harmonics

from wkdist.engine.targets import (
    from_spherical,
    lambdas_of,
    normalize_targets,
    target_errors,
    target_kind,
    tensor_matrices,
    to_spherical,
)
from wkdist.errors import DataError


def random_tensors(n: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n, 3, 3))
    return a + a.transpose(0, 2, 1)


def slots(matrices: np.ndarray) -> np.ndarray:
    return normalize_targets(matrices.reshape(len(matrices), 9), name="t")


def test_normalize_shapes_and_tensor_order():
    assert normalize_targets(np.arange(4.0).reshape(4, 1), name="t").shape == (4,)
    assert normalize_targets(np.ones((4, 3)), name="t").shape == (4, 3)
    t = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]])
    six = normalize_targets(t.reshape(1, 9), name="t")
    np.testing.assert_array_equal(six, [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])  # xx xy xz yy yz zz
    np.testing.assert_array_equal(tensor_matrices(six)[0], t)
    assert [target_kind(np.ones(3)), target_kind(np.ones((3, 3))), target_kind(six)] == \
        ["scalar", "vector", "tensor"]
    assert [lambdas_of(k) for k in ("scalar", "vector", "tensor")] == [(0,), (1,), (0, 2)]


@pytest.mark.parametrize("components", [2, 4, 5, 8])
def test_wrong_number_of_components_is_refused(components):
    with pytest.raises(DataError, match=f"expected 1 .*, 3 .*, 6 or 9 .* got {components}$"):
        normalize_targets(np.ones((3, components)), name="mols.xyz: target 'dipole'")


def test_asymmetric_tensor_is_refused_and_rounding_is_symmetrized():
    t = random_tensors(3, seed=1)
    t[2, 0, 1] += 1e-3
    with pytest.raises(DataError, match="structure 2: expected a symmetric 3x3 tensor"):
        slots(t)
    t = random_tensors(3, seed=1)
    t[1, 0, 1] *= 1 + 1e-12
    np.testing.assert_allclose(tensor_matrices(slots(t)), random_tensors(3, seed=1), rtol=1e-11)


@pytest.mark.parametrize("kind", ["vector", "tensor"])
def test_round_trip_and_isometry(kind):
    rng = np.random.default_rng(3)
    y = rng.normal(size=(7, 3)) if kind == "vector" else slots(random_tensors(7, seed=4))
    parts = to_spherical(y, kind)
    np.testing.assert_allclose(from_spherical(parts, kind), y, rtol=0, atol=1e-14)
    norm = (np.sum(y**2, axis=1) if kind == "vector"
            else np.sum(tensor_matrices(y)**2, axis=(1, 2)))
    parts_norm = sum(np.sum(np.reshape(p, (7, -1))**2, axis=1) for p in parts.values())
    np.testing.assert_allclose(parts_norm, norm, rtol=1e-13)


def test_tensor_parts_are_trace_and_traceless_remainder():
    t = random_tensors(5, seed=5)
    parts = to_spherical(slots(t), "tensor")
    np.testing.assert_allclose(parts[0], np.trace(t, axis1=1, axis2=2) / math.sqrt(3), rtol=1e-14)
    isotropic = np.trace(t, axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3)
    only2 = from_spherical({0: np.zeros(5), 2: parts[2]}, "tensor")
    np.testing.assert_allclose(tensor_matrices(only2), t - isotropic, atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parts_rotate_with_the_kernels_wigner_matrices(seed):
    rng = np.random.default_rng(seed)
    q = Rotation.random(random_state=seed).as_matrix()
    vectors = rng.normal(size=(6, 3))
    tensors = random_tensors(6, seed=seed + 10)
    d1 = wigner_d_from_harmonics(real_harmonics, q, 1, rng)
    d2 = wigner_d_from_harmonics(real_harmonics, q, 2, rng)
    rotated = to_spherical(vectors @ q.T, "vector")[1]
    np.testing.assert_allclose(rotated, to_spherical(vectors, "vector")[1] @ d1.T, atol=1e-12)
    parts = to_spherical(slots(tensors), "tensor")
    turned = to_spherical(slots(q @ tensors @ q.T), "tensor")
    np.testing.assert_allclose(turned[0], parts[0], atol=1e-12)
    np.testing.assert_allclose(turned[2], parts[2] @ d2.T, atol=1e-12)


def test_errors_of_scalars():
    rng = np.random.default_rng(7)
    target = rng.normal(size=50)
    prediction = target + rng.normal(size=50) * 0.1
    errors = target_errors(target, prediction, "scalar")
    assert set(errors) == {"mae", "rmse"}
    assert errors["mae"] == pytest.approx(np.mean(np.abs(prediction - target)), rel=1e-14)
    assert errors["rmse"] == pytest.approx(np.sqrt(np.mean((prediction - target) ** 2)),
                                           rel=1e-14)
    assert isinstance(errors["mae"], float) and errors["rmse"] >= errors["mae"]
    assert target_errors(target, target, "scalar") == {"mae": 0.0, "rmse": 0.0}


def test_errors_of_vectors_and_tensors():
    target = np.array([[3.0, 0.0, 4.0], [0.0, 1.0, 0.0]])
    prediction = np.array([[3.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    errors = target_errors(target, prediction, "vector")
    assert errors["mae"] == pytest.approx(6.0 / 6)
    assert errors["rmse"] == pytest.approx(math.sqrt(20.0 / 6))
    assert errors["mae_magnitude"] == pytest.approx((2.0 + 0.0) / 2)  # |5 - 3|, |1 - 1|
    t = slots(random_tensors(4, seed=6))
    shifted = t.copy()
    shifted[:, [0, 3, 5]] += 0.3  # + 0.3 I: only the trace part changes
    errors = target_errors(t, shifted, "tensor")
    assert errors["mae_lambda0"] == pytest.approx(0.3 * math.sqrt(3))
    assert errors["mae_lambda2"] == pytest.approx(0.0, abs=1e-14)
    assert errors["mae"] == pytest.approx(0.3 * 3 / 6)
