"""wkdist.app.cluster: the local cluster is authenticated (per-run mutual TLS), a Ctrl-C while it
starts is one line, and TLS directories of dead drivers are removed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_helpers import ASE_SHAPE_WARNING, error_line, write_case

from wkdist.app.cluster import TLS_OWNER, open_cluster, remove_stale_tls
from wkdist.app.config import ComputeConfig

pytestmark = ASE_SHAPE_WARNING


def _add_one(x: int) -> int:
    return x + 1


INTRUDER = """
import sys
from distributed import Client
from distributed.security import Security

address = sys.argv[1]
attempts = {"tcp": (address.replace("tls://", "tcp://"), None), "no certificate": (address, None),
            "other CA": (address, Security.temporary())}
for name, (target, security) in attempts.items():
    try:
        with Client(target, security=security, timeout="5s") as client:
            client.submit(sum, [1, 2]).result(timeout=5)
        print(name, "CONNECTED", flush=True)
    except BaseException as error:
        print(name, "refused", type(error).__name__, flush=True)
"""


def test_local_cluster_refuses_clients_without_its_credentials():
    """Another process (another user on the node would be one) tries the scheduler's port with
    plain TCP, without a certificate and with a certificate of another CA: all refused."""
    with open_cluster(ComputeConfig(workers=1), dashboard_port=None) as handle:
        address = handle.client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert handle.client.submit(_add_one, 1).result() == 2
        answer = subprocess.run([sys.executable, "-c", INTRUDER, address], capture_output=True,
                                text=True, timeout=180)
        lines = answer.stdout.splitlines()
        assert [line.split()[-2] for line in lines] == ["refused"] * 3, answer.stdout + \
            answer.stderr
        # the key never appears on a worker's command line
        for pid in handle.client.run(os.getpid).values():
            assert b"PRIVATE KEY" not in Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.mark.parametrize("delay", [0.5, 1.5])
def test_ctrl_c_while_the_cluster_starts_is_one_line(tmp_path, delay):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does) shortly after the data
    are read, while the local cluster starts: one line, exit 2, no worker tracebacks."""
    config = write_case(tmp_path, n=10, n_train=6, n_test=3, tile_size=3, workers=2)
    process = subprocess.Popen([sys.executable, "-m", "wkdist", "kernels", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    first = process.stderr.readline()
    assert first.startswith("data: "), first
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    lines = err.strip().splitlines()
    assert lines[-1] == "wkdist: error: interrupted; finished tiles are kept, rerun to resume"
    if any(line.startswith("[") for line in lines[:-1]):  # a progress line: tiles had started
        pytest.skip(f"the interrupt came {delay} s in, after the start on this machine")
    # at most the dashboard line, printed once the start is over, before it
    assert all(line.startswith("dashboard: ") for line in lines[:-1]), err
    error_line(err)


def test_stale_tls_directories_of_dead_drivers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    here = socket.gethostname()
    owners = {"dead": {"host": here, "pid": int(dead.stdout)},
              "alive": {"host": here, "pid": os.getpid()},
              "elsewhere": {"host": here + "-other-node", "pid": int(dead.stdout)}}
    for name, owner in owners.items():
        directory = tmp_path / f"wkdist-tls-{name}"
        directory.mkdir(mode=0o700)
        (directory / TLS_OWNER).write_text(json.dumps(owner))
        (directory / "key.pem").write_text("secret")
    old = tmp_path / "wkdist-tls-old"
    old.mkdir()
    os.utime(old, (time.time() - 8 * 24 * 3600,) * 2)
    new = tmp_path / "wkdist-tls-new"
    new.mkdir()
    removed = remove_stale_tls(tmp_path)
    assert sorted(p.name for p in removed) == ["wkdist-tls-dead", "wkdist-tls-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "wkdist-tls-alive", "wkdist-tls-elsewhere", "wkdist-tls-new"]
