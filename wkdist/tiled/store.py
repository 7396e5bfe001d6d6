"""The kernel store: a zarr 3 group whose tiles survive any crash, and its completion protocol.

Layout (``T`` = tile size, ``nt`` / ``ns`` = tile rows of the train / test set)::

    STORE/zarr.json            attributes["wkdist"]: format, version, settings, data, tile_size,
                               params_hash (written once, by the driver, when the store is made)
    STORE/K_train              (nu_max + 1, n_train, n_train) float64, chunks (nu_max + 1, T, T)
    STORE/K_test               (nu_max + 1, n_test, n_train)  float64, chunks (nu_max + 1, T, T)
    STORE/y_train, y_test      (n,) or (n, components) float64, written by the driver
    STORE/train_index, test_index  (n,) int64: position in the input file (QM9: Index column);
                               rows of K and y follow this split order
    STORE/tiles/K_train        (nt, nt, 4) uint64, chunks (1, 1, 4): completion markers
    STORE/tiles/K_test         (ns, nt, 4) uint64, chunks (1, 1, 4)

Vector and tensor targets (``wkdist.engine.targets``) are fitted per irreducible part lambda; the
attribute ``lambdas`` lists the parts (scalar [0], vector [1], tensor [0, 2]). For lambda >= 1
the kernels are (2 lambda + 1) x (2 lambda + 1) blocks per structure pair, stored flat with
d = 2 lambda + 1 consecutive rows per structure (row = structure * d + mu)::

    STORE/K_train_lambda<L>    (nu_max + 1, n_train d, n_train d), chunks (nu_max + 1, T d, T d)
    STORE/K_test_lambda<L>     (nu_max + 1, n_test d, n_train d),  chunks (nu_max + 1, T d, T d)
    STORE/tiles/K_train_lambda<L>, STORE/tiles/K_test_lambda<L>   markers as above

K^0 (nu = 0) is zero for lambda >= 1 and kept only so every array has the same depth. lambda = 0
always uses K_train / K_test, so a tensor's trace part is exactly the scalar path.

Every kernel chunk is one whole tile (no sharding: a partial write is a read-modify-write),
fill value NaN, empty chunks written, a Crc32c checksum instead of a compressor (tiles compress
only ~1.1x; the checksum catches flipped bytes and truncation).

Completion protocol, per tile task: write the chunk (zarr renames a temporary file into place),
for an off-diagonal K_train tile also its transposed mirror, fsync the chunk files and their
directories (zarr's LocalStore does not), then write the marker chunk [params hash, crc32 of the
tile's chunk file, crc32 of the mirror's chunk file or 0, 1] and fsync it. A tile is done iff its
marker decodes, names this store's parameters, and its chunk files exist; ``verify`` also checks
the checksums and decodes every done tile, and removes the markers of damaged ones so the next
run recomputes them. Markers are a zarr array rather than JSON files because zarr warns about
(and ``Group.members`` trips on) foreign files anywhere in the hierarchy.

Checksums on read: every reader of a tile (``CheckedArray`` for kernel arrays, the tiled solve
for factor tiles) calls ``check_chunk`` with the crc32 the tile's marker recorded, just before
the chunk is decoded, and raises DamagedTileError naming the tile and its marker file. Readers
never unmark: the driver catches the error and calls ``unmark``, so every marker file has one
writer at a time and is never rewritten by a worker.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from ..engine.settings import KernelSettings
from ..errors import DamagedTileError, StoreError
from .durable import DurableTree, fsync_path
from .tiles import Tile, all_tiles, array_lambda, is_train, kernel_array, matrix_bounds, n_blocks

__all__ = [
    "FORMAT",
    "KernelStore",
    "TileWriter",
    "create_store",
    "check_store",
    "open_store",
    "params_hash",
    "missing_tiles",
    "done_tiles",
    "verify_tiles",
    "remove_partials",
    "strict_reads",
    "progress_counts",
    "check_chunk",
    "unmark",
    "CheckedArray",
    "checked_array",
]

FORMAT = 1
_MARKER_DONE = 1


def strict_reads() -> Any:
    """Context manager: reading a chunk that is not on disk raises instead of giving NaN."""
    return zarr.config.set({"array.read_missing_chunks": False})


def params_hash(settings: KernelSettings, data_fingerprint: str, tile_size: int,
                lambdas: tuple[int, ...] = (0,)) -> str:
    """Hash of everything a tile's values depend on; markers and Dask keys carry it."""
    content: dict[str, Any] = {"format": FORMAT, "settings": settings.to_dict(),
                               "data": data_fingerprint, "tile_size": tile_size}
    if tuple(lambdas) != (0,):  # scalar stores keep the hash they had before lambdas existed
        content["lambdas"] = list(lambdas)
    blob = json.dumps(content, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _hash64(params: str) -> int:
    return int(params[:16], 16)


# --------------------------------------------------------------------------- durability


def _chunk_path(root: Path, array: str, coords: Iterable[int]) -> Path:
    return root.joinpath(array, "c", *map(str, coords))


def _crc(path: Path) -> int:
    return zlib.crc32(path.read_bytes())


# --------------------------------------------------------------------------- checksums on read
# Every reader of a kernel or factor tile calls ``check_chunk`` with the crc32 the tile's
# completion marker recorded, just before decoding the chunk: a chunk replaced by another valid
# chunk (its own Crc32c matches) or damaged on disk is found at the moment of use. The reader
# only raises; the driver deletes the marker (``unmark``), so markers stay write-once per writer.


def check_chunk(file: Path, expected: int | None, *, what: str, marker: Path | str,
                kind: str = "kernel") -> None:
    """Raise DamagedTileError unless ``file`` exists and its crc32 is ``expected`` (None: the
    tile is not marked done)."""
    try:
        actual = _crc(Path(file))
    except FileNotFoundError:
        raise DamagedTileError(f"{what}: its chunk file {file} is missing", str(marker),
                               kind) from None
    except OSError as error:
        raise DamagedTileError(f"{what}: cannot read {file} ({error.strerror or error})",
                               str(marker), kind) from None
    if expected is None:
        raise DamagedTileError(f"{what}: no valid completion marker", str(marker), kind)
    if actual != expected:
        raise DamagedTileError(f"{what}: checksum of {file} is {actual:08x}, its marker "
                               f"recorded {expected:08x} (damaged or replaced)",
                               str(marker), kind)


def unmark(marker: Path | str) -> None:
    """Delete a completion marker (driver only), durably: its tile counts as missing."""
    marker = Path(marker)
    marker.unlink(missing_ok=True)
    if marker.parent.is_dir():
        fsync_path(marker.parent, directory=True)


def _marker_file(root: Path, name: str, row: int, col: int) -> Path:
    return _chunk_path(root, "tiles/" + name, (row, col, 0))


def _read_marker(root: Path, name: str, row: int, col: int) -> np.ndarray | None:
    """The 4 marker words of tile (row, col) of kernel array ``name``, or None when absent or
    unreadable."""
    try:
        return _open_readonly(str(root), "tiles/" + name)[row, col]
    except Exception:  # absent (read_missing_chunks False) or damaged: not done
        return None


@functools.lru_cache(maxsize=64)
def _open_readonly_cached(root: str, path: str, version: Any) -> zarr.Array:
    return zarr.open_array(zarr.storage.LocalStore(root, read_only=True), path=path, mode="r",
                           config={"read_missing_chunks": False})


def _open_readonly(root: str, path: str) -> zarr.Array:
    try:
        meta = os.stat(os.path.join(root, path, "zarr.json"))
        version = (meta.st_ino, meta.st_mtime_ns, meta.st_size)
    except OSError:
        version = None
    return _open_readonly_cached(root, path, version)


class CheckedArray:
    """A kernel array of a wkdist store whose reads check every chunk they touch against its
    completion marker first (``check_chunk``). Slicing as zarr's, with slices or Ellipsis."""

    def __init__(self, root: Path | str, name: str, array: zarr.Array | None = None,
                 expected_hash: int | None = None) -> None:
        self.root = Path(root)
        self.name = name
        self.array = array if array is not None else _open_readonly(str(root), name)
        self.expected_hash = expected_hash
        self.shape = self.array.shape
        self.chunks = self.array.chunks
        self.dtype = self.array.dtype
        self.ndim = self.array.ndim

    def check(self, row: int, col: int) -> None:
        """Check chunk (0, row, col) against the marker of the tile it belongs to."""
        mirrored = is_train(self.name) and row > col
        tile = (col, row) if mirrored else (row, col)
        marker = _read_marker(self.root, self.name, *tile)
        expected = None
        if (marker is not None and int(marker[3]) == _MARKER_DONE
                and (self.expected_hash is None or int(marker[0]) == self.expected_hash)):
            expected = int(marker[2 if mirrored else 1])
        what = (f"store {self.root}: kernel tile {self.name} {tile}"
                + (f" (its mirror, chunk ({row}, {col}))" if mirrored else ""))
        check_chunk(_chunk_path(self.root, self.name, (0, row, col)), expected, what=what,
                    marker=_marker_file(self.root, self.name, *tile))

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        ranges = []
        for axis in (1, 2):
            k = key[axis]
            if not isinstance(k, slice) or k.step not in (None, 1):
                raise TypeError(f"{self.name}: checked reads take plain slices, got {k!r}")
            start, stop, _ = k.indices(self.shape[axis])
            size = self.chunks[axis]
            ranges.append(range(start // size, -(-stop // size)) if stop > start else range(0))
        for row in ranges[0]:
            for col in ranges[1]:
                self.check(row, col)
        return self.array[key]


def checked_array(root: Path | str, name: str) -> CheckedArray | zarr.Array:
    """Kernel array ``name`` of the store at ``root``, checked on read when the store has
    completion markers for it (a plain zarr group has none: its Crc32c codec still checks)."""
    root = Path(root)
    if not (root / "tiles" / name / "zarr.json").is_file():
        return _open_readonly(str(root), name)
    expected = None
    try:
        meta = json.loads((root / "zarr.json").read_text())["attributes"]["wkdist"]
        expected = _hash64(str(meta["params_hash"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return CheckedArray(root, name, expected_hash=expected)


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True, eq=False)
class KernelStore:
    """An open store. ``group`` is the zarr group; ``meta`` its ``wkdist`` attributes."""

    path: Path
    group: zarr.Group
    meta: Mapping[str, Any]

    @property
    def n_train(self) -> int:
        return int(self.meta["data"]["n_train"])

    @property
    def n_test(self) -> int:
        return int(self.meta["data"]["n_test"])

    @property
    def tile_size(self) -> int:
        return int(self.meta["tile_size"])

    @property
    def params_hash(self) -> str:
        return str(self.meta["params_hash"])

    @property
    def settings(self) -> KernelSettings:
        return KernelSettings(**self.meta["settings"])

    @property
    def lambdas(self) -> tuple[int, ...]:
        """Irreducible parts whose kernels the store holds (stores before targets: (0,))."""
        return tuple(int(lam) for lam in self.meta.get("lambdas", (0,)))

    def arrays(self) -> list[str]:
        """Kernel array names, train then test per lambda."""
        return [kernel_array(side, lam) for lam in self.lambdas for side in ("train", "test")]

    def tiles(self) -> list[Tile]:
        return all_tiles(self.n_train, self.n_test, self.tile_size, self.lambdas)

    def writer(self) -> TileWriter:
        shape = {name: (self.n_train if is_train(name) else self.n_test, self.n_train)
                 for name in self.arrays()}
        return TileWriter(self.path, params_hash=self.params_hash, tile_size=self.tile_size,
                          shape=shape)


def _describe_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"settings": meta["settings"], "tile_size": meta["tile_size"],
            "data": meta["data"], "lambdas": list(meta.get("lambdas", [0]))}


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old["settings"]) | set(new["settings"])):
        a, b = old["settings"].get(key), new["settings"].get(key)
        if a != b:
            out.append(f"kernel {key} {a!r} in the store, {b!r} now")
    if old["tile_size"] != new["tile_size"]:
        out.append(f"tile_size {old['tile_size']} in the store, {new['tile_size']} now")
    if old.get("lambdas", [0]) != new.get("lambdas", [0]):
        out.append(f"target parts (lambda) {old.get('lambdas', [0])} in the store, "
                   f"{new.get('lambdas', [0])} now")
    for key in ("n_train", "n_test", "target"):
        if old["data"].get(key) != new["data"].get(key):
            out.append(f"{key} {old['data'].get(key)!r} in the store, "
                       f"{new['data'].get(key)!r} now")
    if old["data"]["fingerprint"] != new["data"]["fingerprint"] and not any(
            s.startswith(("n_train", "n_test", "target")) for s in out):
        out.append("the data differ (structures, targets or split/seed)")
    return out


def _metadata(file: Path) -> dict[str, Any]:
    """A zarr.json parsed here, so a truncated or edited one is one message naming it."""
    try:
        meta = json.loads(file.read_bytes())
        if not isinstance(meta, dict):
            raise TypeError(f"a JSON {type(meta).__name__}, not an object")
        return meta
    except (ValueError, TypeError) as error:
        raise StoreError(f"{file}: not valid zarr metadata ({str(error).splitlines()[0]}); the "
                         "file is truncated or edited: restore it, or delete the store and "
                         "compute it again") from None


def _check_metadata(path: Path, meta: Mapping[str, Any]) -> None:
    """Every array of the store has readable metadata of the expected kind."""
    lambdas = [int(lam) for lam in meta.get("lambdas", [0])]
    names = [kernel_array(side, lam) for lam in lambdas for side in ("train", "test")]
    names = names + ["tiles/" + name for name in names] + [
        "y_train", "y_test", "train_index", "test_index"]
    for name in names:
        file = path / name / "zarr.json"
        if not file.is_file():
            raise StoreError(f"{path}: array {name} is missing ({file} not found); delete the "
                             "store and compute it again")
        node = _metadata(file)
        if node.get("node_type") != "array" or not isinstance(node.get("shape"), list):
            raise StoreError(f"{file}: expected the metadata of array {name}, got "
                             f"node_type {node.get('node_type')!r}")


def _read_meta(path: Path) -> tuple[zarr.Group, dict[str, Any]]:
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: not a zarr group (no wkdist store here)")
    node = _metadata(path / "zarr.json")
    if node.get("node_type") != "group":
        raise StoreError(f"{path}: not a zarr group (no wkdist store here)")
    try:
        group = zarr.open_group(zarr.storage.LocalStore(path, read_only=True), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError,
            ValueError, TypeError, KeyError) as error:
        raise StoreError(f"{path}: not a readable zarr group ({type(error).__name__})") from None
    meta = group.attrs.get("wkdist")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreError(f"{path}: a zarr group, but not a wkdist kernel store "
                         f"(format {FORMAT})")
    for key in ("settings", "tile_size", "data", "params_hash"):
        if key not in meta:
            raise StoreError(f"{path / 'zarr.json'}: the wkdist attributes lack {key!r} "
                             "(edited?)")
    _check_metadata(path, meta)
    return group, meta


def open_store(path: Path | str, *, mode: str = "r") -> KernelStore:
    """Open an existing store; ``mode`` "r" (read only) or "r+" (tiles may be written)."""
    path = Path(path)
    if mode not in ("r", "r+"):
        raise ValueError(f"mode: expected 'r' or 'r+', got {mode!r}")
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    _, meta = _read_meta(path)
    group = zarr.open_group(zarr.storage.LocalStore(path, read_only=mode == "r"), mode=mode)
    return KernelStore(path, group, meta)


def create_store(path: Path | str, *, settings: KernelSettings, dataset: Any,
                 tile_size: int, source: str = "") -> KernelStore:
    """Open the store for ``dataset`` (a wkdist.app.dataset.Dataset), creating it if absent.

    An existing store made for other settings, data or tile size raises StoreError naming what
    differs. A new store is built in a temporary sibling directory and renamed into place, so a
    crash while creating it leaves no half-made store at ``path``.
    """
    path = Path(path)
    meta = _store_meta(settings, dataset, tile_size, source)
    lambdas = tuple(meta["lambdas"])
    if check_store(path, meta=meta):
        return open_store(path, mode="r+")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.creating"
        _build(temporary, meta, settings, dataset, tile_size, lambdas)
        if path.exists():
            path.rmdir()  # an empty directory the user made for us
        os.rename(temporary, path)
        fsync_path(path.parent, directory=True)
    except OSError as error:
        shutil.rmtree(locals().get("temporary", path / ".none"), ignore_errors=True)
        raise StoreError(f"{path}: cannot create the store ({error.strerror or error})") from None
    return open_store(path, mode="r+")


def check_store(path: Path | str, *, meta: Mapping[str, Any] | None = None,
                settings: KernelSettings | None = None, dataset: Any = None,
                tile_size: int | None = None) -> bool:
    """Whether a store for these settings and data exists at ``path`` (False: none yet);
    StoreError naming what differs when one was made for others. Creates nothing, so it runs
    before any cluster starts."""
    path = Path(path)
    if meta is None:
        meta = _store_meta(settings, dataset, tile_size, "")
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return False
    _, old = _read_meta(path)
    differences = _differences(_describe_meta(old), _describe_meta(meta))
    if differences:
        raise StoreError(f"{path}: made for other settings or data: " + "; ".join(differences))
    return True


def _store_meta(settings: KernelSettings, dataset: Any, tile_size: int,
                source: str) -> dict[str, Any]:
    from .. import __version__
    from ..engine.targets import lambdas_of, target_kind

    fingerprint = dataset.fingerprint()
    lambdas = lambdas_of(target_kind(dataset.y_train))
    return {
        "format": FORMAT,
        "version": __version__,
        "settings": settings.to_dict(),
        "tile_size": tile_size,
        "data": {"n_train": dataset.n_train, "n_test": dataset.n_test,
                 "target": dataset.target, "unit": dataset.unit,
                 "fingerprint": fingerprint, "source": source},
        "lambdas": list(lambdas),
        "params_hash": params_hash(settings, fingerprint, tile_size, lambdas),
    }


def _build(root: Path, meta: dict[str, Any], settings: KernelSettings, dataset: Any,
           tile_size: int, lambdas: tuple[int, ...]) -> None:
    group = zarr.open_group(zarr.storage.LocalStore(root), mode="w-", attributes={"wkdist": meta})
    n_train, n_test, depth = dataset.n_train, dataset.n_test, settings.nu_max + 1
    for lam in lambdas:
        d = 2 * lam + 1
        for side, rows in (("train", n_train), ("test", n_test)):
            group.create_array(kernel_array(side, lam), shape=(depth, rows * d, n_train * d),
                               chunks=(depth, tile_size * d, tile_size * d), dtype="float64",
                               fill_value=np.nan, compressors=[Crc32cCodec()],
                               config={"write_empty_chunks": True})
    for name, values in (("y_train", dataset.y_train), ("y_test", dataset.y_test),
                         ("train_index", dataset.train_index), ("test_index", dataset.test_index)):
        values = np.asarray(values)
        fill = np.nan if values.dtype.kind == "f" else 0
        array = group.create_array(name, shape=values.shape, chunks=values.shape or (1,),
                                   dtype=values.dtype, fill_value=fill,
                                   compressors=[Crc32cCodec()], config={"write_empty_chunks": True})
        array[...] = values
    markers = group.create_group("tiles")
    nt, ns = n_blocks(n_train, tile_size), n_blocks(n_test, tile_size)
    for lam in lambdas:
        for side, rows in (("train", nt), ("test", ns)):
            markers.create_array(kernel_array(side, lam), shape=(rows, nt, 4), chunks=(1, 1, 4),
                                 dtype="uint64", fill_value=0, compressors=[Crc32cCodec()],
                                 config={"write_empty_chunks": True})
    for directory, _, files in os.walk(root):  # the rename publishes these: make them durable
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_path(Path(directory), directory=True)


# --------------------------------------------------------------------------- writing tiles


class TileWriter:
    """The ``write`` callable tile tasks receive: picklable (a path and a few numbers); opens the
    zarr arrays lazily in the worker process."""

    def __init__(self, path: Path | str, *, params_hash: str, tile_size: int,
                 shape: Mapping[str, tuple[int, int]]) -> None:
        self.path = Path(path)
        self.params_hash = params_hash
        self.tile_size = tile_size
        self.shape = dict(shape)
        self._arrays: dict[str, zarr.Array] = {}
        self._durable = DurableTree(self.path)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "params_hash": self.params_hash,
                "tile_size": self.tile_size, "shape": self.shape}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], params_hash=state["params_hash"],
                      tile_size=state["tile_size"], shape=state["shape"])

    def _array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            self._arrays[name] = zarr.open_array(zarr.storage.LocalStore(self.path), path=name,
                                                 mode="r+")
        return self._arrays[name]

    def _write_chunk(self, name: str, row: int, col: int, values: np.ndarray) -> int:
        n_rows, n_cols = self.shape[name]  # structures
        lam = array_lambda(name)
        rows = matrix_bounds(row, self.tile_size, n_rows, lam)
        cols = matrix_bounds(col, self.tile_size, n_cols, lam)
        self._array(name)[:, rows, cols] = values
        chunk = _chunk_path(self.path, name, (0, row, col))
        self._durable.sync(chunk)
        return _crc(chunk)

    def __call__(self, tile: Tile, values: np.ndarray) -> None:
        crc = self._write_chunk(tile.array, tile.row, tile.col, values)
        mirror = 0
        if tile.mirrored:
            mirror = self._write_chunk(tile.array, tile.col, tile.row, values.transpose(0, 2, 1))
        marker = np.array([_hash64(self.params_hash), crc, mirror, _MARKER_DONE], dtype=np.uint64)
        self._array("tiles/" + tile.array)[tile.row, tile.col] = marker
        self._durable.sync(_chunk_path(self.path, "tiles/" + tile.array, (tile.row, tile.col, 0)))


