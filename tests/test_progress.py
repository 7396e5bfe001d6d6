"""The tile progress bar: rate and ETA count only what this run finished."""

import io

import pytest

from wkdist import progress
from wkdist.progress import Progress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    return fake


def test_fresh_run_rate_and_eta(clock: Clock) -> None:
    bar = Progress(10, stream=io.StringIO(), interval=0)
    clock.now += 10
    bar.update(1)
    assert "1/10 tiles" in bar.line() and "0.10/s" in bar.line() and "ETA 01:30" in bar.line()


def test_resumed_run_ignores_tiles_done_before(clock: Clock) -> None:
    stream = io.StringIO()
    bar = Progress(100, done=90, stream=stream, interval=0)
    bar.update(90)
    assert "90/100 tiles" in stream.getvalue() and "ETA --:--" in stream.getvalue()
    clock.now += 20
    bar.update(92)  # 2 tiles in 20 s, 8 left: 80 s
    assert "0.10/s" in bar.line() and "ETA 01:20" in bar.line()


def test_non_tty_prints_whole_lines_at_the_interval(clock: Clock) -> None:
    stream = io.StringIO()
    bar = Progress(4, stream=stream, interval=10)
    for done in range(1, 4):
        clock.now += 3
        bar.update(done)  # first update prints, the next two fall inside the interval
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[") and "3/4" in lines[1]
    assert "\r" not in stream.getvalue()


@pytest.mark.parametrize("seconds, text", [(0, "00:00"), (59.6, "01:00"), (3725, "1:02:05")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
