"""Stop zarr's I/O thread patiently at interpreter exit.

zarr stops its event-loop thread at exit with a 0.2 s join; on a loaded machine the thread can
miss that, and zarr then prints a warning and a "Cannot close a running event loop" traceback
after a command's results (driver) or while a worker exits. The handler registered here runs
before zarr's (atexit is last in, first out; zarr's is registered when ``zarr.core.sync`` is
first imported, which this module does first) and waits for the thread to stop.
"""

from __future__ import annotations

import atexit

import zarr.core.sync

__all__ = ["stop_io_thread"]


def stop_io_thread(timeout: float = 30.0) -> None:
    """Stop zarr's event loop and join its thread, so zarr's own exit handler finds it done."""
    loop = getattr(zarr.core.sync, "loop", [None])[0]
    thread = getattr(zarr.core.sync, "iothread", [None])[0]
    if loop is None or thread is None or not thread.is_alive():
        return
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout)


atexit.register(stop_io_thread)