# --------------------------------------------------------------------------- reading state


def _markers(store: KernelStore, name: str) -> np.ndarray:
    array = store.group["tiles/" + name]
    try:
        return array[...]
    except ValueError:  # a damaged marker chunk: read one by one, damaged ones count as absent
        out = np.zeros(array.shape, dtype=np.uint64)
        for row in range(array.shape[0]):
            for col in range(array.shape[1]):
                try:
                    out[row, col] = array[row, col]
                except ValueError:
                    pass
        return out


def _chunk_files(store: KernelStore, tile: Tile) -> list[Path]:
    files = [_chunk_path(store.path, tile.array, (0, tile.row, tile.col))]
    if tile.mirrored:
        files.append(_chunk_path(store.path, tile.array, (0, tile.col, tile.row)))
    return files


def done_tiles(store: KernelStore) -> list[tuple[Tile, np.ndarray]]:
    """Tiles whose marker is valid for this store and whose chunk files exist, with markers."""
    expected = _hash64(store.params_hash)
    markers = {name: _markers(store, name) for name in store.arrays()}
    done = []
    for tile in store.tiles():
        marker = markers[tile.array][tile.row, tile.col]
        if int(marker[3]) != _MARKER_DONE or int(marker[0]) != expected:
            continue
        if all(f.is_file() for f in _chunk_files(store, tile)):
            done.append((tile, marker))
    return done


