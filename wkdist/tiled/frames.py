"""Structures as flat arrays in a zarr group, read back one block of structures at a time.

Index names: structure k owns atoms ``atom_ptr[k]:atom_ptr[k + 1]``. Arrays, each under a
common prefix (``train_`` in a model, ``structures/train_`` and ``structures/test_`` in a
kernel store)::

    <prefix>numbers    (n_atoms,) int64
    <prefix>positions  (n_atoms, 3) float64, Å
    <prefix>atom_ptr   (n + 1,) int64
    <prefix>cells      (n, 3, 3) float64
    <prefix>pbc        (n, 3) bool

Chunked so that a block of a few hundred structures reads a few chunks: a tile task reads its
own structures and nothing else, so no structure travels through a Dask graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr
from ase import Atoms
from zarr.codecs import Crc32cCodec

from ..errors import StoreError
from .checkpoint import open_array

__all__ = ["FIELDS", "flatten", "write_frames", "read_frames", "frame_count"]

FIELDS = ("numbers", "positions", "atom_ptr", "cells", "pbc")
_ATOMS_PER_CHUNK = 1 << 16
_FRAMES_PER_CHUNK = 1 << 14


def flatten(frames: Sequence[Atoms]) -> dict[str, np.ndarray]:
    """The five arrays of ``frames`` (without prefix)."""
    counts = np.array([len(a) for a in frames], dtype=np.int64)
    if len(frames) == 0:
        return {"numbers": np.zeros(0, np.int64), "positions": np.zeros((0, 3)),
                "atom_ptr": np.zeros(1, np.int64), "cells": np.zeros((0, 3, 3)),
                "pbc": np.zeros((0, 3), bool)}
    return {
        "numbers": np.concatenate([a.numbers for a in frames]).astype(np.int64),
        "positions": np.concatenate([a.get_positions() for a in frames]),
        "atom_ptr": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "cells": np.array([a.get_cell().array for a in frames]).reshape(-1, 3, 3),
        "pbc": np.array([a.get_pbc() for a in frames]).reshape(-1, 3),
    }


def write_frames(group: zarr.Group, prefix: str, frames: Sequence[Atoms]) -> None:
    """Write ``frames`` as ``<prefix><field>`` arrays of ``group`` (driver, at creation)."""
    for name, values in flatten(frames).items():
        per_atom = name in ("numbers", "positions")
        step = _ATOMS_PER_CHUNK if per_atom else _FRAMES_PER_CHUNK
        chunks = (max(1, min(step, len(values))),) + values.shape[1:]
        array = group.create_array(prefix + name, shape=values.shape, chunks=chunks,
                                   dtype=values.dtype, fill_value=0,
                                   compressors=[Crc32cCodec()],
                                   config={"write_empty_chunks": True})
        array[...] = values


def frame_count(root: str | Path, prefix: str) -> int:
    return open_array(root, prefix + "atom_ptr").shape[0] - 1


def read_frames(root: str | Path, prefix: str, start: int = 0, stop: int | None = None
                ) -> list[Atoms]:
    """Structures ``start:stop`` of the arrays ``<prefix>*`` of the zarr hierarchy at ``root``."""
    try:
        ptr_array = open_array(root, prefix + "atom_ptr")
        stop = ptr_array.shape[0] - 1 if stop is None else stop
        ptr = np.asarray(ptr_array[start:stop + 1])
        if len(ptr) < 2:
            return []
        a0, a1 = int(ptr[0]), int(ptr[-1])
        numbers = np.asarray(open_array(root, prefix + "numbers")[a0:a1])
        positions = np.asarray(open_array(root, prefix + "positions")[a0:a1])
        cells = np.asarray(open_array(root, prefix + "cells")[start:stop])
        pbc = np.asarray(open_array(root, prefix + "pbc")[start:stop])
    except Exception as error:  # a checksum mismatch, a missing or truncated chunk
        raise StoreError(f"{Path(root) / prefix}*: structures {start}:{stop} cannot be read, "
                         f"damaged ({type(error).__name__}: {str(error).splitlines()[0][:100]}); "
                         "a kernel store's structures/ is written anew by the next run once "
                         "deleted") from None
    ptr = ptr - a0
    return [Atoms(numbers=numbers[ptr[k]:ptr[k + 1]], positions=positions[ptr[k]:ptr[k + 1]],
                  cell=cells[k], pbc=pbc[k]) for k in range(len(ptr) - 1)]
