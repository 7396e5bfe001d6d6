"""fsync helpers: zarr's LocalStore renames chunks into place but never fsyncs.

A write is durable (survives a lost node or power, not only a killed process) once the file
and every directory entry leading to it are fsynced; completion markers are written only then.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import zarr_exit  # noqa: F401  (every process writing zarr stops its I/O thread cleanly)

__all__ = ["fsync_path", "DurableTree"]


def fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableTree:
    """fsyncs a file and every directory between it and ``root``, remembering directories
    already made durable by this object (their entries do not change again)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.synced: set[Path] = set()

    def sync(self, file: Path) -> None:
        fsync_path(file)
        directory = file.parent
        fsync_path(directory, directory=True)  # the rename of the file into place
        while directory != self.root and directory.parent not in self.synced:
            fsync_path(directory.parent, directory=True)  # a directory made for this file
            self.synced.add(directory.parent)
            directory = directory.parent
