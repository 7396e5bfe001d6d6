"""The TOML configuration of every ``wkdist`` command, validated table by table.

A declarative schema: ``SECTIONS`` maps each top-level table to a :class:`Section`, a table of
:class:`Field` checkers (one rule and one default per key) plus a builder that turns the checked
values into a frozen dataclass and checks the rules that involve several keys.
Every problem is a :class:`~wkdist.errors.ConfigError` whose one-line message names the key, what
was expected and what was given, e.g.
``[compute] tile_size: expected a positive integer, got 'x'``.

Relative file paths are resolved against the directory of the configuration file, so a config
means the same thing whatever directory the command is started from.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.settings import KernelSettings
from ..errors import ConfigError, SettingsError
from ..tiled.tiles import DEFAULT_TILE_SIZE

__all__ = [
    "DEFAULT_TILE_SIZE",
    "Field",
    "Section",
    "DataConfig",
    "ComputeConfig",
    "StoreConfig",
    "FitConfig",
    "TuneConfig",
    "SearchSpace",
    "Config",
    "SECTIONS",
    "load_config",
    "parse_config",
    "lambda_cost",
]


_MISSING = object()


# --------------------------------------------------------------------------- value checkers
# A checker takes (value, base_dir) and returns the converted value or raises _Bad(expected).


class _Bad(Exception):
    """Raised by a checker with the 'expected ...' half of the message."""


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def positive_int(value: Any, base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _Bad("a positive integer")
    return value


def non_negative_int(value: Any, base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad("an integer >= 0")
    return value


def string(value: Any, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad("a non-empty string")
    return value


def file_path(value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise _Bad("a file path (string)")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def one_of(*choices: str) -> Callable[[Any, Path], str]:
    def check(value: Any, base: Path) -> str:
        if value not in choices:
            raise _Bad("one of " + ", ".join(map(repr, choices)))
        return value

    return check


def number(value: Any, base: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad("a finite number")
    return value


def positive_number(value: Any, base: Path) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise _Bad("a positive number")
    return float(value)


def boolean(value: Any, base: Path) -> bool:
    if not isinstance(value, bool):
        raise _Bad("true or false")
    return value


def number_list(value: Any, base: Path) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or not all(
            not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            for v in value):
        raise _Bad("a non-empty array of finite numbers")
    return tuple(float(v) for v in value)


def positive_list(value: Any, base: Path) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or not all(
            not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            and v > 0 for v in value):
        raise _Bad("a non-empty array of positive numbers")
    return tuple(sorted({float(v) for v in value}))


def fraction(value: Any, base: Path) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 < value < 1):
        raise _Bad("a number between 0 and 1 (exclusive)")
    return float(value)


def size_list(value: Any, base: Path) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(
            not isinstance(v, bool) and isinstance(v, int) and v > 1 for v in value):
        raise _Bad("a non-empty array of integers > 1")
    return tuple(sorted(set(value)))


def _address(value: Any, base: Path) -> str:
    if isinstance(value, str) and re.fullmatch(r"[^\s:/]*:\d+", value):
        return value
    raise _Bad('an address "host:port" (e.g. "127.0.0.1:8787"; ":8787" for every interface)')


def _cluster(value: Any, base: Path) -> str:
    if value in ("local", "slurm"):
        return value
    if isinstance(value, str) and re.fullmatch(r"(tcp|tls)://[^\s/:]+:\d+", value):
        return value
    raise _Bad('"local", "slurm" or a scheduler address "tcp://host:port"')


def _toml_value(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(_toml_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _toml_value(v) for k, v in value.items())
    return False


def passthrough_table(value: Any, base: Path) -> dict[str, Any]:
    """A table handed unchanged to a library (``[compute.slurm]`` -> SLURMCluster keywords)."""
    if not isinstance(value, dict):
        raise _Bad("a table")
    return dict(value)


@dataclass(frozen=True)
class Field:
    """One key of a section: its checker and its default (``required`` when there is none)."""

    check: Callable[[Any, Path], Any]
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@dataclass(frozen=True)
class Section:
    """A top-level table: its keys, and a builder from checked values to a config object.

    ``build(values, where)`` may raise ConfigError for rules that involve several keys.
    ``required`` sections must appear in the file; others are built from defaults when absent.
    """

    fields: Mapping[str, Field]
    build: Callable[[dict[str, Any], str], Any]
    required: bool = False


# --------------------------------------------------------------------------- section objects


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """[data]: where structures and targets come from and how they are split."""

    source: str | None = None  # "qm9" or None (files)
    path: Path | None = None
    train: Path | None = None
    test: Path | None = None
    target: str = "U0"
    n_train: int | None = None  # None with train/test files: every structure of the file
    n_test: int | None = None
    seed: int = 0
    unit: str | None = None


@dataclass(frozen=True, kw_only=True)
class ComputeConfig:
    """[compute]: tiling and the Dask cluster."""

    tile_size: int = DEFAULT_TILE_SIZE
    cluster: str = "local"
    workers: int = 2
    threads_per_worker: int = 1
    slurm: dict[str, Any] = field(default_factory=dict)
    # SLURM only: adapt between these many worker processes instead of a fixed ``workers``
    adaptive_minimum: int | None = None
    adaptive_maximum: int | None = None
    # SLURM only: seconds worker jobs may pend (no worker at all) before the run fails
    pending_timeout: float = 3600.0
    # where the dashboard listens; None: 127.0.0.1 (reach it by SSH tunnel)
    dashboard_address: str | None = None


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """[store]: the zarr store directory."""

    path: Path


@dataclass(frozen=True, kw_only=True)
class FitConfig:
    """[fit]: how (c0, a, b) are chosen and the weights solved (docs/mathematics.md, mixing)."""

    regularization: float = 1.0  # fixed, as in the paper: a sets the scale
    folds: int = 10
    mode: str = "kfold"  # "kfold", or "holdout" (one validation split) for large n
    mixing: str = "exponential"  # c_nu = a b^nu / nu! (the paper), or "free" per-order c_nu
    seed: int = 0
    baseline: bool = True  # per-element least-squares baseline before the KRR
    max_search: int = 5000  # the search holds at most this many training structures in memory
    coefficients: tuple[float, ...] | None = None  # given: no search
    learning_curve: tuple[int, ...] | None = None  # extra fits on the first n training rows
    # the scale a checked at full n: factors of the chosen coefficients, each validated by a
    # tiled fit on all but the last validation_fraction of the training rows
    scale_check: tuple[float, ...] | None = None
    validation_fraction: float = 0.1


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """The values ``wkdist tune`` tries for one kernel setting.

    ``values``: a list given in the file (searched exactly, no refinement); or ``low``/``high``
    with ``scale`` ("log" or "linear") and ``points`` (coarse grid points, ends included) for a
    range, which the local refinement may bisect further. Integer settings in a range take
    every integer from low to high.
    """

    name: str
    kind: str  # "float", "int" or "str" (the KernelSettings field's type)
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    scale: str = "log"
    points: int = 3

    @property
    def is_range(self) -> bool:
        return self.values is None

    @property
    def refinable(self) -> bool:
        return self.is_range and self.kind == "float"


@dataclass(frozen=True, kw_only=True)
class TuneConfig:
    """[tune]: the kernel-hyperparameter search of ``wkdist tune`` (wkdist/app/tune.py)."""

    space: Mapping[str, SearchSpace] = field(default_factory=dict)  # KernelSettings field -> values
    n_search: int = 500  # structures drawn (seeded) from the training set
    folds: int = 5
    seed: int = 0
    max_candidates: int | None = None  # budget: candidates evaluated in all (resumed runs count)
    max_seconds: float | None = None  # budget: seconds spent on candidates in all
    refine_rounds: int = 2  # local refinement rounds after the coarse grid (0: grid only)


@dataclass(frozen=True, kw_only=True)
class Config:
    """A whole validated configuration. ``sections`` holds every registered section by name."""

    data: DataConfig
    kernel: KernelSettings
    compute: ComputeConfig
    store: StoreConfig
    sections: Mapping[str, Any]
    source: Path | None = None  # the TOML file, when read from one
    document: Mapping[str, Any] = field(default_factory=dict)  # the TOML as given

    def __getitem__(self, name: str) -> Any:
        return self.sections[name]


def _build_data(values: dict[str, Any], where: str) -> DataConfig:
    files = [k for k in ("path", "train", "test") if k in values]
    if values.get("source") == "qm9":
        if files:
            raise ConfigError(f"{where} {files[0]}: expected no file with source = \"qm9\"")
    elif "path" in values:
        if "train" in values or "test" in values:
            raise ConfigError(f"{where} path: expected either path or train/test files, got both")
    elif "train" in values or "test" in values:
        missing = "test" if "train" in values else "train"
        if missing not in values:
            raise ConfigError(f"{where} {missing}: expected a file path beside "
                              f"{'train' if missing == 'test' else 'test'}, got none")
    else:
        raise ConfigError(f'{where} source: expected source = "qm9", path = FILE or '
                          "train = FILE and test = FILE, got none of them")
    if "source" not in values and "target" not in values:
        raise ConfigError(f"{where} target: expected the name of the target property "
                          "(atoms.info or calculator results key), got none")
    if "train" not in values:
        for key in ("n_train", "n_test"):
            if key not in values:
                raise ConfigError(f"{where} {key}: expected a positive integer, got none")
    return DataConfig(**values)


# The engine's cost per structure pair grows steeply with lambda_max: measured on 2 QM9
# molecules at nu_max 4, 0.01 s at lambda_max 3, 0.63 s at 6 and 12.4 s at 9, about
# (lambda_max + 1)^7.5. Beyond LAMBDA_MAX_WARN a config is accepted with a warning naming it.
LAMBDA_COST_POWER = 7.5
LAMBDA_MAX_WARN = 6


def lambda_cost(lambda_max: int) -> float:
    """Cost of a structure pair at ``lambda_max`` relative to lambda_max 3 (the measured
    throughput's setting)."""
    return ((lambda_max + 1) / 4.0) ** LAMBDA_COST_POWER


def _build_kernel(values: dict[str, Any], where: str) -> KernelSettings:
    try:
        settings = KernelSettings(**values)
    except SettingsError as error:
        raise ConfigError(f"{where} {error}") from None
    if settings.lambda_max > LAMBDA_MAX_WARN:
        logging.getLogger("wkdist").warning(
            "%s lambda_max = %d: each structure pair costs about %s times as much as at "
            "lambda_max 3 (the cost grows about as (lambda_max + 1)^%g); `wkdist plan` projects "
            "the whole run", where, settings.lambda_max, f"{lambda_cost(settings.lambda_max):,.0f}",
            LAMBDA_COST_POWER)
    return settings


def _build_compute(values: dict[str, Any], where: str) -> ComputeConfig:
    if values.get("cluster") != "slurm":
        for key in ("slurm", "adaptive_minimum", "adaptive_maximum", "pending_timeout"):
            if key in values and (key != "slurm" or values[key]):
                raise ConfigError(f'{where} {key}: expected only with cluster = "slurm", '
                                  f"got cluster = {values.get('cluster', 'local')!r}")
    low, high = values.get("adaptive_minimum"), values.get("adaptive_maximum")
    if low is not None and high is None:
        raise ConfigError(f"{where} adaptive_maximum: expected a positive integer beside "
                          "adaptive_minimum, got none")
    if high is not None and low is not None and low > high:
        raise ConfigError(f"{where} adaptive_minimum: expected at most adaptive_maximum = "
                          f"{high}, got {low}")
    compute = ComputeConfig(**values)
    if compute.cluster == "slurm":  # [compute.slurm] keys against SLURMCluster's signature
        from .cluster import slurm_options

        slurm_options(compute)
    return compute


def _build_store(values: dict[str, Any], where: str) -> StoreConfig:
    return StoreConfig(**values)


def _build_fit(values: dict[str, Any], where: str) -> FitConfig:
    if values.get("mode", "kfold") == "kfold" and values.get("folds", 10) < 2:
        raise ConfigError(f"{where} folds: expected an integer >= 2, got {values['folds']}")
    return FitConfig(**values)


def _search_space(name: str) -> Callable[[Any, Path], SearchSpace]:
    """Checker of a [tune] kernel-setting key: a list of values or a range table."""
    kind = KernelSettings.__dataclass_fields__[name].type

    def one(v: Any) -> bool:
        if kind == "str":
            return isinstance(v, str)
        if isinstance(v, bool):
            return False
        if kind == "int":
            return isinstance(v, int)
        return isinstance(v, (int, float)) and math.isfinite(v)

    noun = {"str": "strings", "int": "integers", "float": "finite numbers"}[kind]
    table = ("a table {range = [low, high], scale = \"log\" | \"linear\", points = N}"
             if kind != "str" else "")

    def check(value: Any, base: Path) -> SearchSpace:
        expected = f"a non-empty array of {noun}" + (f" or {table}" if table else "")
        if isinstance(value, list):
            if not value or not all(one(v) for v in value):
                raise _Bad(expected)
            unique = tuple(dict.fromkeys(float(v) if kind == "float" else v for v in value))
            return SearchSpace(name=name, kind=kind, values=unique)
        if not isinstance(value, dict) or not table:
            raise _Bad(expected)
        def bad(what: str, got: Any) -> ConfigError:
            return ConfigError(f"[tune] {name}: expected {what}, got {got}")

        unknown = sorted(set(value) - {"range", "scale", "points"})
        if unknown:
            raise bad(table, f"unknown key {unknown[0]!r}")
        bounds = value.get("range")
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(one(v) for v in bounds)):
            raise bad(f"range = [low, high] of two {noun}", f"range = {_describe(bounds)}"
                      if bounds is not None else "no range")
        low, high = bounds
        if not low < high:
            raise bad("range = [low, high] with low < high", f"[{low}, {high}]")
        scale = value.get("scale", "log")
        if scale not in ("log", "linear"):
            raise bad('scale = "log" or "linear"', repr(scale))
        if scale == "log" and low <= 0:
            raise bad('a positive low end with scale = "log"', f"[{low}, {high}]")
        points = value.get("points", 3)
        if isinstance(points, bool) or not isinstance(points, int) or points < 2:
            raise bad("points = an integer >= 2", _describe(points))
        return SearchSpace(name=name, kind=kind, low=float(low), high=float(high), scale=scale,
                           points=points)

    return check


