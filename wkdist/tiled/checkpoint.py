"""Write-once tile checkpoints: the one completion protocol of kernel tiles and factor tiles.

Index names: a tiled array's tiles (I, J) = (row, col); every tile is exactly one zarr chunk,
written once, by one task, with values that do not depend on the schedule.

The protocol::

    worker  write_tile     write the tile's chunk (zarr renames a temporary file into place),
                           fsync the chunk file and its tile-row directory; return the crc32 of
                           the chunk file (the task's result)
    driver  Markers.record put [tag, crc, DONE] of finished tiles into the array's marker table,
                           in batches (MarkerBatch): one small zarr chunk per tile row, in one
                           directory, written by the driver alone (read, modify, rename into
                           place, fsync)

A tile is done iff its marker records the array's tag and its chunk file exists. A crash between
a tile's write and its marker costs one recomputation of the same bytes. Readers check a chunk
file's crc against its marker just before decoding it (``check_chunk``) and only raise
DamagedTileError, which names the marker (``Markers.ref``); the driver unmarks (``unmark``).
Workers never write a marker, so no file is ever read-modified-written by two processes.

On disk this is one file per tile, one directory per tile row (made, and made durable, by the
driver when the array is created) and one marker file per tile row.
"""

from __future__ import annotations

import functools
import os
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from ..errors import DamagedTileError
from .durable import DurableTree, fsync_path

__all__ = [
    "DONE",
    "tag_of",
    "chunk_file",
    "crc_of",
    "open_array",
    "make_row_dirs",
    "write_tile",
    "create_markers",
    "Markers",
    "MarkerBatch",
    "unmark",
    "listed_tiles",
    "check_chunk",
    "remove_partials",
]

DONE = 1
_WORDS = 3  # a marker: [tag, crc32 of the chunk file, DONE]


def tag_of(digest: str) -> int:
    """The 64-bit tag markers record, from a hex digest of everything the tiles depend on."""
    return int(digest[:16], 16)


def chunk_file(root: str | Path, array: str, coords: Sequence[int]) -> Path:
    """The file of chunk ``coords`` of array ``array`` (zarr's default "/" chunk keys)."""
    return Path(root, array, "c", *map(str, coords))


def crc_of(file: Path) -> int:
    return zlib.crc32(Path(file).read_bytes())


@functools.lru_cache(maxsize=128)
def _open_cached(root: str, path: str, writable: bool, version: Any) -> zarr.Array:
    store = zarr.storage.LocalStore(root, read_only=not writable)
    # every chunk is written, even one equal to the fill value: a file per done tile
    return zarr.open_array(store, path=path, mode="r+" if writable else "r",
                           config={"read_missing_chunks": False, "write_empty_chunks": True})


def open_array(root: str | Path, path: str, *, writable: bool = False) -> zarr.Array:
    """Array ``path`` of the zarr hierarchy at ``root``, opened once per process and version of
    its metadata file (an array rebuilt at the same path is opened afresh). Reading a chunk
    that is not on disk raises instead of giving the fill value."""
    try:
        meta = os.stat(os.path.join(root, path, "zarr.json"))
        version = (meta.st_ino, meta.st_mtime_ns, meta.st_size)
    except OSError:
        version = None
    return _open_cached(str(root), path, writable, version)


def make_row_dirs(root: str | Path, array: str, rows: int, *, prefix: Sequence[int] = ()) -> None:
    """Create the tile-row directories of an array and make them durable (driver, at creation),
    so a tile's write needs to fsync only its own file and its row directory."""
    base = Path(root, array, "c", *map(str, prefix))
    base.mkdir(parents=True, exist_ok=True)
    for row in range(rows):
        (base / str(row)).mkdir(exist_ok=True)
    directory = base
    while True:
        fsync_path(directory, directory=True)
        if directory == Path(root, array):
            break
        directory = directory.parent


def write_tile(array: zarr.Array, region: tuple, values: np.ndarray, file: Path) -> int:
    """Worker side: write one whole chunk durably; returns the crc32 of its file."""
    row_dir_existed = file.parent.is_dir()
    array[region] = values
    if row_dir_existed:
        fsync_path(file)
        fsync_path(file.parent, directory=True)  # the rename of the chunk into place
    else:  # a row directory zarr had to make: its entries up to the array root too
        DurableTree(file.parent.parent).sync(file)
    return crc_of(file)


def create_markers(group: zarr.Group, path: str, rows: int, cols: int) -> zarr.Array:
    """The marker table of a (rows x cols)-tile array: one chunk per tile row, all in one
    directory ("." chunk keys), zeros (not done) where nothing was recorded."""
    return group.create_array(path, shape=(rows, cols, _WORDS), chunks=(1, cols, _WORDS),
                              dtype="uint64", fill_value=0, compressors=[Crc32cCodec()],
                              chunk_key_encoding={"name": "default", "separator": "."},
                              config={"write_empty_chunks": True})


