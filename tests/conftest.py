"""Shared fixtures; makes the package and the reference module importable from a checkout."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

import numpy as np
import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_TESTS)
if _TESTS not in sys.path:  # for ``import wkref`` from tests/ and tests/kernels/
    sys.path.insert(0, _TESTS)
if importlib.util.find_spec("wkdist") is None:  # running from a checkout without an install
    sys.path.insert(0, _ROOT)

# A worker's first connection to its scheduler may take longer than distributed's default 30 s
# on a loaded machine; the environment reaches worker processes and subprocess tests as well.
os.environ.setdefault("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "120s")
# `wkdist plan` caches the rates it measures: in a directory of this test session, not ~/.cache
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="wkdist-test-cache-")
if "dask" in sys.modules:
    import dask.config

    dask.config.refresh()


@pytest.fixture
def rng():
    return np.random.default_rng(20240531)
