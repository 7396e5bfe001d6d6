import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from store_helpers import ASE_SHAPE_WARNING, read_kernels, reference, write_case

from wkdist.app.config import load_config
from wkdist.cli import main
from wkdist.tiled.checkpoint import Markers

pytestmark = ASE_SHAPE_WARNING


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_kernels_then_status_then_damaged_tile(tmp_path, capsys):
    config_path = write_case(tmp_path, n_train=12, n_test=5, tile_size=4)
    status, _, err = run(capsys, "kernels", config_path, "--progress-interval", "0")
    assert status == 0, err
    assert "dashboard: http://127.0.0.1:" in err and "computed 12 of 12 tiles" in err
    assert "/12 tiles" in err and "ETA" in err
    store = tmp_path / "store.zarr"
    status, out, _ = run(capsys, "status", store)
    assert status == 0 and "K_train: 6/6 tiles done" in out and "K_test: 6/6" in out
    chunk = store / "K_test" / "c" / "0" / "0" / "1"
    raw = bytearray(chunk.read_bytes())
    raw[-20] ^= 1
    chunk.write_bytes(bytes(raw))
    status, out, _ = run(capsys, "status", store, "--verify")
    assert status == 1 and "damaged: 1 tiles (K_test[0,1])" in out
    status, _, err = run(capsys, "kernels", config_path, "--quiet")
    assert status == 0 and "computed 1 of 12 tiles (11 already done)" in err
    config = load_config(config_path)
    k_train, k_test = read_kernels(store)
    r_train, r_test = reference(store, tmp_path / "mols.xyz", config.kernel)
    np.testing.assert_array_equal(k_train, r_train)
    np.testing.assert_array_equal(k_test, r_test)
    # the same store with other settings is refused, naming the difference
    config_path.write_text(config_path.read_text().replace("nu_max = 3", "nu_max = 2"))
    status, _, err = run(capsys, "kernels", config_path)
    assert status == 2
    last = err.splitlines()[-1]
    assert last.startswith("wkdist: error: ") and "kernel nu_max 3 in the store, 2 now" in last
    assert err.count("wkdist: error") == 1 and "Traceback" not in err


@pytest.mark.parametrize("edit, message", [
    (("tile_size = 4", "tile_size = 'x'"), "[compute] tile_size: expected a positive integer"),
    (("[data]", "[data"), "not valid TOML"),
    (('target = "U"', 'target = "missing"'), "structure 0 has no target 'missing'"),
    (("n_test = 5", "n_test = 50"), "n_train + n_test = 62: larger than the 30 structures"),
    (('path = "mols.xyz"', 'path = "absent.xyz"'), "absent.xyz: no such file"),
    (('path = "store.zarr"', 'path = "blocker/store.zarr"'), "cannot create the store"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, edit, message):
    config_path = write_case(tmp_path, n_train=12, n_test=5, tile_size=4)
    config_path.write_text(config_path.read_text().replace(*edit))
    (tmp_path / "blocker").write_text("a file where a directory should be")
    status, out, err = run(capsys, "kernels", config_path)
    assert status == 2
    last = err.splitlines()[-1]  # an info line ("data: ...") may come before the error
    assert last.startswith("wkdist: error: ") and message in last, err
    assert err.count("wkdist: error") == 1 and "Traceback" not in err
    assert not (tmp_path / "store.zarr").exists()


def test_nan_target_and_status_of_nothing(tmp_path, capsys):
    config_path = write_case(tmp_path, n_train=12, n_test=5)
    text = (tmp_path / "mols.xyz").read_text()
    (tmp_path / "mols.xyz").write_text(text.replace("U=", "U=nan BAD=", 1))
    status, _, err = run(capsys, "kernels", config_path)
    assert status == 2 and "target 'U' is NaN" in err
    status, _, err = run(capsys, "status", tmp_path / "nothing.zarr")
    assert status == 2 and err == f"wkdist: error: {tmp_path / 'nothing.zarr'}: no such store\n"


@pytest.mark.slow
def test_sigkill_then_resume_is_identical(tmp_path, capsys):
    """A run killed with SIGKILL (driver and workers) part-way resumes to identical arrays."""
    reference_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    reference_dir.mkdir()
    killed_dir.mkdir()
    case = dict(n=60, n_train=48, n_test=12, tile_size=3, kernel={"nu_max": 4, "lambda_max": 3})
    config_ref = write_case(reference_dir, **case)
    config_killed = write_case(killed_dir, **case)
    assert run(capsys, "kernels", config_ref, "--quiet")[0] == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "wkdist.cli", "kernels", str(config_killed), "--quiet"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    markers = Markers(killed_dir / "store.zarr", "markers/K_train")
    deadline = time.monotonic() + 600  # a loaded machine starts the cluster slowly
    while time.monotonic() < deadline:
        if markers.exists() and int((markers.table()[:, :, 2] == 1).sum()) >= 5:
            break
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the driver, the scheduler and every worker
    process.wait()
    status, _, err = run(capsys, "kernels", config_killed, "--quiet")
    assert status == 0, err
    line = next(l for l in err.splitlines() if "computed" in l)
    computed, total = (int(x) for x in line.split("computed ")[1].split(" tiles")[0].split(" of "))
    assert 0 < computed < total, line
    for a, b in zip(read_kernels(reference_dir / "store.zarr"),
                    read_kernels(killed_dir / "store.zarr")):
        np.testing.assert_array_equal(a, b)