class Markers:
    """The marker table of one tiled array: ``path`` inside the zarr hierarchy at ``root``.

    Anyone may read it; only the driver writes it (``record``, ``unmark``).
    """

    def __init__(self, root: str | Path, path: str) -> None:
        self.root = str(root)
        self.path = path

    def exists(self) -> bool:
        return Path(self.root, self.path, "zarr.json").is_file()

    def file(self, row: int) -> Path:
        return Path(self.root, self.path, f"c.{row}.0.0")

    def ref(self, row: int, col: int) -> tuple[str, str, int, int]:
        """What DamagedTileError carries so that the driver can unmark the tile."""
        return (self.root, self.path, int(row), int(col))

    def _array(self, writable: bool = False) -> zarr.Array:
        return open_array(self.root, self.path, writable=writable)

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols, _ = self._array().shape
        return rows, cols

    def row(self, row: int) -> np.ndarray:
        """(cols, 3) markers of one tile row; zeros when absent or unreadable."""
        array = self._array()
        try:
            return np.asarray(array[row])
        except Exception:  # absent (read_missing_chunks False) or damaged: nothing done
            return np.zeros(array.shape[1:], dtype=np.uint64)

    def table(self) -> np.ndarray:
        """(rows, cols, 3) markers, one file read per tile row."""
        rows, _ = self.shape
        return np.stack([self.row(r) for r in range(rows)]) if rows else np.zeros(
            (0,) + self._array().shape[1:], dtype=np.uint64)

    def expected(self, row: int, col: int, tag: int | None) -> int | None:
        """The crc recorded for tile (row, col) under ``tag`` (None: any tag), or None when the
        tile is not marked done."""
        words = self.row(row)[col]
        if int(words[2]) != DONE or (tag is not None and int(words[0]) != tag):
            return None
        return int(words[1])

    def record(self, entries: Iterable[tuple[int, int, int]], tag: int) -> None:
        """Driver only: mark tiles (row, col, crc) done, one row chunk write + fsync per row."""
        by_row: dict[int, list[tuple[int, int]]] = {}
        for row, col, crc in entries:
            by_row.setdefault(int(row), []).append((int(col), int(crc)))
        self._write_rows({row: [(col, (tag, crc, DONE)) for col, crc in cols]
                          for row, cols in by_row.items()})

    def unmark(self, row: int, col: int) -> None:
        """Driver only: the tile counts as not done (the next run recomputes it)."""
        self._write_rows({int(row): [(int(col), (0, 0, 0))]})

    def _write_rows(self, changes: dict[int, list[tuple[int, tuple[int, int, int]]]]) -> None:
        if not changes:
            return
        array = self._array(writable=True)
        for row, cells in sorted(changes.items()):
            words = self.row(row).copy()
            for col, value in cells:
                words[col] = np.array(value, dtype=np.uint64)
            array[row] = words
            fsync_path(self.file(row))
        fsync_path(Path(self.root, self.path), directory=True)


class MarkerBatch:
    """Driver side: collects finished tiles of several arrays and records them every
    ``interval`` seconds (and on ``flush``), so markers cost a few writes per second at most."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._pending: dict[tuple[str, str, int], list[tuple[int, int, int]]] = {}
        self._last = time.monotonic()

    def add(self, markers: Markers, tag: int, row: int, col: int, crc: int) -> None:
        self._pending.setdefault((markers.root, markers.path, tag), []).append((row, col, crc))
        if time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (root, path, tag), entries in pending.items():
            Markers(root, path).record(entries, tag)
        self._last = time.monotonic()


def unmark(ref: Sequence[Any]) -> None:
    """Driver only: unmark the tile a DamagedTileError named (its ``marker``)."""
    root, path, row, col = ref
    Markers(root, path).unmark(row, col)


def listed_tiles(root: str | Path, array: str, *, prefix: Sequence[int] = ()) -> set[
        tuple[int, int]]:
    """(row, col) of every chunk file of the array: one directory listing per tile row."""
    base = Path(root, array, "c", *map(str, prefix))
    found: set[tuple[int, int]] = set()
    try:
        rows = list(os.scandir(base))
    except FileNotFoundError:
        return found
    for row in rows:
        if not (row.name.isdigit() and row.is_dir()):
            continue
        with os.scandir(row.path) as entries:
            found.update((int(row.name), int(e.name)) for e in entries if e.name.isdigit())
    return found


def check_chunk(file: Path, expected: int | None, *, what: str, marker: Sequence[Any] | None,
                kind: str = "kernel") -> None:
    """Raise DamagedTileError unless ``file`` exists and its crc32 is ``expected`` (None: the
    tile is not marked done)."""
    try:
        actual = crc_of(Path(file))
    except FileNotFoundError:
        raise DamagedTileError(f"{what}: its chunk file {file} is missing", marker,
                               kind) from None
    except OSError as error:
        raise DamagedTileError(f"{what}: cannot read {file} ({error.strerror or error})",
                               marker, kind) from None
    if expected is None:
        raise DamagedTileError(f"{what}: no valid completion marker", marker, kind)
    if actual != expected:
        raise DamagedTileError(f"{what}: checksum of {file} is {actual:08x}, its marker "
                               f"recorded {expected:08x} (damaged or replaced)", marker, kind)


def remove_partials(path: str | Path) -> int:
    """Delete orphan ``*.partial`` files zarr leaves when killed mid-write; returns how many.
    Only while nothing writes below ``path``."""
    count = 0
    for directory, _, files in os.walk(path):
        for name in files:
            if name.endswith(".partial"):
                (Path(directory) / name).unlink(missing_ok=True)
                count += 1
    return count
