"""SLURM mode against a real (single-node) SLURM: stores identical to a local run, worker jobs
cancelled part-way and replaced, and the bad-input cases.

The session fixture reuses a running SLURM with partition ``debug`` or starts one with
deploy/start-test-slurm.sh (root and the Debian packages slurmctld, slurmd, slurm-client,
munge). Where that cannot be done the SLURM tests are skipped with the script's reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from store_helpers import ASE_SHAPE_WARNING, write_case

import wkdist
from wkdist.cli import main

pytestmark = ASE_SHAPE_WARNING
pytest.importorskip("dask_jobqueue")
pytest.importorskip("cryptography")

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "deploy" / "start-test-slurm.sh"
KERNEL = {"nu_max": 2, "lambda_max": 2}
ARRAYS = ("K_train", "K_test", "y_train", "y_test", "train_index", "test_index")


@pytest.fixture(autouse=True)
def _jobs_write_into_tmp(tmp_path, monkeypatch):
    """sbatch runs in the driver's directory, where a job without its own -o/-e writes
    slurm-JOBID.out: run each test from its tmp directory, and check that the repository is
    left clean."""
    before = set(ROOT.glob("slurm-*.out"))
    monkeypatch.chdir(tmp_path)
    yield
    assert set(ROOT.glob("slurm-*.out")) == before


@pytest.fixture(scope="session")
def slurm():
    """A SLURM with partition debug: reused when up, else started; skipped with the reason."""
    if shutil.which("bash") is None:
        pytest.skip("cannot start SLURM: no bash")
    try:
        answer = subprocess.run(["bash", str(START)], capture_output=True, text=True,
                                timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{START} did not finish within 600 s")
    message = (answer.stderr.strip() or answer.stdout.strip()).splitlines()
    if answer.returncode == 3:
        pytest.skip(message[-1] if message else "cannot start SLURM")
    if answer.returncode != 0:
        pytest.fail(f"{START} failed (exit {answer.returncode}): {' '.join(message)}")
    return True


def slurm_case(directory: Path, *, workers: int = 2, slurm: dict | None = None,
               compute: dict | None = None, **case) -> Path:
    """write_case with cluster = "slurm" and a [compute.slurm] table."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_case(directory, workers=workers, kernel=KERNEL, **case)
    table = {"queue": "debug", "walltime": "00:10:00",
             "shared_temp_directory": str(directory / "tls"),
             "log_directory": str(directory / "logs")}
    table.update(slurm or {})
    extra = {"cluster": "slurm", "pending_timeout": 600}
    extra.update(compute or {})
    lines = [f"{k} = {_toml(v)}" for k, v in extra.items()]
    text = config.read_text().replace("[compute]\n", "[compute]\n" + "\n".join(lines) + "\n")
    text = text.replace("[store]", "[compute.slurm]\n" + "".join(
        f"{k} = {_toml(v)}\n" for k, v in table.items()) + "[store]")
    config.write_text(text)
    return config


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def arrays(store: Path) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(store, mode="r")
    return {name: (wkdist.read_kernels(store, name) if name.startswith("K_") else group[name])[...]
            for name in ARRAYS}


def assert_identical(store: Path, reference: dict[str, np.ndarray]) -> None:
    got = arrays(store)
    for name in ARRAYS:
        assert got[name].dtype == reference[name].dtype, name
        assert got[name].tobytes() == reference[name].tobytes(), name  # bitwise, NaN-safe
    assert not np.isnan(got["K_train"]).any() and not np.isnan(got["K_test"]).any()


def queued_ids(name: str) -> list[str]:
    """Job ids named ``name`` that squeue lists (retried while the controller is busy)."""
    for _ in range(20):
        answer = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True,
                                text=True)
        if answer.returncode == 0:
            return answer.stdout.split()
        time.sleep(0.5)
    pytest.fail(f"squeue keeps failing: {answer.stderr.strip()}")


def no_jobs_left(name: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True,
                                text=True)
        if answer.returncode == 0 and not answer.stdout.strip():  # (a busy controller errs)
            return
        time.sleep(0.5)
    pytest.fail(f"worker jobs {name} still in squeue {timeout} s after the run")


