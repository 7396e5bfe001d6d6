"""A progress bar for tile counts that also suits a non-interactive log.

On a terminal the bar is redrawn in place (at most every ``interval_tty`` seconds); otherwise a
full line is printed every ``interval`` seconds, so a batch job's log shows progress without
thousands of carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """``update(done)`` after each finished tile; ``close()`` prints the final state.

    ``done``: items already finished before this run (a resumed store's tiles); they count
    towards the bar but not towards the rate, so the ETA of a resumed run is not near zero.
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
        self.start = time.monotonic()
        self.done = self.initial = done
        self._last = -float("inf")

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
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
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._emit()

    def _emit(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._emit()
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
