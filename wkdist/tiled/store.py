"""The kernel store: a zarr 3 group of kernel tiles that survives any crash (format 2).

Layout (``T`` = tile size, ``nt`` / ``ns`` = tile rows of the train / test set)::

    STORE/zarr.json            attributes["wkdist"]: format, version, settings, data, tile_size,
                               params_hash (written once, by the driver, when the store is made)
    STORE/K_train              (nu_max + 1, n_train, n_train) float64, chunks (nu_max + 1, T, T):
                               only tiles I <= J are stored (the matrix is symmetric)
    STORE/K_test               (nu_max + 1, n_test, n_train)  float64, chunks (nu_max + 1, T, T)
    STORE/y_train, y_test      (n,) or (n, components) float64, written by the driver
    STORE/train_index, test_index  (n,) int64: position in the input file (QM9: Index column);
                               rows of K and y follow this split order
    STORE/markers/K_train      (nt, nt, 3) uint64: completion markers, one chunk per tile row
    STORE/markers/K_test       (ns, nt, 3) uint64
    STORE/structures/train_*, structures/test_*   the structures in split order, as flat
                               arrays (``wkdist.tiled.frames``): tile tasks read theirs here

Vector and tensor targets (``wkdist.engine.targets``) are fitted per irreducible part lambda; the
attribute ``lambdas`` lists the parts (scalar [0], vector [1], tensor [0, 2]). For lambda >= 1
the kernels are (2 lambda + 1) x (2 lambda + 1) blocks per structure pair, stored flat with
d = 2 lambda + 1 consecutive rows per structure (row = structure * d + mu)::

    STORE/K_train_lambda<L>    (nu_max + 1, n_train d, n_train d), chunks (nu_max + 1, T d, T d)
    STORE/K_test_lambda<L>     (nu_max + 1, n_test d, n_train d),  chunks (nu_max + 1, T d, T d)
    STORE/markers/K_train_lambda<L>, STORE/markers/K_test_lambda<L>   markers as above

K^0 (nu = 0) is zero for lambda >= 1 and kept only so every array has the same depth. lambda = 0
always uses K_train / K_test, so a tensor's trace part is exactly the scalar path.

Every kernel chunk is one whole tile (no sharding: a partial write is a read-modify-write),
fill value NaN, empty chunks written, a Crc32c checksum instead of a compressor (tiles compress
only ~1.1x; the checksum catches flipped bytes and truncation). Tiles are written and marked by
the protocol of ``wkdist.tiled.checkpoint``: a tile task writes its chunk and fsyncs it and its
row directory; the driver records [params tag, crc32 of the chunk file, done] in the marker
row. On disk: one file per computed tile, one directory per tile row, one marker file per row.

Reading: ``read_kernels(store, name)`` (also ``wkdist.read_kernels``) is the one reader of a
kernel array. It gives any block of the full matrix (K_train's lower triangle is the transpose
of the stored upper one) and checks every chunk it touches against its marker just before
decoding it, raising DamagedTileError naming the tile; the driver then unmarks the tile.

Stores of format 1 (wkdist 0.1: per-tile marker chunks, lower triangle stored as mirrors) are
refused with one line naming ``wkdist convert``, which rewrites them in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from ..engine.settings import KernelSettings
from ..errors import StoreError
from .checkpoint import (
    MarkerBatch,
    Markers,
    check_chunk,
    chunk_file,
    crc_of,
    create_markers,
    listed_tiles,
    make_row_dirs,
    open_array,
    remove_partials,
    tag_of,
    write_tile,
)
from .durable import fsync_path
from .frames import FIELDS, write_frames
from .tiles import Tile, all_tiles, is_train, kernel_array, matrix_bounds, n_blocks

__all__ = [
    "FORMAT",
    "KernelStore",
    "TileWriter",
    "create_store",
    "check_store",
    "open_store",
    "convert_store",
    "ensure_structures",
    "params_hash",
    "missing_tiles",
    "done_tiles",
    "verify_tiles",
    "remove_partials",
    "strict_reads",
    "progress_counts",
    "KernelArray",
    "read_kernels",
]

FORMAT = 2
_MARKERS = "markers"


def strict_reads() -> Any:
    """Context manager: reading a chunk that is not on disk raises instead of giving NaN."""
    return zarr.config.set({"array.read_missing_chunks": False})


def params_hash(settings: KernelSettings, data_fingerprint: str, tile_size: int,
                lambdas: tuple[int, ...] = (0,)) -> str:
    """Hash of everything a tile's values depend on; markers and Dask keys carry it. (It names
    the values, not the layout: a store converted from format 1 keeps its hash.)"""
    content: dict[str, Any] = {"format": 1, "settings": settings.to_dict(),
                               "data": data_fingerprint, "tile_size": tile_size}
    if tuple(lambdas) != (0,):  # scalar stores keep the hash they had before lambdas existed
        content["lambdas"] = list(lambdas)
    blob = json.dumps(content, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _hash64(params: str) -> int:
    return tag_of(params)


# --------------------------------------------------------------------------- reading kernels


class KernelArray:
    """A kernel array of a store, read as the full matrix: ``array[nu, rows, cols]`` with an
    integer or slice for nu and plain slices for rows and columns (``[...]`` reads it all).

    K_train blocks below the diagonal are transposes of the stored tiles above it. Every chunk
    a read touches is first checked against its marker (``check_chunk``); a plain zarr group
    without markers is read as it is (its Crc32c codec still checks each chunk).
    """

    def __init__(self, root: Path | str, name: str, *, tag: int | None = None,
                 markers: bool = True) -> None:
        self.root = Path(root)
        self.name = name
        self.array = open_array(str(root), name)
        self.tag = tag
        self.markers = Markers(self.root, f"{_MARKERS}/{name}") if markers else None
        self.symmetric = markers and is_train(name)
        self.shape = self.array.shape
        self.chunks = self.array.chunks
        self.dtype = self.array.dtype
        self.ndim = self.array.ndim

    def stored(self, row: int, col: int) -> tuple[int, int, bool]:
        """The stored tile that holds chunk (row, col) of the full matrix, and whether the
        chunk is its transpose."""
        if self.symmetric and row > col:
            return col, row, True
        return row, col, False

    def check(self, row: int, col: int) -> None:
        """Check the stored tile behind chunk (row, col) against its marker."""
        if self.markers is None:
            return
        tile_row, tile_col, transposed = self.stored(row, col)
        what = (f"store {self.root}: kernel tile {self.name} ({tile_row}, {tile_col})"
                + (f" (read as chunk ({row}, {col}))" if transposed else ""))
        check_chunk(chunk_file(self.root, self.name, (0, tile_row, tile_col)),
                    self.markers.expected(tile_row, tile_col, self.tag), what=what,
                    marker=self.markers.ref(tile_row, tile_col))

    def _key(self, key: Any) -> tuple[Any, slice, slice]:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        for axis in (1, 2):
            k = key[axis]
            if not isinstance(k, slice) or k.step not in (None, 1):
                raise TypeError(f"{self.name}: kernel reads take plain slices, got {k!r}")
        return key

    def __getitem__(self, key: Any) -> np.ndarray:
        first, rows, cols = self._key(key)
        r0, r1, _ = rows.indices(self.shape[1])
        c0, c1, _ = cols.indices(self.shape[2])
        depth = len(range(*first.indices(self.shape[0]))) if isinstance(first, slice) else None
        out = np.empty(((depth,) if depth is not None else ()) + (max(r1 - r0, 0),
                                                                  max(c1 - c0, 0)))
        size_r, size_c = self.chunks[1], self.chunks[2]
        for row in range(r0 // size_r, -(-r1 // size_r)) if r1 > r0 else ():
            a0, a1 = max(r0, row * size_r), min(r1, (row + 1) * size_r)
            for col in range(c0 // size_c, -(-c1 // size_c)) if c1 > c0 else ():
                b0, b1 = max(c0, col * size_c), min(c1, (col + 1) * size_c)
                self.check(row, col)
                if self.stored(row, col)[2]:
                    block = np.swapaxes(self.array[first, b0:b1, a0:a1], -1, -2)
                else:
                    block = self.array[first, a0:a1, b0:b1]
                out[..., a0 - r0:a1 - r0, b0 - c0:b1 - c0] = block
        return out


def read_kernels(store: Any, name: str = "K_train") -> KernelArray | zarr.Array:
    """The one reader of a kernel array: ``read_kernels(path)[nu, rows, cols]`` is any block of
    the full matrix, checked against the store's markers.

    Parameters
    ----------
    store : str, Path or KernelStore
        A wkdist kernel store (or any zarr group holding a (depth, m, n) array ``name``).
    name : str
        ``K_train``, ``K_test``, or for vector and tensor targets ``K_train_lambda<L>`` /
        ``K_test_lambda<L>``.

    Returns
    -------
    KernelArray or zarr.Array
        Sliceable like a numpy array of shape (nu_max + 1, rows, n_train); a zarr group
        without wkdist markers gives its plain zarr array.
    """
    root = Path(getattr(store, "path", store))
    if not Markers(root, f"{_MARKERS}/{name}").exists():
        if (root / name / "zarr.json").is_file() and not (root / "tiles").exists():
            return open_array(str(root), name)
        _read_meta(root)  # a wkdist store of another format: one line naming the converter
        raise StoreError(f"{root}: no kernel array {name!r}")
    tag = None
    try:
        meta = json.loads((root / "zarr.json").read_text())["attributes"]["wkdist"]
        tag = _hash64(str(meta["params_hash"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return KernelArray(root, name, tag=tag)



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

    @property
    def tag(self) -> int:
        """What this store's markers record besides the crc (from its params_hash)."""
        return _hash64(self.params_hash)

    def markers(self, name: str) -> Markers:
        return Markers(self.path, f"{_MARKERS}/{name}")

    def writer(self) -> TileWriter:
        shape = {name: (self.n_train if is_train(name) else self.n_test, self.n_train)
                 for name in self.arrays()}
        return TileWriter(self.path, tile_size=self.tile_size, shape=shape)

    def record(self, batch: MarkerBatch, tile: Tile, crc: int) -> None:
        """Driver side: a tile task finished; its marker is written with the batch."""
        batch.add(self.markers(tile.array), self.tag, tile.row, tile.col, crc)


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
    names = names + [f"{_MARKERS}/{name}" for name in names] + [
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
    if isinstance(meta, dict) and meta.get("format") == 1:
        raise StoreError(f"{path}: a store of wkdist {meta.get('version', '0.1')} (format 1); "
                         f"convert it once with `wkdist convert {path}`")
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
        chunks = tuple(max(1, s) for s in values.shape) or (1,)  # an empty test set too
        array = group.create_array(name, shape=values.shape, chunks=chunks,
                                   dtype=values.dtype, fill_value=fill,
                                   compressors=[Crc32cCodec()], config={"write_empty_chunks": True})
        array[...] = values
    _write_structures(group, dataset)
    group.create_group(_MARKERS)
    nt, ns = n_blocks(n_train, tile_size), n_blocks(n_test, tile_size)
    for lam in lambdas:
        for side, rows in (("train", nt), ("test", ns)):
            create_markers(group, f"{_MARKERS}/{kernel_array(side, lam)}", rows, nt)
            make_row_dirs(root, kernel_array(side, lam), rows, prefix=(0,))
    for directory, _, files in os.walk(root):  # the rename publishes these: make them durable
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_path(Path(directory), directory=True)


def _write_structures(group: zarr.Group, dataset: Any) -> None:
    """The split's structures, which tile tasks read (no structure travels in the graph)."""
    group.create_group("structures")
    write_frames(group, "structures/train_", dataset.train_frames)
    write_frames(group, "structures/test_", dataset.test_frames)


def ensure_structures(store: KernelStore, dataset: Any) -> None:
    """Driver: write the structures into a store that lacks them (one converted from format
    1), before any tile task needs them; made durable like a new store's files."""
    if all((store.path / "structures" / f"{side}_{field}" / "zarr.json").is_file()
           for side in ("train", "test") for field in FIELDS):
        return
    shutil.rmtree(store.path / "structures", ignore_errors=True)  # a half-written attempt
    group = zarr.open_group(zarr.storage.LocalStore(store.path), mode="r+")
    _write_structures(group, dataset)
    for directory, _, files in os.walk(store.path / "structures"):
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_path(Path(directory), directory=True)
    fsync_path(store.path, directory=True)


# --------------------------------------------------------------------------- writing tiles


class TileWriter:
    """The ``write`` callable tile tasks receive: picklable (a path and a few numbers); opens the
    zarr arrays lazily in the worker process. Writes the tile's chunk durably and returns its
    crc32, which the driver records in the tile's marker."""

    def __init__(self, path: Path | str, *, tile_size: int,
                 shape: Mapping[str, tuple[int, int]]) -> None:
        self.path = Path(path)
        self.tile_size = tile_size
        self.shape = dict(shape)

    def __call__(self, tile: Tile, values: np.ndarray) -> int:
        n_rows, n_cols = self.shape[tile.array]  # structures
        rows = matrix_bounds(tile.row, self.tile_size, n_rows, tile.lam)
        cols = matrix_bounds(tile.col, self.tile_size, n_cols, tile.lam)
        array = open_array(str(self.path), tile.array, writable=True)
        return write_tile(array, (slice(None), rows, cols), values,
                          chunk_file(self.path, tile.array, (0, tile.row, tile.col)))


# --------------------------------------------------------------------------- reading state


def done_tiles(store: KernelStore) -> list[tuple[Tile, int]]:
    """Tiles whose marker is valid for this store and whose chunk file exists, with the crc
    their marker recorded: one marker file and one directory listing per tile row."""
    tables = {name: store.markers(name).table() for name in store.arrays()}
    files = {name: listed_tiles(store.path, name, prefix=(0,)) for name in store.arrays()}
    tag = store.tag
    done = []
    for tile in store.tiles():
        words = tables[tile.array][tile.row, tile.col]
        if int(words[2]) == 1 and int(words[0]) == tag and (tile.row, tile.col) in files[
                tile.array]:
            done.append((tile, int(words[1])))
    return done


def missing_tiles(store: KernelStore) -> list[Tile]:
    """Tiles a run still has to compute (cheap: markers and directory listings, no checksums)."""
    done = {tile for tile, _ in done_tiles(store)}
    return [tile for tile in store.tiles() if tile not in done]


def tile_ok(root: str | Path, tile: Tile, crc: int, *, tile_size: int, n_rows: int,
            n_cols: int) -> bool:
    """Whether a done tile's chunk file has the crc its marker recorded, decodes and holds
    finite values (a plain function: verification tasks run it on the workers)."""
    try:
        if crc_of(chunk_file(root, tile.array, (0, tile.row, tile.col))) != crc:
            return False
    except OSError:
        return False
    rows = matrix_bounds(tile.row, tile_size, n_rows, tile.lam)
    cols = matrix_bounds(tile.col, tile_size, n_cols, tile.lam)
    try:
        values = open_array(str(root), tile.array)[:, rows, cols]
    except Exception:  # zarr raises ValueError on a checksum mismatch, others on garbage
        return False
    return bool(np.isfinite(values).all())


def _verify_row(root: str, tiles: list[tuple[Tile, int]], tile_size: int, n_train: int,
                n_test: int) -> list[Tile]:
    """The damaged ones among the done tiles of one tile row."""
    return [tile for tile, crc in tiles
            if not tile_ok(root, tile, crc, tile_size=tile_size,
                           n_rows=n_train if is_train(tile.array) else n_test, n_cols=n_train)]


def verify_tiles(store: KernelStore, *, repair: bool = True, client: Any = None) -> list[Tile]:
    """Check every done tile (checksums, decoding, finite values); return the damaged ones.

    With a Dask ``client`` the tile rows are checked in parallel on its workers (in waves),
    otherwise here. With ``repair`` the damaged tiles' markers are cleared by this process
    (the driver), so the next run recomputes them (the store must be open with mode "r+").
    """
    from dask.base import tokenize

    rows: dict[tuple[str, int], list[tuple[Tile, int]]] = {}
    for tile, crc in done_tiles(store):
        rows.setdefault((tile.array, tile.row), []).append((tile, crc))
    common = (str(store.path),)
    sizes = (store.tile_size, store.n_train, store.n_test)
    damaged: list[Tile] = []
    if client is None:
        for tiles in rows.values():
            damaged += _verify_row(*common, tiles, *sizes)
    else:
        from .graph import run_in_waves

        class _Call:
            function = staticmethod(_verify_row)

            def __init__(self, tiles: list[tuple[Tile, int]]) -> None:
                self.key = "wkdist-verify-" + tokenize(store.params_hash, tiles)
                self.args, self.kwargs = (*common, tiles, *sizes), {}

        run_in_waves(client, [_Call(tiles) for tiles in rows.values()],
                     on_result=lambda call, found: damaged.extend(found))
    damaged.sort()
    if repair:
        for tile in damaged:
            store.markers(tile.array).unmark(tile.row, tile.col)
    return damaged


def progress_counts(store: KernelStore) -> dict[str, tuple[int, int]]:
    """{array: (done, total)} tiles."""
    done = [tile for tile, _ in done_tiles(store)]
    total = store.tiles()
    return {name: (sum(t.array == name for t in done), sum(t.array == name for t in total))
            for name in store.arrays()}


# --------------------------------------------------------------------------- format 1 -> 2


def convert_store(path: Path | str) -> dict[str, int]:
    """Rewrite a format-1 store (wkdist 0.1) as format 2, in place; driver only, with the
    store locked. Returns counts: tiles kept, mirror chunks and marker files removed.

    Done tiles keep their values: each one whose 0.1 marker is valid and whose chunk matches
    the crc that marker recorded is marked in the new table; the rest count as missing. Safe
    to interrupt and rerun: the format attribute changes only once the new markers are
    durable, and the old files are removed after that. The structures, which 0.1 stores did
    not keep, are written by the next ``wkdist kernels`` or ``run`` from the config's data.
    """
    path = Path(path)
    node = _metadata(path / "zarr.json") if (path / "zarr.json").is_file() else {}
    meta = node.get("attributes", {}).get("wkdist") if isinstance(node, dict) else None
    if not isinstance(meta, dict) or meta.get("format") not in (1, FORMAT):
        raise StoreError(f"{path}: not a wkdist kernel store")
    group = zarr.open_group(zarr.storage.LocalStore(path), mode="r+")
    lambdas = [int(lam) for lam in meta.get("lambdas", [0])]
    names = [kernel_array(side, lam) for lam in lambdas for side in ("train", "test")]
    tile_size = int(meta["tile_size"])
    n_train, n_test = int(meta["data"]["n_train"]), int(meta["data"]["n_test"])
    nt, ns = n_blocks(n_train, tile_size), n_blocks(n_test, tile_size)
    counts = {"tiles": 0, "mirrors_removed": 0, "marker_files_removed": 0}
    if meta["format"] == 1:
        tag = _hash64(str(meta["params_hash"]))
        if _MARKERS not in group:
            group.create_group(_MARKERS)
        for name in names:
            rows = nt if is_train(name) else ns
            if name not in group[_MARKERS]:
                create_markers(group, f"{_MARKERS}/{name}", rows, nt)
            make_row_dirs(path, name, rows, prefix=(0,))
            old = zarr.open_array(zarr.storage.LocalStore(path, read_only=True),
                                  path=f"tiles/{name}", mode="r")
            entries = []
            for row in range(rows):
                for col in range(row if is_train(name) else 0, nt):
                    try:
                        words = old[row, col]
                    except Exception:  # a damaged 0.1 marker: the tile counts as missing
                        continue
                    if int(words[3]) != 1 or int(words[0]) != tag:
                        continue
                    try:
                        if crc_of(chunk_file(path, name, (0, row, col))) != int(words[1]):
                            continue
                    except OSError:
                        continue
                    entries.append((row, col, int(words[1])))
            Markers(path, f"{_MARKERS}/{name}").record(entries, tag)
            counts["tiles"] += len(entries)
        group.attrs["wkdist"] = {**meta, "format": FORMAT}
        fsync_path(path / "zarr.json")
    for name in names:
        if not is_train(name):
            continue
        for row, col in sorted(listed_tiles(path, name, prefix=(0,))):
            if row > col:  # a 0.1 mirror: the reader transposes the stored tile instead
                chunk_file(path, name, (0, row, col)).unlink(missing_ok=True)
                counts["mirrors_removed"] += 1
    if (path / "tiles").exists():
        counts["marker_files_removed"] = sum(1 for file in (path / "tiles").rglob("*")
                                             if file.is_file() and file.name != "zarr.json")
        shutil.rmtree(path / "tiles")
    fsync_path(path, directory=True)
    return counts