CASE = {"n": 40, "n_train": 30, "n_test": 6, "tile_size": 3}


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> dict[str, np.ndarray]:
    """The same case computed on the local cluster."""
    directory = tmp_path_factory.mktemp("local")
    config = write_case(directory, workers=2, kernel=KERNEL, **CASE)
    assert main(["kernels", str(config), "--quiet"]) == 0
    return arrays(directory / "store.zarr")


def test_slurm_store_identical_to_local(slurm, local_reference, tmp_path, capsys):
    name = f"wkdist-test-{uuid.uuid4().hex[:8]}"
    config = slurm_case(tmp_path, slurm={"job_name": name}, **CASE)
    status, _, err = run(capsys, "kernels", config, "--quiet")
    assert status == 0, err
    assert "dashboard: http://127.0.0.1:" in err
    assert "ssh -N -L " in err and ":127.0.0.1:" in err
    assert_identical(tmp_path / "store.zarr", local_reference)
    no_jobs_left(name)
    # the certificates lived in a private directory that is gone after the run
    assert not any((tmp_path / "tls").iterdir())
    assert not list(Path.cwd().glob(".dask-jobqueue.worker.*"))


def test_slurm_cancelled_workers_are_replaced(slurm, local_reference, tmp_path, capsys):
    """scancel every worker job after the first tile: the run replaces them and finishes."""
    from wkdist.app.cluster import open_cluster
    from wkdist.app.compute import compute_kernels
    from wkdist.app.config import load_config
    from wkdist.tiled.store import open_store, progress_counts

    name = f"wkdist-test-{uuid.uuid4().hex[:8]}"
    config = load_config(slurm_case(tmp_path, workers=1, slurm={"job_name": name}, **CASE))
    cancelled: list[int] = []

    def cancel_once(result) -> None:
        if cancelled:
            return
        ids = queued_ids(name)
        subprocess.run(["scancel", *ids], check=True)
        # wait for these jobs only: the watchdog may already be submitting their replacements
        # under the same name
        deadline = time.monotonic() + 30.0
        while set(ids) & set(queued_ids(name)):
            assert time.monotonic() < deadline, f"jobs {ids} still queued 30 s after scancel"
            time.sleep(0.5)
        done = sum(d for d, _ in progress_counts(open_store(config.store.path)).values())
        cancelled.append(done)

    with open_cluster(config.compute, dashboard_port=None) as cluster:
        summary = compute_kernels(config, client=cluster.client, progress=False,
                                  on_result=cancel_once)
    total = summary.total_tiles
    assert cancelled and cancelled[0] < total, (cancelled, total)  # cancelled part-way
    jobs = {p.stem.rsplit("-", 1)[-1] for p in (tmp_path / "logs").glob(f"{name}-*.err")}
    assert len(jobs) >= 2, jobs  # the first worker job and at least one replacement
    assert_identical(tmp_path / "store.zarr", local_reference)
    no_jobs_left(name)


