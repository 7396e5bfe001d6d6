"""wkdist.KernelSettings: defaults, validation and error messages."""

from __future__ import annotations

import dataclasses
import math

import pytest

import wkdist
from wkdist import KernelSettings, SettingsError


def test_reference_settings_and_the_searched_defaults():
    """REFERENCE_QM9 is the authors' released QM9 configuration; the defaults differ only where
    the documented search (README, "Accuracy on QM9") moved them."""
    r = wkdist.REFERENCE_QM9
    assert (r.cutoff, r.nu_max, r.lambda_max, r.gaussian_width, r.decay_length) == (
        5.0, 4, 3, 0.03, 1.0)
    assert (r.radial_weight, r.cutoff_smoothing, r.normalization, r.scheme) == (
        "exp", 0.5, "exact", "reduced")
    changed = {k: v for k, v in KernelSettings().to_dict().items() if r.to_dict()[k] != v}
    assert changed == {"cutoff": 4.0, "cutoff_smoothing": 2.0}


def test_frozen_keyword_only_and_numbers_coerced():
    s = KernelSettings(cutoff=4, gaussian_width=1, decay_length=2, cutoff_smoothing=0)
    assert isinstance(s.cutoff, float) and s.cutoff == 4.0
    assert s.cutoff_smoothing == 0.0  # a hard cutoff is valid
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.cutoff = 3.0
    with pytest.raises(TypeError):
        KernelSettings(5.0)  # keyword-only
    assert KernelSettings(cutoff=3.0, cutoff_smoothing=3.0).cutoff_smoothing == 3.0
    assert KernelSettings(lambda_max=0, nu_max=1).lambda_max == 0
    assert KernelSettings(**KernelSettings().to_dict()) == KernelSettings()
    assert set(KernelSettings.field_names()) == set(KernelSettings().to_dict())


INVALID = [
    ("cutoff", -1.0), ("cutoff", 0.0), ("cutoff", math.nan), ("cutoff", math.inf),
    ("cutoff", "5"), ("cutoff", None), ("cutoff", True),
    ("gaussian_width", 0.0), ("gaussian_width", -0.03), ("gaussian_width", "0.03"),
    ("decay_length", 0.0), ("decay_length", -1.0), ("decay_length", math.nan),
    ("cutoff_smoothing", -0.1), ("cutoff_smoothing", 5.5), ("cutoff_smoothing", math.inf),
    ("nu_max", 0), ("nu_max", -2), ("nu_max", 2.0), ("nu_max", "4"), ("nu_max", True),
    ("lambda_max", -1), ("lambda_max", 3.0), ("lambda_max", None), ("lambda_max", False),
    ("radial_weight", "gaussian"), ("radial_weight", "EXP"), ("radial_weight", None),
    ("normalization", "unit"), ("normalization", 1),
    ("scheme", "fast"), ("scheme", ""),
]


@pytest.mark.parametrize("field, value", INVALID)
def test_invalid_value_raises_settings_error_naming_the_field(field, value):
    with pytest.raises(SettingsError) as info:
        KernelSettings(**{field: value})
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, wkdist.WkdistError)
    assert str(info.value).startswith(field), str(info.value)


def test_smoothing_wider_than_a_custom_cutoff():
    with pytest.raises(SettingsError, match="cutoff_smoothing"):
        KernelSettings(cutoff=2.0, cutoff_smoothing=2.5)
