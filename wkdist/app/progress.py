"""A progress bar for tile counts that also suits a non-interactive log.

On a terminal the bar is redrawn in place (every ``interval_tty`` seconds); otherwise a full
line is printed every ``interval`` seconds, so a batch job's log shows progress without
thousands of carriage returns. A timer thread prints while no tile finishes (a tile can take
minutes), so a log always shows the run is alive, how far it got and its ETA.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

__all__ = ["Progress", "format_duration", "say"]

log = logging.getLogger("wkdist")


def say(*lines: str) -> None:
    """Report lines of a job's course at INFO level (the CLI shows them on stderr)."""
    for line in lines:
        log.info("%s", line)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """``update(done)`` after each finished tile; ``close()`` prints the final state.

    ``done``: items already finished before this run (a resumed store's tiles); they count
    towards the bar but not towards the rate, so the ETA of a resumed run is not near zero.
    ``start()`` runs the timer that prints on schedule between updates; ``stop()`` ends it
    (``close()`` does too). ``interval`` <= 0: a line at every update and no timer.
    """

    def __init__(self, total: int, *, done: int = 0, label: str = "tiles",
                 stream: TextIO | None = None,
                 interval: float = 10.0, interval_tty: float = 0.2, width: int = 30,
                 enabled: bool = True) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval_tty if self.tty else interval
        self.width = width
        self.enabled = enabled
        self.start_time = time.monotonic()
        self.done = self.initial = done
        self._last = -float("inf")
        self._shown: int | None = None  # `done` of the last line printed
        self._lock = threading.Lock()  # the timer thread and update() both print
        self._halt = threading.Event()
        self._timer: threading.Thread | None = None

    def line(self) -> str:
        elapsed = time.monotonic() - self.start_time
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        fraction = self.done / self.total if self.total else 1.0
        filled = int(round(self.width * fraction))
        bar = "#" * filled + "-" * (self.width - filled)
        eta_text = format_duration(eta) if eta == eta else "--:--"
        return (f"[{bar}] {self.done}/{self.total} {self.label} {100 * fraction:5.1f}% "
                f"{rate:.2f}/s elapsed {format_duration(elapsed)} ETA {eta_text}")

    def update(self, done: int) -> None:
        self.done = done
        self.tick()

    def tick(self) -> None:
        """Print a line if one is due (the timer calls this; so does update)."""
        with self._lock:
            now = time.monotonic()
            if self.enabled and now - self._last >= self.interval:
                self._last = now
                self._emit()

    def start(self) -> None:
        """Start the timer thread (a daemon: it never keeps the process alive)."""
        if self.enabled and self.interval > 0 and self._timer is None:
            self._timer = threading.Thread(target=self._run, name="wkdist-progress",
                                           daemon=True)
            self._timer.start()

    def _run(self) -> None:
        while not self._halt.wait(max(0.01, self._last + self.interval - time.monotonic())):
            self.tick()

    def stop(self) -> None:
        self._halt.set()
        if self._timer is not None:
            self._timer.join()
            self._timer = None

    def _emit(self) -> None:
        self._shown = self.done
        if self.tty:
            self.stream.write("\r" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Stop the timer and print the final state, unless the last line already showed it."""
        self.stop()
        with self._lock:
            if self.enabled:
                if self._shown != self.done:
                    self._emit()
                if self.tty:
                    self.stream.write("\n")
                    self.stream.flush()