_TUNE_OPTIONS = ("n_search", "folds", "seed", "max_candidates", "max_seconds", "refine_rounds")


def _build_tune(values: dict[str, Any], where: str) -> TuneConfig:
    options = {k: v for k, v in values.items() if k in _TUNE_OPTIONS}
    space = {k: v for k, v in values.items() if k not in _TUNE_OPTIONS}
    if options.get("folds", 5) < 2:
        raise ConfigError(f"{where} folds: expected an integer >= 2, got {options['folds']}")
    return TuneConfig(space=space, **options)


def _kernel_field(name: str) -> Field:
    kind = KernelSettings.__dataclass_fields__[name].type
    if kind == "int":
        return Field(non_negative_int)
    if kind == "str":
        return Field(string)
    return Field(number)


SECTIONS: dict[str, Section] = {
    "data": Section(
        {
            "source": Field(one_of("qm9")),
            "path": Field(file_path),
            "train": Field(file_path),
            "test": Field(file_path),
            "target": Field(string),
            "n_train": Field(positive_int),
            "n_test": Field(positive_int),
            "seed": Field(non_negative_int),
            "unit": Field(string),
        },
        _build_data,
        required=True,
    ),
    "kernel": Section({name: _kernel_field(name) for name in KernelSettings.field_names()},
                      _build_kernel),
    "compute": Section(
        {
            "tile_size": Field(positive_int),
            "cluster": Field(_cluster),
            "workers": Field(positive_int),
            "threads_per_worker": Field(positive_int),
            "slurm": Field(passthrough_table),
            "adaptive_minimum": Field(positive_int),
            "adaptive_maximum": Field(positive_int),
            "pending_timeout": Field(positive_number),
            "dashboard_address": Field(_address),
        },
        _build_compute,
    ),
    "store": Section({"path": Field(file_path)}, _build_store, required=True),
    "fit": Section(
        {
            "regularization": Field(positive_number),
            "folds": Field(positive_int),
            "mode": Field(one_of("kfold", "holdout")),
            "mixing": Field(one_of("exponential", "free")),
            "seed": Field(non_negative_int),
            "baseline": Field(boolean),
            "max_search": Field(positive_int),
            "coefficients": Field(number_list),
            "learning_curve": Field(size_list),
            "scale_check": Field(positive_list),
            "validation_fraction": Field(fraction),
        },
        _build_fit,
    ),
    "tune": Section(
        {
            "n_search": Field(positive_int),
            "folds": Field(positive_int),
            "seed": Field(non_negative_int),
            "max_candidates": Field(positive_int),
            "max_seconds": Field(positive_number),
            "refine_rounds": Field(non_negative_int),
            **{name: Field(_search_space(name)) for name in KernelSettings.field_names()},
        },
        _build_tune,
    ),
}