def test_adaptive_cluster_releases_idle_worker_jobs(slurm, tmp_path, capsys):
    """With adaptive_minimum/maximum, worker jobs are requested while tasks queue and cancelled
    once idle (as between the kernels and the factorization of a run), and the watchdog does
    not resubmit a job the cluster released; new work requests jobs again."""
    from wkdist.app.cluster import open_cluster
    from wkdist.app.config import load_config

    name = f"wkdist-test-{uuid.uuid4().hex[:8]}"
    config = load_config(slurm_case(tmp_path, workers=1, slurm={"job_name": name},
                                    compute={"adaptive_minimum": 1, "adaptive_maximum": 2},
                                    **CASE))

    def jobs_become(count: int, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while len(queued_ids(name)) != count:
            assert time.monotonic() < deadline, (
                f"expected {count} worker job(s) within {timeout} s, squeue has "
                f"{queued_ids(name)}")
            time.sleep(0.5)

    with open_cluster(config.compute, dashboard_port=None) as cluster:
        client = cluster.client
        busy = client.map(time.sleep, [1.0] * 60, pure=False)
        jobs_become(2)  # tasks queue: the second job is requested
        client.gather(busy)
        jobs_become(1)  # idle: released down to adaptive_minimum
        time.sleep(10)  # several watchdog and adaptive intervals
        assert len(queued_ids(name)) == 1, queued_ids(name)  # not resubmitted
        again = client.map(time.sleep, [1.0] * 60, pure=False)
        jobs_become(2)
        client.gather(again)
    no_jobs_left(name)


# --------------------------------------------------------------------------- bad input


def _assert_one_line_exit_2(status, err, message, store: Path) -> None:
    assert status == 2, err
    last = err.splitlines()[-1]
    assert last.startswith("wkdist: error: ") and message in last, err
    assert err.count("wkdist: error") == 1 and "Traceback" not in err
    assert not store.exists()


def test_sbatch_missing_from_path(tmp_path, capsys, monkeypatch):
    config = slurm_case(tmp_path, n=12, n_train=8, n_test=4, tile_size=4)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    status, _, err = run(capsys, "kernels", config)
    _assert_one_line_exit_2(status, err, "sbatch is not on PATH", tmp_path / "store.zarr")


@pytest.mark.parametrize("slurm_table, message", [
    ({"bogus_option": 1}, "[compute.slurm] bogus_option: unknown key (expected a SLURMCluster"),
    ({"job_extra": ["--x"]}, "[compute.slurm] job_extra: deprecated in dask-jobqueue, use "
                             "job_extra_directives"),
    ({"walltime": "soon"}, '[compute.slurm] walltime: expected a SLURM time'),
    ({"cores": 3}, "[compute.slurm] cores: expected processes x [compute] threads_per_worker"),
    ({"security": True}, "[compute.slurm] security: set by wkdist"),
])
def test_bad_slurm_options(tmp_path, capsys, slurm_table, message):
    config = slurm_case(tmp_path, n=12, n_train=8, n_test=4, tile_size=4, slurm=slurm_table)
    status, _, err = run(capsys, "kernels", config)
    _assert_one_line_exit_2(status, err, message, tmp_path / "store.zarr")


def test_bad_partition_is_refused_before_the_store(slurm, tmp_path, capsys):
    config = slurm_case(tmp_path, n=12, n_train=8, n_test=4, tile_size=4,
                        slurm={"queue": "no-such-partition"})
    status, _, err = run(capsys, "kernels", config)
    _assert_one_line_exit_2(status, err, "SLURM rejects the worker job", tmp_path / "store.zarr")
    assert "invalid partition" in err.lower()


def test_rejected_directive(slurm, tmp_path, capsys):
    config = slurm_case(tmp_path, n=12, n_train=8, n_test=4, tile_size=4,
                        slurm={"job_extra_directives": ["--no-such-sbatch-option"]})
    status, _, err = run(capsys, "kernels", config)
    _assert_one_line_exit_2(status, err, "SLURM rejects the worker job", tmp_path / "store.zarr")


def test_jobs_that_never_start(slurm, tmp_path, capsys):
    name = f"wkdist-test-{uuid.uuid4().hex[:8]}"
    config = slurm_case(tmp_path, n=12, n_train=8, n_test=4, tile_size=4,
                        slurm={"job_name": name, "job_extra_directives": ["--begin=now+1hour"]},
                        compute={"pending_timeout": 3})
    status, _, err = run(capsys, "kernels", config)
    _assert_one_line_exit_2(status, err, "no SLURM worker job started within 3 s",
                            tmp_path / "store.zarr")
    assert "PENDING (BeginTime)" in err and "pending_timeout" in err
    no_jobs_left(name)


def test_plan_shows_the_job_script(tmp_path, capsys):
    config = slurm_case(tmp_path, n=12, n_train=8, n_test=4, tile_size=4,
                        slurm={"account": "chem", "walltime": "04:00:00"})
    status, out, err = run(capsys, "plan", config, "--no-check")
    assert status == 0, err
    assert "#SBATCH -A chem" in out and "#SBATCH -t 04:00:00" in out
    assert "--lifetime 13800s --lifetime-stagger 300s" in out
    assert "tiles: 3 of K_train" in out and "2 of K_test" in out
    assert not (tmp_path / "store.zarr").exists() and not any((tmp_path / "tls").iterdir())
    assert os.stat(tmp_path / "tls").st_mode & 0o077 == 0
