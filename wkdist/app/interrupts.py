"""Ctrl-C for a command that starts Dask worker processes: one line, no worker tracebacks.

A terminal's Ctrl-C sends SIGINT to every process of the foreground group, so each worker
process the command started would print a traceback. ``driver_interrupts`` blocks SIGINT in the
main thread and thereby in every thread and process started after it (threads and spawned
processes inherit the mask), and one relay thread takes the signal with ``sigwait`` and raises
KeyboardInterrupt in the main thread: the driver alone sees a Ctrl-C. ``deferred_interrupts``
holds one back while a cluster is half started (it could not be closed cleanly then) and
raises it when the start is over.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["driver_interrupts", "deferred_interrupts"]

_lock = threading.Lock()
_deferring = 0
_pending = False


def _interrupt() -> None:
    global _pending
    with _lock:
        if _deferring:
            _pending = True
            return
    _thread.interrupt_main()


@contextlib.contextmanager
def driver_interrupts() -> Iterator[None]:
    """Route SIGINT to the main thread only, for the ``with`` block. Nothing is changed when
    this is not the main thread or SIGINT is not Python's default (ignored in a background
    job, or a caller's own handler)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    from multiprocessing import resource_tracker

    # Started first: its launch unblocks SIGINT in the calling thread when it is done.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    finished = threading.Event()

    def relay() -> None:
        while True:
            signal.sigwait({signal.SIGINT})
            if finished.is_set():
                return
            _interrupt()

    thread = threading.Thread(target=relay, name="wkdist-sigint-relay", daemon=True)
    thread.start()
    try:
        yield
    finally:
        finished.set()
        signal.pthread_kill(thread.ident, signal.SIGINT)  # wakes the relay, which returns
        thread.join(timeout=5)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """A Ctrl-C relayed during the block is raised as KeyboardInterrupt when it ends."""
    global _deferring, _pending
    with _lock:
        _deferring += 1
    try:
        yield
    finally:
        with _lock:
            _deferring -= 1
            now = _deferring == 0 and _pending
            if now:
                _pending = False
        if now:
            raise KeyboardInterrupt