# --------------------------------------------------------------------------- loading


def _check_section(name: str, table: Any, base: Path) -> Any:
    where = f"[{name}]"
    section = SECTIONS[name]
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a table [{name}], got {_describe(table)}")
    values: dict[str, Any] = {}
    for key, raw in table.items():
        spec = section.fields.get(key)
        if spec is None:
            known = ", ".join(section.fields)
            raise ConfigError(f"{where} {key}: unknown key (expected one of: {known})")
        try:
            values[key] = spec.check(raw, base)
        except _Bad as bad:
            raise ConfigError(f"{where} {key}: expected {bad}, got {_describe(raw)}") from None
        if key == "slurm" and not _toml_value(raw):
            raise ConfigError(f"{where} {key}: expected a table of plain values")
    for key, spec in section.fields.items():
        if key not in values and not spec.required and spec.default is not _MISSING:
            values[key] = spec.default
    return section.build(values, where)


def parse_config(document: Mapping[str, Any], *, base_dir: Path | str = ".",
                 source: Path | None = None) -> Config:
    """Validate an already-parsed TOML document (a dict)."""
    base = Path(base_dir)
    for name in document:
        if name not in SECTIONS:
            raise ConfigError(f"[{name}]: unknown section (expected one of: "
                              f"{', '.join('[' + s + ']' for s in SECTIONS)})")
    built: dict[str, Any] = {}
    for name, section in SECTIONS.items():
        if name not in document and section.required:
            raise ConfigError(f"[{name}]: expected this section, got none")
        built[name] = _check_section(name, document.get(name, {}), base)
    return Config(
        data=built["data"], kernel=built["kernel"], compute=built["compute"],
        store=built["store"], sections=built, source=source, document=copy.deepcopy(document),
    )


def _line_of(path: Path, offset: int) -> int:
    """1-based line of byte ``offset`` in the file at ``path``."""
    return path.read_bytes()[:offset].count(b"\n") + 1


def load_config(path: Path | str) -> Config:
    """Read and validate a TOML file. Raises ConfigError (also for unreadable or bad TOML)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration ({error.strerror or error})") \
            from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    except UnicodeDecodeError as error:  # TOML is UTF-8; tomllib decodes before parsing
        byte, line = error.object[error.start], _line_of(path, error.start)
        raise ConfigError(f"{path}: not valid TOML (not UTF-8: byte 0x{byte:02x} at line "
                          f"{line})") from None
    return parse_config(document, base_dir=path.resolve().parent, source=path)
