"""Shared fixtures; makes the package and the reference module importable from a checkout."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_TESTS)
if _TESTS not in sys.path:  # for ``import wkref`` from tests/ and tests/kernels/
    sys.path.insert(0, _TESTS)
if importlib.util.find_spec("wkdist") is None:  # running from a checkout without an install
    sys.path.insert(0, _ROOT)


@pytest.fixture
def rng():
    return np.random.default_rng(20240531)
