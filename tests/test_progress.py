"""The tile progress bar: rate and ETA count only what this run finished."""

import io

import pytest

from wkdist.app import progress
from wkdist.app.progress import Progress, format_duration


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


def test_timer_prints_on_schedule_without_any_update(clock: Clock) -> None:
    stream = io.StringIO()
    bar = Progress(33, stream=stream, interval=10)
    bar.update(0)
    for _ in range(4):  # a long tile: nothing finishes for 40 s
        clock.now += 5
        bar.tick()
        clock.now += 5
        bar.tick()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5 and all("0/33 tiles" in line for line in lines)
    assert lines[-1].endswith("elapsed 00:40 ETA --:--")
    clock.now += 10
    bar.update(18)
    last = stream.getvalue().splitlines()[-1]
    assert "18/33 tiles" in last and "ETA 00:42" in last  # 18 in 50 s, 15 left


def test_last_line_is_printed_once(clock: Clock) -> None:
    stream = io.StringIO()
    bar = Progress(2, stream=stream, interval=10)
    bar.update(1)
    clock.now += 11
    bar.update(2)  # due: printed here
    bar.close()  # nothing new to say
    lines = stream.getvalue().splitlines()
    assert [line.split(" tiles")[0][-3:] for line in lines] == ["1/2", "2/2"]


def test_timer_thread_prints_while_no_tile_finishes() -> None:
    """The real thread and clock: lines keep coming although update is never called again."""
    import threading
    import time

    stream = io.StringIO()
    bar = Progress(5, stream=stream, interval=0.05)
    bar.update(0)
    bar.start()
    deadline = time.monotonic() + 60  # generous: the thread may wait for a loaded CPU
    while len(stream.getvalue().splitlines()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    bar.close()
    assert len(stream.getvalue().splitlines()) >= 4
    assert not any(t.name == "wkdist-progress" for t in threading.enumerate())
    count = len(stream.getvalue().splitlines())
    time.sleep(0.2)
    assert len(stream.getvalue().splitlines()) == count  # stopped: no line after close


def test_run_and_kernels_take_the_same_progress_options() -> None:
    from wkdist.cli.main import _parser

    parser = _parser()
    for argv in (["kernels", "c.toml"], ["run", "--out", "d"]):
        args = parser.parse_args(argv + ["--verify", "--quiet", "--progress-interval", "2.5"])
        assert (args.verify, args.quiet, args.progress_interval) == (True, True, 2.5)
        args = parser.parse_args(argv)
        assert (args.verify, args.quiet, args.progress_interval) == (False, False, 10.0)
        with pytest.raises(SystemExit):
            parser.parse_args(argv + ["--progress-interval", "-1"])
