"""One writer at a time for a kernel store or an output directory.

A lock is an OS file lock (``filelock``: ``flock``) on ``.NAME.lock`` beside the store or the
output directory (never inside: a store is a zarr hierarchy, and an output directory holds only
results), so the kernel releases it when its process dies, however it dies: a stale lock of a
dead process is simply taken over. The holder writes ``pid``, ``host``, ``command`` and
``since`` into the sidecar ``.NAME.lock.owner`` (JSON) after taking the lock, so a second writer
can say who holds it. The sidecar is informative only; the lock itself decides.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import LockedError

__all__ = ["hold", "lock_path", "owner_of"]


def lock_path(target: Path | str) -> Path:
    """The lock file of ``target``: ``.NAME.lock`` beside it."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def owner_of(lock: Path) -> dict | None:
    """What the holder wrote into the sidecar, or None when it is absent or unreadable."""
    try:
        owner = json.loads(Path(f"{lock}.owner").read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _describe(owner: dict | None) -> str:
    if not owner:
        return "another process (no owner recorded yet)"
    since = owner.get("since")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) \
        if isinstance(since, (int, float)) else ""
    return (f"pid {owner.get('pid')} on {owner.get('host')} ({owner.get('command', '?')}"
            f"{when})")


@contextlib.contextmanager
def hold(target: Path | str, *, what: str, timeout: float = 0.0,
         command: str = "wkdist") -> Iterator[Path]:
    """Hold the lock of ``target`` (``what`` names it in messages, ``command`` is recorded for
    the next one) for the ``with`` block.

    Waits up to ``timeout`` seconds for another holder, then raises LockedError naming it.
    """
    from filelock import FileLock, Timeout

    lock = lock_path(Path(target).absolute())
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LockedError(f"{target}: cannot create the {what} ({error.strerror or error} at "
                          f"{error.filename or lock.parent})") from None
    handle = FileLock(str(lock), timeout=timeout, is_singleton=False)
    try:
        handle.acquire()
    except Timeout:
        raise LockedError(f"{what} {target} is in use by {_describe(owner_of(lock))}; wait for "
                          f"it to finish (or stop it), then run this again") from None
    except OSError as error:
        raise LockedError(f"{what} {target}: cannot take its lock {lock} "
                          f"({error.strerror or error})") from None
    sidecar = Path(f"{lock}.owner")
    try:
        sidecar.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                       "command": command,
                                       "since": time.time()}))
        yield lock
    finally:
        sidecar.unlink(missing_ok=True)
        handle.release()
