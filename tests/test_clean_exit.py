"""`wkdist run` in a fresh process ends with its results: no worker warnings or tracebacks
after them, the last progress line once, even when worker processes are slow to exit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

from store_helpers import ASE_SHAPE_WARNING, write_case

pytestmark = ASE_SHAPE_WARNING

# A worker preload whose teardown takes 6 s: how a worker process exits on a loaded machine,
# and longer than distributed's default 4 s before it kills a closing worker.
SLOW_EXIT = textwrap.dedent("""
    import time

    def dask_teardown(worker):
        time.sleep(6)
""")


LOAD_NOTES = re.compile(r"Event loop was unresponsive|full garbage collections took")


def test_run_ends_cleanly_after_the_results(tmp_path):
    config = write_case(tmp_path, n_train=16, n_test=6, tile_size=6)
    (tmp_path / "slow_exit.py").write_text(SLOW_EXIT)
    env = dict(os.environ)
    env["DASK_DISTRIBUTED__WORKER__PRELOAD"] = json.dumps([str(tmp_path / "slow_exit.py")])
    proc = subprocess.run(
        [sys.executable, "-m", "wkdist", "run", str(config), "--out", str(tmp_path / "out"),
         "--verify", "--progress-interval", "0.2"],
        capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    last = lines.index(f"model: {tmp_path / 'out' / 'model'}")
    assert lines[last - 4].startswith("test MAE "), proc.stderr
    # distributed's notes on a starved event loop or long GC pauses are load, not shutdown
    after = [line for line in lines[last + 1:] if not LOAD_NOTES.search(line)]
    assert after == [], proc.stderr
    for bad in ("Traceback", "ERROR", "still alive"):
        assert bad not in proc.stderr, proc.stderr
    progress = [line for line in lines if line.startswith("[")]
    assert progress and progress[-1].split("] ")[1].startswith("9/9 tiles"), proc.stderr
    assert sum("9/9 tiles" in line for line in progress) == 1, proc.stderr
    assert (tmp_path / "out" / "results.json").exists()


def test_a_busy_zarr_io_thread_at_exit_prints_nothing():
    """zarr joins its I/O thread for only 0.2 s at exit and prints a traceback when a loaded
    machine makes it miss that; every process that writes stores waits for it instead."""
    code = textwrap.dedent("""
        import time
        import wkdist.tiled.store
        from zarr.core.sync import _get_loop

        _get_loop().call_soon_threadsafe(time.sleep, 1.0)  # the thread is busy at exit
        time.sleep(0.1)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
