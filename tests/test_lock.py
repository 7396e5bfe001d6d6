"""wkdist.tiled.lock with real processes: a second writer of a store or an output directory exits 2
naming the holder, and the lock of a killed process is taken over."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_helpers import ASE_SHAPE_WARNING, error_line, write_case
from store_helpers import wkdist_cli as wkdist

pytestmark = ASE_SHAPE_WARNING

HOLD = """
import sys, time
from wkdist.tiled.lock import hold
with hold(sys.argv[1], what="store", command="test holder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@contextlib.contextmanager
def holder(target: Path, seconds: float, script: str = HOLD) -> Iterator[subprocess.Popen]:
    """Another process holding the lock of ``target``, killed at the end."""
    process = subprocess.Popen([sys.executable, "-c", script, str(target), str(seconds)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def test_second_writer_exits_2_naming_the_holder(tmp_path):
    config = write_case(tmp_path, n=10, n_train=6, n_test=3, tile_size=3, workers=1)
    store = tmp_path / "store.zarr"
    with holder(store, 60) as process:
        owner = json.loads((tmp_path / ".store.zarr.lock.owner").read_text())
        assert owner["pid"] == process.pid and owner["host"] == socket.gethostname()
        # a real second process, as a user would start it
        answer = subprocess.run([sys.executable, "-m", "wkdist", "kernels", str(config)],
                                capture_output=True, text=True, timeout=120)
        assert answer.returncode == 2, answer.stderr
        line = error_line(answer.stderr)
        assert f"store {store} is in use by pid {process.pid} on {socket.gethostname()}" in line
        assert "test holder" in line and "dashboard" not in answer.stderr
        assert not store.exists()  # refused before the store was created


def test_output_directory_lock(tmp_path):
    config = write_case(tmp_path, n=10, n_train=6, n_test=3, tile_size=3, workers=1)
    out = tmp_path / "out"
    from wkdist.tiled.lock import hold

    script = HOLD.replace('what="store"', 'what="output directory"')
    with holder(out, 60, script) as process:
        status, _, err = wkdist("run", config, "--out", out, "--quiet")
        assert status == 2
        assert f"output directory {out} is in use by pid {process.pid}" in error_line(err)
        assert "dashboard" not in err
    with hold(out, what="output directory"):  # free again
        pass


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path):
    store = tmp_path / "store.zarr"
    with holder(store, 60) as process:
        process.send_signal(signal.SIGKILL)
        process.wait()
    sidecar = tmp_path / ".store.zarr.lock.owner"
    assert json.loads(sidecar.read_text())["pid"] == process.pid  # left behind by the kill
    from wkdist.tiled.lock import hold

    with hold(store, what="store", command="taker"):
        assert json.loads(sidecar.read_text())["pid"] == os.getpid()
    assert not sidecar.exists()


def test_lock_waits_when_asked(tmp_path):
    from wkdist.errors import LockedError
    from wkdist.tiled.lock import hold

    store = tmp_path / "store.zarr"
    with holder(store, 2):
        with pytest.raises(LockedError, match="in use by pid"):
            with hold(store, what="store"):
                pass
        start = time.monotonic()
        with hold(store, what="store", timeout=60):
            assert time.monotonic() - start < 30
