"""wkdist.kernels.scaled_spherical_in: exp(-x) i_l(x) against a 60-digit reference."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from math import factorial

import numpy as np
import pytest
from scipy.special import ive

from wkdist.kernels import scaled_spherical_in


def scaled_in_decimal(x: float, l: int) -> float:
    """exp(-x) i_l(x) in 60-digit decimal arithmetic.

    Below x = 200 the power series (positive terms only); above, the terminating closed form
    i_l(x) = [e^x sum_k (-1)^k a_k(l) / (2x)^k - (-1)^l e^-x sum_k a_k(l) / (2x)^k] / (2x),
    a_k(l) = (l + k)! / (k! (l - k)!).
    """
    with localcontext() as ctx:
        ctx.prec = 60
        xd = Decimal(repr(float(x)))
        if xd == 0:
            return 1.0 if l == 0 else 0.0
        if xd < 200:
            half = xd * xd / 2
            lead = xd**l
            for k in range(1, 2 * l + 2, 2):
                lead /= k
            total = term = Decimal(1)
            k = 1
            while True:
                term = term * half / (k * (2 * l + 2 * k + 1))
                total += term
                if term < total * Decimal("1e-45"):
                    break
                k += 1
            return float((-xd).exp() * lead * total)
        a = [Decimal(factorial(l + k)) / (factorial(k) * factorial(l - k)) for k in range(l + 1)]
        s1 = sum(a[k] * (-1) ** k / (2 * xd) ** k for k in range(l + 1))
        s2 = sum(a[k] / (2 * xd) ** k for k in range(l + 1))
        return float((s1 - (-1) ** l * (-2 * xd).exp() * s2) / (2 * xd))


SPECIAL_X = [1e-12, 1e-6, 1e-3, 0.05, 0.5, 1.0, 1.999999, 2.0, 2.000001, 4.5, 7.5, 9.0,
             12.0, 14.99, 15.0, 15.01, 75.0, 199.0, 201.0, 700.0, 1e4, 1e6]


@pytest.mark.parametrize("l_max", [0, 1, 2, 3, 4, 6, 8, 10])
def test_scaled_spherical_in_matches_high_precision_reference(l_max):
    # dense around every series / recurrence switch the implementation might use
    xs = np.unique(np.concatenate([SPECIAL_X, np.linspace(0.0, 40.0, 321)[1:],
                                   np.geomspace(40.0, 1e3, 25)]))
    got = scaled_spherical_in(xs, l_max)
    assert got.shape == (len(xs), l_max + 1)
    expected = np.array([[scaled_in_decimal(x, l) for l in range(l_max + 1)] for x in xs])
    assert np.all(np.isfinite(got))
    zero = expected == 0.0
    assert np.all(got[zero] == 0.0)
    rel = np.abs(got[~zero] - expected[~zero]) / np.abs(expected[~zero])
    worst = np.unravel_index(np.argmax(np.where(zero, 0.0, np.abs(got - expected)
                                                / np.where(zero, 1.0, np.abs(expected)))),
                             got.shape)
    assert rel.max() <= 1e-13, (
        f"max relative error {rel.max():.3e} at x = {xs[worst[0]]}, l = {worst[1]}"
    )


@pytest.mark.parametrize("l_max", [3, 10])
def test_scaled_spherical_in_agrees_with_scipy_ive(l_max):
    """scipy's own accuracy is ~3e-14 (x = 20) to ~6e-14 (tiny x, l = 10): compare at 2e-13."""
    rng = np.random.default_rng(42)
    xs = np.sort(np.concatenate([rng.uniform(1e-3, 30.0, 200), rng.uniform(30.0, 5e3, 50)]))
    got = scaled_spherical_in(xs, l_max)
    for l in range(l_max + 1):
        expected = np.sqrt(np.pi / (2.0 * xs)) * ive(l + 0.5, xs)
        np.testing.assert_allclose(got[:, l], expected, rtol=2e-13, atol=0)


def test_scaled_spherical_in_at_zero():
    """The limit x -> 0 is i_0 = 1, i_l = 0 (the kernels never ask for it: r r' / s^2 > 0)."""
    got = scaled_spherical_in(np.array([0.0]), 5)
    np.testing.assert_array_equal(got[0], [1.0, 0, 0, 0, 0, 0])


def test_scaled_spherical_in_limits():
    got = scaled_spherical_in(np.array([1e8]), 5)
    np.testing.assert_allclose(got[0], 1.0 / 2e8, rtol=1e-6)  # exp(-x) i_l(x) -> 1 / (2x)
    # i_l(x) ~ x^l / (2l + 1)!! near 0
    small = scaled_spherical_in(np.array([1e-4]), 4)[0]
    double_factorial = [1, 3, 15, 105, 945]
    np.testing.assert_allclose(small, [1e-4**l / double_factorial[l] for l in range(5)],
                               rtol=1e-4)
    # the result does not depend on the l_max it was asked for
    xs = np.linspace(0.0, 30.0, 61)[1:]
    np.testing.assert_allclose(scaled_spherical_in(xs, 10)[:, :4], scaled_spherical_in(xs, 3),
                               rtol=2e-13, atol=0)


def test_vectorized_exp_within_one_ulp_down_to_the_smallest_subnormal():
    from wkdist.kernels.radial import exp_nonpositive

    rng = np.random.default_rng(3)
    x = np.concatenate([
        -rng.uniform(0.0, 746.0, 200_000), -rng.uniform(0.0, 1.0, 50_000),
        -rng.uniform(700.0, 746.0, 50_000),
        [0.0, -0.0, -1e-300, -np.log(2) / 2, -708.39, -708.4, -745.13, -745.14, -746.0],
    ])
    got = x.copy()
    bits = np.empty((2, len(x)), dtype=np.int64)
    exp_nonpositive(got, len(x), bits, bits.view(np.float64))
    expected = np.array([math.exp(v) for v in x])  # the C library's exp, below 1 ulp
    ulps = np.abs(got - expected) / np.spacing(expected)
    assert ulps.max() <= 1.0
    assert got[-1] == 0.0 and got[-2] == 0.0 and got[-3] == np.exp(-745.13) > 0.0