def missing_tiles(store: KernelStore) -> list[Tile]:
    """Tiles a run still has to compute (cheap: markers and file existence, no checksums)."""
    done = {tile for tile, _ in done_tiles(store)}
    return [tile for tile in store.tiles() if tile not in done]


def _tile_ok(store: KernelStore, tile: Tile, marker: np.ndarray) -> bool:
    files = _chunk_files(store, tile)
    expected = [int(marker[1]), int(marker[2])]
    for file, crc in zip(files, expected):
        try:
            if _crc(file) != crc:
                return False
        except OSError:
            return False
    array = store.group[tile.array]
    n_rows = store.n_train if is_train(tile.array) else store.n_test
    regions = [(tile.row, tile.col)] + ([(tile.col, tile.row)] if tile.mirrored else [])
    for row, col in regions:
        rows = matrix_bounds(row, store.tile_size, n_rows, tile.lam)
        cols = matrix_bounds(col, store.tile_size, store.n_train, tile.lam)
        try:
            with strict_reads():
                values = array[:, rows, cols]
        except Exception:  # zarr raises ValueError on a checksum mismatch, others on garbage
            return False
        if not np.isfinite(values).all():
            return False
    return True


def verify_tiles(store: KernelStore, *, repair: bool = True) -> list[Tile]:
    """Check every done tile (checksums and decoding); return the damaged ones.

    With ``repair`` their markers are deleted, so the next run recomputes them (the store must
    have been opened with mode "r+").
    """
    damaged = [tile for tile, marker in done_tiles(store) if not _tile_ok(store, tile, marker)]
    if repair:
        for tile in damaged:
            unmark(_marker_file(store.path, tile.array, tile.row, tile.col))
    return damaged


def remove_partials(path: Path | str) -> int:
    """Delete orphan ``*.partial`` files zarr leaves when killed mid-write; returns how many.
    Only while no run writes to this store."""
    count = 0
    for directory, _, files in os.walk(path):
        for name in files:
            if name.endswith(".partial"):
                (Path(directory) / name).unlink(missing_ok=True)
                count += 1
    return count


def progress_counts(store: KernelStore) -> dict[str, tuple[int, int]]:
    """{array: (done, total)} tiles."""
    done = [tile for tile, _ in done_tiles(store)]
    total = store.tiles()
    return {name: (sum(t.array == name for t in done), sum(t.array == name for t in total))
            for name in store.arrays()}

