"""A fitted model on disk: ``DIR/model/``, zarr arrays plus JSON attributes, never a pickle.

Layout (format 2): a zarr 3 group with
- ``alpha`` (n_train,) or (n_train, k): the KRR weights;
- ``train_numbers`` (n_atoms,), ``train_positions`` (n_atoms, 3), ``train_atom_ptr``
  (n_train + 1,), ``train_cells`` (n_train, 3, 3), ``train_pbc`` (n_train, 3): the training
  structures, enough to compute kernels of new structures against them;
- attributes ``format`` = "wkdist-model", ``format_version``, ``wkdist_version``, ``settings``
  (KernelSettings fields), ``coefficients`` [c_0 .. c_nu_max], ``regularization``,
  ``baseline`` ({element symbol: weight} or null), ``target``, ``unit``;
- integrity: every array has a Crc32c codec, and the attribute ``manifest`` holds
  {``files``: {path: [size, crc32]} of every array file (metadata and chunks),
  ``attributes``: sha256 of the other attributes}; ``load_model`` refuses a model whose files
  or attributes do not match it (damaged, truncated, hand-edited, chunk deleted).
The model is exactly y_hat(x) = b(x) + sum_j K_mix(x, x_j) alpha_j (README, "Outputs").

Vector and tensor targets (``wkdist.engine.targets``) have one such model per irreducible part
lambda: attribute ``kind`` ("vector" or "tensor"; absent for scalars) and ``parts`` = [{``lambda``,
``coefficients``, ``regularization``, ``baseline``}], weights in ``alpha`` (lambda = 0) and
``alpha_lambda<L>`` ((n_train (2L + 1),), row = structure * (2L + 1) + mu). Part lambda predicts
y_lambda(x)_mu = b(x) [lambda = 0] + sum_{j, mu'} K^lambda_mix(x, x_j)_{mu mu'} alpha_{j mu'};
the parts are put together into Cartesian form by ``wkdist.engine.targets.from_spherical``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from threadpoolctl import threadpool_limits
from zarr.codecs import Crc32cCodec

from ..engine.api import kernel_block
from ..engine.settings import KernelSettings
from ..engine.structures import check_frames, pack_structures, species_of
from ..errors import DataError, SettingsError, StoreError
from ..tiled.frames import read_frames, write_frames

__all__ = ["Model", "Part", "PREDICT_BLOCK", "partial_prediction", "save_model", "load_model",
           "verify_model", "baseline_values", "FORMAT", "FORMAT_VERSION"]

FORMAT = "wkdist-model"
FORMAT_VERSION = 2  # 2: checksummed (Crc32c codec, manifest); 1 had no checksums
_ARRAYS = ("train_numbers", "train_positions", "train_atom_ptr", "train_cells", "train_pbc")


def _alpha_name(lam: int) -> str:
    return "alpha" if lam == 0 else f"alpha_lambda{lam}"


@dataclass(frozen=True, eq=False)
class Part:
    """The KRR model of one irreducible part lambda of the target."""

    lam: int
    alpha: np.ndarray
    coefficients: np.ndarray
    regularization: float
    baseline: dict[str, float] | None = None  # lambda = 0 only


def baseline_values(frames: Sequence[Atoms], baseline: dict[str, float] | None) -> np.ndarray:
    """b(x) = sum over the atoms of x of baseline[element]; zeros when baseline is None.

    Elements without a weight contribute zero (the caller warns about them).
    """
    if not baseline:
        return np.zeros(len(frames))
    weights = np.zeros(len(chemical_symbols))
    for symbol, value in baseline.items():
        weights[atomic_numbers[symbol]] = value
    return np.array([weights[atoms.numbers].sum() for atoms in frames])


# Structures per block, of new structures and of training structures, in a prediction: one
# task computes the kernels of one block against the other (a few MB), mixes them and applies
# the block's weights, so memory per task does not depend on either set's size.
PREDICT_BLOCK = 256


@dataclass(frozen=True)
class _Call:
    """One prediction task for ``run_in_waves``."""

    key: str
    function: Any
    args: tuple
    kwargs: dict


@dataclass(frozen=True, eq=False)
class Model:
    """A fitted model; ``predict`` applies it to new structures.

    The training structures are either in memory (``frames``, a model fitted in this process)
    or read a block at a time from the model directory (``source``, a loaded model), so a
    loaded model holds only its weights, whatever the training set's size.
    """

    parts: tuple[Part, ...]
    kind: str  # "scalar", "vector" or "tensor"
    settings: KernelSettings
    target: str
    unit: str | None
    n_train: int
    train_species: np.ndarray  # sorted atomic numbers of the training set
    source: str | None = None
    frames: list[Atoms] | None = None

    @classmethod
    def in_memory(cls, *, parts: Sequence[Part], kind: str, train_frames: Sequence[Atoms],
                  settings: KernelSettings, target: str, unit: str | None) -> Model:
        frames = list(train_frames)
        return cls(parts=tuple(parts), kind=kind, settings=settings, target=target, unit=unit,
                   n_train=len(frames), train_species=species_of(frames), frames=frames)

    def train_block(self, start: int, stop: int) -> list[Atoms]:
        """Training structures ``start:stop``."""
        if self.frames is not None:
            return self.frames[start:stop]
        return read_frames(self.source, "train_", start, stop)

    @property
    def train_frames(self) -> list[Atoms]:
        """Every training structure (read from the model directory when it was loaded)."""
        return self.train_block(0, self.n_train)

    # the single part of a scalar model
    @property
    def alpha(self) -> np.ndarray:
        return self.parts[0].alpha

    @property
    def coefficients(self) -> np.ndarray:
        return self.parts[0].coefficients

    @property
    def regularization(self) -> float:
        return self.parts[0].regularization

    @property
    def baseline(self) -> dict[str, float] | None:
        return self.parts[0].baseline

    def unseen_elements(self, frames: Sequence[Atoms]) -> list[str]:
        """Element symbols in ``frames`` that no training structure has (their kernel is 0)."""
        new = set(species_of(frames).tolist()) - set(self.train_species.tolist())
        return [chemical_symbols[z] for z in sorted(new)]

    def unseen_rows(self, frames: Sequence[Atoms]) -> list[int]:
        """Positions of the structures in ``frames`` with an element no training structure has."""
        seen = set(self.train_species.tolist())
        return [k for k, atoms in enumerate(frames) if not set(atoms.numbers.tolist()) <= seen]

    # Task layout (``t`` = tokenize(model, new structures, part)):
    #     "wkdist-predict-<t>-<Q>-<B>"  block Q of new structures against training block B:
    #                                   sum_j K_mix(x, x_j) alpha_j over j in B, (q d,)
    # (``t`` = hash of the new structures, the weights and the training set), submitted in waves
    # (run_in_waves); once block Q has all its results the driver adds them in the order of B,
    # so the values do not depend on the cluster, and it holds only the blocks in flight.
    def _mixed(self, frames: list[Atoms], part: Part, *, client: Any = None,
               block: int = PREDICT_BLOCK) -> np.ndarray:
        """sum_j K^lam_mix(x, x_j) alpha_j for every x of ``frames``: (n d,), d = 2 lam + 1."""
        d = 2 * part.lam + 1
        species = np.union1d(self.train_species, species_of(frames)) if frames else (
            self.train_species)
        queries = [frames[q:q + block] for q in range(0, len(frames), block)]
        trains = [(b, min(b + block, self.n_train)) for b in range(0, self.n_train, block)]
        digest = hashlib.sha256(repr((self.source, self.n_train, part.lam)).encode())
        for array in (part.alpha, np.asarray(part.coefficients, dtype=np.float64)):
            digest.update(np.ascontiguousarray(array).tobytes())
        for atoms in frames:
            digest.update(atoms.numbers.tobytes() + atoms.get_positions().tobytes())
        token = digest.hexdigest()[:32]
        out = np.zeros(len(frames) * d)
        pending: dict[int, list[Any]] = {}

        def add(q: int, index: int, value: np.ndarray) -> None:
            parts = pending.setdefault(q, [None] * len(trains))
            parts[index] = value
            if all(v is not None for v in parts):
                total = np.zeros(len(queries[q]) * d)
                for partial in pending.pop(q):  # fixed order over training blocks
                    total += partial
                out[q * block * d:q * block * d + len(total)] = total
        common = {"settings": self.settings, "species": species, "lam": part.lam,
                  "coefficients": np.asarray(part.coefficients, dtype=np.float64)}

        def call(q: int, index: int, query: Any) -> _Call:
            start, stop = trains[index]
            train = (self.source, start, stop) if self.frames is None else (
                self.frames[start:stop])
            return _Call(f"wkdist-predict-{token}-{q}-{index}", partial_prediction,
                         (query, train), {**common, "alpha": part.alpha[start * d:stop * d]})

        if client is None:
            for q, query in enumerate(queries):
                for index in range(len(trains)):
                    c = call(q, index, query)
                    add(q, index, c.function(*c.args, **c.kwargs))
        else:
            from ..tiled.graph import run_in_waves

            shipped = {}

            def calls():
                for q, query in enumerate(queries):
                    shipped[q] = client.scatter([query])[0]  # once per block, not per task
                    for index in range(len(trains)):
                        yield call(q, index, shipped[q])

            def finished(c: _Call, value: np.ndarray) -> None:
                _, q, index = c.key.rsplit("-", 2)
                add(int(q), int(index), value)
                if int(q) not in pending:
                    shipped.pop(int(q), None)  # the block is done: release it

            run_in_waves(client, calls(), on_result=finished)
        return out

    def predict(self, frames: Sequence[Atoms], *, client: Any = None,
                allow_unseen_elements: bool = False, block: int = PREDICT_BLOCK) -> np.ndarray:
        """Predictions in the stored Cartesian form: (n,), (n, 3) or (n, 6)
        (``wkdist.engine.targets``), computed block by block (``block`` structures of each set
        per task; on the workers of ``client`` when given, in waves; the same values either
        way).

        A structure with an element the training set never had gets NaN (its kernel with every
        training structure misses that element and the baseline has no weight for it: the
        number would be off by about that element's energy), unless ``allow_unseen_elements``,
        which gives such elements a zero kernel and a zero baseline weight.
        """
        from ..engine.targets import from_spherical

        frames = check_frames(frames, "structures")
        values = {}
        for part in self.parts:
            mixed = self._mixed(frames, part, client=client, block=block)
            if part.lam == 0:
                values[0] = baseline_values(frames, part.baseline) + mixed
            else:
                values[part.lam] = mixed.reshape(len(frames), 2 * part.lam + 1)
        prediction = np.array(from_spherical(values, self.kind), dtype=np.float64)
        if not allow_unseen_elements:
            prediction[self.unseen_rows(frames)] = np.nan
        return prediction


def partial_prediction(query: Sequence[Atoms], train: Any, *, settings: KernelSettings,
                       species: np.ndarray, lam: int, coefficients: np.ndarray,
                       alpha: np.ndarray) -> np.ndarray:
    """One prediction task: sum_j K^lam_mix(x, x_j) alpha_j over one block of training
    structures (a list, or (model directory, start, stop) to read them there), for every x
    of ``query``: (q d,), row x d + mu."""
    if isinstance(train, tuple):
        source, start, stop = train
        train = read_frames(source, "train_", start, stop)
    a = pack_structures(query, settings, species=species, name="structures")
    b = pack_structures(train, settings, species=species, name="training structures")
    with threadpool_limits(1):
        block = kernel_block(a, b, settings=settings, lam=lam)
        mixed = np.tensordot(block, coefficients, axes=([2], [0]))  # (q, t) or (q, t, d, d)
        if lam == 0:
            return mixed @ alpha
        q, t, d, _ = mixed.shape
        return mixed.transpose(0, 2, 1, 3).reshape(q * d, t * d) @ alpha


def _part_attrs(part: Part) -> dict[str, Any]:
    return {"lambda": part.lam, "coefficients": [float(c) for c in part.coefficients],
            "regularization": float(part.regularization), "baseline": part.baseline}


def save_model(directory: Path | str, *, parts: Sequence[Part], kind: str = "scalar",
               train_frames: Sequence[Atoms], settings: KernelSettings, target: str,
               unit: str | None, wkdist_version: str) -> Path:
    """Write the model to ``directory`` atomically: a complete model or none at all. An
    existing model there is replaced; any other existing path is refused (never deleted)."""
    directory = Path(directory)
    if directory.exists() and not _holds_model(directory):
        raise DataError(f"{directory}: exists and is not a wkdist model directory; refusing to "
                        "replace it (choose a new path)")
    staging = directory.with_name(f".{directory.name}.{uuid.uuid4().hex}.partial")
    group = zarr.open_group(staging, mode="w")
    arrays = {_alpha_name(p.lam): np.asarray(p.alpha, dtype=np.float64) for p in parts}
    for name, values in arrays.items():
        group.create_array(name, data=values, compressors=[Crc32cCodec()],
                           config={"write_empty_chunks": True})  # all-zero cells too
    write_frames(group, "train_", train_frames)  # chunked: prediction tasks read a block
    attrs: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "wkdist_version": wkdist_version,
        "settings": settings.to_dict(),
        "target": target,
        "unit": unit,
    }
    if kind == "scalar":
        attrs.update({k: v for k, v in _part_attrs(parts[0]).items() if k != "lambda"})
    else:
        attrs.update({"kind": kind, "parts": [_part_attrs(p) for p in parts]})
    attrs["manifest"] = {"files": _file_checksums(staging), "attributes": _attrs_digest(attrs)}
    group.attrs.update(attrs)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(staging, directory)
    return directory


def _holds_model(directory: Path) -> bool:
    try:
        meta = json.loads((directory / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("attributes", {}).get("format") == FORMAT


def _file_checksums(directory: Path) -> dict[str, list[int]]:
    """{path relative to the model: [size, crc32]} of every file below its arrays."""
    out = {}
    for file in sorted(directory.rglob("*")):
        if file.is_file() and file.parent != directory:
            data = file.read_bytes()
            out[file.relative_to(directory).as_posix()] = [len(data), zlib.crc32(data)]
    return out


def _attrs_digest(attrs: dict[str, Any]) -> str:
    content = {k: v for k, v in attrs.items() if k != "manifest"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _read_attrs(directory: Path) -> dict[str, Any]:
    """The root attributes, read as JSON here so a truncated or edited file is one message."""
    if not (directory / "zarr.json").is_file():
        raise StoreError(f"model: expected a wkdist model directory at {directory}, "
                         "found no zarr.json (was `wkdist run --out` finished?)")
    try:
        meta = json.loads((directory / "zarr.json").read_bytes())
        attrs = meta["attributes"]
        if meta.get("node_type") != "group" or not isinstance(attrs, dict):
            raise TypeError("not a zarr group's attributes")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise StoreError(f"model: cannot read {directory / 'zarr.json'} ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else 'unreadable'}; "
                         "truncated or edited?)") from None
    if attrs.get("format") != FORMAT or attrs.get("format_version") != FORMAT_VERSION:
        older = attrs.get("format") == FORMAT and attrs.get("format_version") == 1
        raise StoreError(
            f"model: expected format {FORMAT!r} version {FORMAT_VERSION} at {directory}, got "
            f"{attrs.get('format')!r} version {attrs.get('format_version')!r}"
            + ("; it has no checksums: fit it again with this wkdist" if older else ""))
    return attrs


def verify_model(directory: Path | str) -> dict[str, Any]:
    """Check a model directory against its manifest; return its attributes.

    Raises StoreError naming the first file that is missing, of another size or checksum, or
    not in the manifest, or attributes that were edited after the model was written.
    """
    directory = Path(directory)
    attrs = _read_attrs(directory)
    manifest = attrs.get("manifest")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        raise StoreError(f"model: {directory} has no checksum manifest (attribute 'manifest')")
    if manifest.get("attributes") != _attrs_digest(attrs):
        raise StoreError(f"model: the attributes in {directory / 'zarr.json'} do not match "
                         "their checksum (edited after the model was written)")
    try:
        found = _file_checksums(directory)
    except OSError as error:
        raise StoreError(f"model: cannot read {error.filename} ({error.strerror})") from None
    for name, expected in files.items():
        if name not in found:
            raise StoreError(f"model: {directory / name} is missing (deleted?)")
        if found[name] != expected:
            size, crc = found[name]
            raise StoreError(f"model: {directory / name} is damaged or edited (size {size}, "
                             f"checksum {crc:08x}; the manifest says {expected})")
    extra = sorted(set(found) - set(files))
    if extra:
        raise StoreError(f"model: {directory / extra[0]} is not part of the model as written")
    return attrs


def _baseline(value: Any, directory: Path) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and k in atomic_numbers and not isinstance(v, bool)
            and isinstance(v, (int, float)) and math.isfinite(v) for k, v in value.items()):
        raise StoreError(f"model: baseline in {directory} is not {{element symbol: finite "
                         f"number}}: {value!r}")
    return {k: float(v) for k, v in value.items()}


def load_model(directory: Path | str) -> Model:
    """Read a model written by ``save_model``, checked against its manifest; a clear
    StoreError for anything else."""
    directory = Path(directory)
    attrs = verify_model(directory)
    try:
        return _load(directory, attrs)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        if isinstance(error, (StoreError, DataError)):
            raise
        raise StoreError(f"model: {directory} is inconsistent ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None


def _load(directory: Path, attrs: dict[str, Any]) -> Model:
    try:
        group = zarr.open_group(zarr.storage.LocalStore(directory, read_only=True), mode="r")
    except Exception as error:  # any unreadable metadata is the same problem for the user
        raise StoreError(f"model: cannot read {directory}: {error}") from None
    kind = attrs.get("kind", "scalar")
    described = attrs.get("parts") if kind != "scalar" else [{"lambda": 0, **attrs}]
    if kind not in ("scalar", "vector", "tensor") or not isinstance(described, list):
        raise StoreError(f"model: {directory} has an unknown target kind {kind!r}")
    names = list(_ARRAYS) + [_alpha_name(int(p.get("lambda", -1))) for p in described]
    missing = [name for name in names if name not in group]
    if missing:
        raise StoreError(f"model: {directory} lacks the arrays {', '.join(missing)}")
    try:
        settings = KernelSettings(**attrs["settings"])
    except (TypeError, SettingsError) as error:
        raise StoreError(f"model: settings in {directory} are not valid: {error}") from None
    # the weights and what the species need; structures are read a block at a time later
    wanted = [name for name in names if name not in ("train_positions", "train_cells",
                                                      "train_pbc")]
    try:
        with zarr.config.set({"array.read_missing_chunks": False}):
            values = {name: group[name][...] for name in wanted}
    except Exception as error:  # a codec or shape the manifest vouches for but zarr refuses
        raise StoreError(f"model: cannot read the arrays of {directory} "
                         f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
    n_train = len(values["train_atom_ptr"]) - 1
    parts = []
    for described_part in described:
        lam = int(described_part["lambda"])
        alpha = values[_alpha_name(lam)]
        coefficients = np.asarray(described_part["coefficients"], dtype=np.float64)
        if (len(coefficients) != settings.nu_max + 1 or not np.isfinite(alpha).all()
                or alpha.shape[0] != n_train * (2 * lam + 1)):
            raise DataError(f"model: {directory} is inconsistent (coefficients or weights)")
        parts.append(Part(lam=lam, alpha=alpha, coefficients=coefficients,
                          regularization=float(described_part["regularization"]),
                          baseline=_baseline(described_part.get("baseline"), directory)))
    return Model(parts=tuple(parts), kind=kind, settings=settings,
                 target=attrs.get("target", ""), unit=attrs.get("unit"), n_train=n_train,
                 train_species=np.unique(values["train_numbers"]), source=str(directory))

