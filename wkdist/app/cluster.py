"""Start or connect to the Dask cluster that [compute] names.

Local workers are processes with one Dask thread each: the engine parallelizes a tile over
``threads_per_worker`` numba threads itself, so Dask threads on top would oversubscribe cores.
The dashboard is bound to 127.0.0.1 (it has no authentication) unless ``[compute]
dashboard_address`` says otherwise; the address printed is the local one, not
``dashboard_link``, which names the host's external address.

SLURM (``cluster = "slurm"``): a ``dask_jobqueue.SLURMCluster`` whose scheduler runs in this
process (the driver), with worker jobs submitted by ``sbatch``:

* ``[compute.slurm]`` keys are SLURMCluster keyword names, checked against its signature.
  Each job runs ``processes`` worker processes (default 1) of one Dask thread and
  ``threads_per_worker`` numba threads each, so a job books ``processes * threads_per_worker``
  CPUs (``cores``, when given, must equal that); ``memory`` defaults to 2 GB per CPU.
* ``[compute] workers`` worker processes are kept up (or ``adaptive_minimum`` ..
  ``adaptive_maximum`` with Dask's adaptive scaling). Workers retire before the job's walltime
  (``--lifetime`` with ``--lifetime-stagger``, see :func:`lifetime_for`), and a watchdog
  replaces every job that ends (retired, cancelled, failed, preempted), so a long run loses at
  most the tiles in flight; the store's markers make reruns of those cheap.
* Mutual TLS with a throw-away certificate (``Security.temporary()``). dask-jobqueue writes the
  worker's copy of the key into ``shared_temp_directory``; wkdist makes that a fresh private
  (0700) directory under ``[compute.slurm] shared_temp_directory`` (default ``~/.wkdist/tls``,
  which must be on a filesystem the compute nodes see) and removes it on exit.
* Before any job is submitted the worker script goes through ``sbatch --test-only``, so a
  rejected option, account or partition fails at once with SLURM's own message, before the
  store is created. The driver then waits (``[compute] pending_timeout`` seconds) for the first
  worker; later, tasks fail with the same timeout when no worker is left at all.
"""

from __future__ import annotations

import contextlib
import getpass
import inspect
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..errors import ConfigError, SlurmError
from .interrupts import deferred_interrupts

if TYPE_CHECKING:  # config validates [compute.slurm] with slurm_options below
    from .config import ComputeConfig

__all__ = ["ClusterHandle", "open_cluster", "local_dashboard", "local_security", "slurm_options",
           "SlurmOptions",
           "slurm_cluster", "parse_walltime", "lifetime_for", "check_job_script",
           "tunnel_command", "close_local", "remove_stale_tls"]

log = logging.getLogger("wkdist")

# A tile task is idempotent and short next to a worker's life: let it outlive a few lost
# workers before Dask gives up (KilledWorker); the store's markers make any rerun cheap.
ALLOWED_FAILURES = 10
# On SLURM workers also die at walltime, by preemption and node failure, and each death while
# a task runs counts against that task: allow more.
SLURM_ALLOWED_FAILURES = 50
# Seconds between two watchdog looks at squeue.
WATCH_INTERVAL = 5.0
# Consecutive worker jobs that end before their worker ever connects before the run gives up
# (a wrong `python`, a missing environment on the nodes, a node that cannot reach us).
EARLY_DEATHS = 4
DEFAULT_TLS_PARENT = "~/.wkdist/tls"
TLS_OWNER = "owner.json"  # {host, pid} of the driver a TLS directory belongs to
# A TLS directory without an owner record (an older wkdist) is stale after a week: longer than
# any driver job lives.
STALE_TLS_AGE_S = 7 * 24 * 3600
MEMORY_PER_CPU_GB = 2
# Seconds a local worker process gets to exit cleanly before its nanny kills it (the worker
# normally needs 1-2 s; several times that on a loaded machine).
LOCAL_CLOSE_TIMEOUT = 60.0

_ENDED = {"COMPLETING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL",
          "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED"}


@dataclass
class ClusterHandle:
    client: object  # distributed.Client
    dashboard: str | None  # an address the user can open, or None
    numba_threads: int
    tunnel: str | None = None  # ssh command forwarding the dashboard port, when useful

    def lines(self) -> list[str]:
        """What to tell the user about the cluster (dashboard and how to reach it)."""
        out = [f"dashboard: {self.dashboard or 'not available'}"]
        if self.tunnel:
            out.append(f"dashboard from your machine: {self.tunnel}  (then open "
                       f"{self.dashboard})")
        return out


def local_dashboard(link: str | None) -> str | None:
    """http://127.0.0.1:PORT/status from distributed's dashboard link."""
    if not link:
        return None
    port = urlparse(link).port
    return f"http://127.0.0.1:{port}/status" if port else None


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _port_race_tolerated() -> Iterator[None]:
    """The preferred dashboard port was free a moment ago; if another process takes it before
    the scheduler binds it, distributed picks another port and warns (an error under
    warnings-as-errors): the port printed is the one it got, so the warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use",
                                category=UserWarning)
        yield


def local_security() -> Any:
    """Per-run mutual TLS for a local cluster: a throw-away CA, certificate and key held in
    memory (``Security.temporary()``) and handed to the worker processes through their
    multiprocessing pipes, never written to disk. Another user on the node can reach the
    scheduler's port but cannot complete the handshake, so cannot run code as this user."""
    try:
        from distributed.security import Security

        return Security.temporary()
    except ImportError:
        raise ConfigError("[compute] cluster: the local cluster's TLS needs the cryptography "
                          "package: pip install cryptography") from None


def _dashboard_address(compute: ComputeConfig, port: int | None) -> str:
    if compute.dashboard_address is not None:
        return compute.dashboard_address
    return f"127.0.0.1:{port if port and _free(port) else 0}"


def _dashboard_for_user(compute: ComputeConfig, link: str | None) -> str | None:
    """The address to print: the local one when bound to loopback, else the host's."""
    if not link:
        return None
    host = (compute.dashboard_address or "127.0.0.1:").rpartition(":")[0]
    if host in ("127.0.0.1", "localhost"):
        return local_dashboard(link)
    return link


def tunnel_command(port: int, host: str | None = None, user: str | None = None) -> str:
    """``ssh -N -L PORT:127.0.0.1:PORT user@host`` for a dashboard bound to 127.0.0.1 here."""
    if host is None:
        host = socket.getfqdn()
        if host.startswith("localhost") or "." not in host:
            host = socket.gethostname()
    user = user or getpass.getuser()
    return f"ssh -N -L {port}:127.0.0.1:{port} {user}@{host}"


@contextlib.contextmanager
def open_cluster(compute: ComputeConfig, *, dashboard_port: int | None = 8787,
                 ) -> Iterator[ClusterHandle]:
    """Yield a connected client; a cluster started here is shut down on exit.

    ``dashboard_port``: the preferred port, any free port when it is taken (or None); ignored
    when ``[compute] dashboard_address`` is set.
    """
    if compute.cluster == "slurm":
        with _open_slurm(compute, dashboard_port=dashboard_port) as handle:
            yield handle
        return

    import dask
    from distributed import Client, LocalCluster

    if compute.cluster == "local":
        security = local_security()
        cluster = client = None
        try:
            with (deferred_interrupts(),  # a half-started cluster cannot be closed cleanly
                  dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}),
                  _port_race_tolerated()):
                cluster = LocalCluster(
                    n_workers=compute.workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1",
                    dashboard_address=_dashboard_address(compute, dashboard_port),
                    security=security, protocol="tls",
                )
                client = Client(cluster, security=security)
            with client:
                yield ClusterHandle(client, _dashboard_for_user(compute, cluster.dashboard_link),
                                    compute.threads_per_worker)
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                close_local(cluster)
    else:
        try:
            client = Client(compute.cluster, timeout="30s")
        except (OSError, TimeoutError) as error:
            raise ConfigError(f"[compute] cluster: cannot connect to {compute.cluster} "
                              f"({error})") from None
        with client:
            yield ClusterHandle(client, client.dashboard_link, compute.threads_per_worker)


def close_local(cluster: Any, *, timeout: float = LOCAL_CLOSE_TIMEOUT) -> None:
    """Close a LocalCluster in order, after its client: the workers first, while the
    scheduler is still up, each allowed ``timeout`` seconds to exit; then the scheduler.

    ``cluster.close()`` alone gives each worker process 4 s before killing it, too short on a
    loaded machine: the kill warnings and heartbeats failing against the closing scheduler
    then land in the user's terminal after the results.
    """
    import asyncio

    async def close_workers() -> None:
        await asyncio.gather(*(worker.close(timeout=timeout)
                               for worker in list(cluster.workers.values())),
                             return_exceptions=True)  # the scheduler closes below regardless

    try:
        cluster.sync(close_workers)
    finally:
        cluster.close(timeout=timeout)


# --------------------------------------------------------------------------- SLURM: options

# SLURMCluster keywords wkdist sets itself, with what to use instead.
_MANAGED = {
    "n_workers": "[compute] workers (or adaptive_minimum/adaptive_maximum)",
    "security": "nothing: wkdist always uses TLS with a temporary certificate",
    "protocol": "nothing: wkdist always uses tls://",
    "dashboard_address": "[compute] dashboard_address",
    "host": "[compute.slurm] scheduler_options = {host = ...}",
    "asynchronous": "nothing", "loop": "nothing", "job_cls": "nothing",
    "scheduler_cls": "nothing", "config_name": "nothing", "scheduler": "nothing",
    "silence_logs": "nothing", "name": "job_name",
}
_DEPRECATED = {"extra": "worker_extra_args", "job_extra": "job_extra_directives",
               "env_extra": "job_script_prologue", "project": "account",
               "header_skip": "job_directives_skip"}
_STRINGS = {"queue", "account", "memory", "walltime", "interface", "local_directory", "python",
            "job_name", "job_mem", "log_directory", "shebang", "shared_temp_directory",
            "worker_command", "death_timeout"}
_STRING_LISTS = {"job_extra_directives", "job_script_prologue", "worker_extra_args",
                 "job_directives_skip"}
_POSITIVE_INTS = {"cores", "processes", "job_cpu"}


def _import_jobqueue():
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError('[compute] cluster: "slurm" needs dask-jobqueue and cryptography: '
                          'pip install "wkdist[slurm]"') from None
    try:
        import cryptography  # noqa: F401  (Security.temporary)
    except ImportError:
        raise ConfigError('[compute] cluster: "slurm" needs cryptography for TLS: '
                          'pip install "wkdist[slurm]"') from None
    return dask_jobqueue


def slurm_keywords() -> set[str]:
    """Keyword names SLURMCluster accepts (its own, JobQueueCluster's and its job class's)."""
    from dask_jobqueue.core import Job, JobQueueCluster
    from dask_jobqueue.slurm import SLURMCluster, SLURMJob

    names: set[str] = set()
    for function in (SLURMCluster.__init__, JobQueueCluster.__init__, SLURMJob.__init__,
                     Job.__init__):
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                names.add(parameter.name)
    names.discard("self")
    return names


_WALLTIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def parse_walltime(text: str) -> int:
    """Seconds in a SLURM time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    match = _WALLTIME.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(text)
    days, a, b, c = match.groups()
    numbers = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = (numbers + [0, 0])[:3]
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(numbers) == 1:
        return numbers[0] * 60
    if len(numbers) == 2:
        return numbers[0] * 60 + numbers[1]
    return (numbers[0] * 60 + numbers[1]) * 60 + numbers[2]


def lifetime_for(walltime_s: int) -> tuple[int, int]:
    """(lifetime, stagger) in seconds for a worker whose job ends after ``walltime_s``.

    A worker retires at a time drawn uniformly from lifetime +- stagger (so workers started
    together do not all leave at once), which is at least ``slack`` before the walltime: time
    to hand over and exit before SLURM kills the job. slack and stagger are 5 % of the walltime
    each, slack at least 60 s, both at most 5 minutes. Walltime 30 min: 1620 +- 90 s.
    """
    slack = min(300, max(60, walltime_s // 20))
    stagger = min(300, walltime_s // 20)
    return walltime_s - slack - stagger, stagger


@dataclass
class SlurmOptions:
    """The SLURMCluster keywords wkdist derives from [compute] and [compute.slurm]."""

    kwargs: dict[str, Any]
    processes: int
    walltime_s: int
    lifetime_s: int | None  # None when the user passes --lifetime in worker_extra_args
    stagger_s: int | None
    tls_parent: str
    jobs: int  # jobs for [compute] workers (or adaptive_maximum)
    notes: list[str] = field(default_factory=list)


def slurm_options(compute: ComputeConfig) -> SlurmOptions:
    """Check ``[compute.slurm]`` and derive SLURMCluster keywords. Raises ConfigError."""
    import dask

    _import_jobqueue()
    where = "[compute.slurm]"
    table = dict(compute.slurm)
    known = slurm_keywords()
    for key, value in table.items():
        if key in _DEPRECATED:
            raise ConfigError(f"{where} {key}: deprecated in dask-jobqueue, use "
                              f"{_DEPRECATED[key]} instead")
        if key in _MANAGED:
            raise ConfigError(f"{where} {key}: set by wkdist; use {_MANAGED[key]}")
        if key not in known:
            options = ", ".join(sorted(known - set(_MANAGED) - set(_DEPRECATED)))
            raise ConfigError(f"{where} {key}: unknown key (expected a SLURMCluster keyword: "
                              f"{options})")
        if key in _STRINGS and not (isinstance(value, str) and value):
            raise ConfigError(f"{where} {key}: expected a non-empty string, got {value!r}")
        if key in _STRING_LISTS and not (isinstance(value, list)
                                         and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{where} {key}: expected an array of strings, got {value!r}")
        if key in _POSITIVE_INTS and (isinstance(value, bool) or not isinstance(value, int)
                                      or value <= 0):
            raise ConfigError(f"{where} {key}: expected a positive integer, got {value!r}")
        if key == "scheduler_options":
            if not isinstance(value, dict):
                raise ConfigError(f"{where} {key}: expected a table, got {value!r}")
            for sub in ("security", "protocol", "dashboard_address"):
                if sub in value:
                    raise ConfigError(f"{where} scheduler_options.{sub}: set by wkdist; use "
                                      f"{_MANAGED[sub]}")

    processes = table.get("processes", 1)
    threads = compute.threads_per_worker
    cpus = processes * threads
    if "cores" in table and table["cores"] != cpus:
        raise ConfigError(
            f"{where} cores: expected processes x [compute] threads_per_worker = {processes} x "
            f"{threads} = {cpus} (each worker process runs threads_per_worker numba threads), "
            f"got {table['cores']}; set threads_per_worker = {table['cores'] // processes} or "
            "leave cores out")
    kwargs = dict(table)
    tls_parent = kwargs.pop("shared_temp_directory", DEFAULT_TLS_PARENT)
    if "log_directory" in kwargs:  # made by the driver: expand ~ and $VARS here
        kwargs["log_directory"] = os.path.expandvars(os.path.expanduser(kwargs["log_directory"]))
    # One Dask thread per worker process (cores = processes), threads_per_worker CPUs each.
    kwargs["cores"] = processes
    kwargs["processes"] = processes
    kwargs.setdefault("job_cpu", cpus)
    kwargs.setdefault("job_name", "wkdist-worker")
    kwargs.setdefault("memory", f"{MEMORY_PER_CPU_GB * cpus}GB")
    try:
        dask.utils.parse_bytes(kwargs["memory"])
    except ValueError:
        raise ConfigError(f"{where} memory: expected an amount like \"16GB\", got "
                          f"{kwargs['memory']!r}") from None
    walltime = kwargs.setdefault("walltime", dask.config.get("jobqueue.slurm.walltime"))
    try:
        walltime_s = parse_walltime(walltime)
    except ValueError:
        raise ConfigError(f'{where} walltime: expected a SLURM time like "04:00:00" or '
                          f'"1-00:00:00", got {walltime!r}') from None
    extra = list(kwargs.get("worker_extra_args", []))
    lifetime = stagger = None
    if not any(arg.startswith("--lifetime") for arg in extra if arg != "--lifetime-restart"):
        if walltime_s < 180:
            raise ConfigError(f"{where} walltime: expected at least 00:03:00 (workers retire "
                              f"before it and hand over), got {walltime!r}")
        lifetime, stagger = lifetime_for(walltime_s)
        extra += ["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"]
    kwargs["worker_extra_args"] = extra
    size = compute.adaptive_maximum or compute.workers
    return SlurmOptions(kwargs, processes, walltime_s, lifetime, stagger, str(tls_parent),
                        jobs=-(-size // processes))


# --------------------------------------------------------------------------- SLURM: commands


def check_commands() -> None:
    """sbatch, squeue and scancel on PATH, else SlurmError naming what to change."""
    for tool in ("sbatch", "squeue", "scancel"):
        if shutil.which(tool) is None:
            raise SlurmError(f'[compute] cluster = "slurm": {tool} is not on PATH; run on a '
                             "SLURM login node (or load its module), or set cluster = "
                             '"local"')


def check_job_script(script: str, directory: Path) -> str:
    """Ask the SLURM controller whether it would accept ``script`` (``sbatch --test-only``).

    Returns sbatch's answer ("Job N to start at ..."); SlurmError with SLURM's message when
    the controller rejects it (unknown partition or account, impossible resources, a bad
    directive).
    """
    path = directory / "worker-job-test.sh"
    path.write_text(script)
    try:
        answer = subprocess.run(["sbatch", "--test-only", str(path)], capture_output=True,
                                text=True, timeout=60, cwd=directory)
    except subprocess.TimeoutExpired:
        raise SlurmError("sbatch --test-only did not answer within 60 s: is slurmctld "
                         "up? (check with `sinfo`)") from None
    finally:
        path.unlink(missing_ok=True)
    text = " ".join((answer.stderr + " " + answer.stdout).split())
    if answer.returncode != 0:
        reasons = [line.strip() for line in answer.stderr.splitlines() if line.strip()]
        reason = "; ".join(reasons) or text or f"exit status {answer.returncode}"
        raise SlurmError(f"[compute.slurm]: SLURM rejects the worker job ({reason}); change "
                         "queue, account, cores/memory, walltime or job_extra_directives "
                         "(`wkdist plan CONFIG.toml` shows the script)")
    return text


def _private_directory(parent: str) -> Path:
    """A fresh 0700 directory for this run's TLS files, with its owner (host, pid) recorded
    so that a later start can remove it if this driver dies without cleaning up."""
    base = Path(os.path.expandvars(parent)).expanduser()
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_stale_tls(base)
        directory = Path(tempfile.mkdtemp(prefix="wkdist-tls-", dir=base))  # mode 0700
        (directory / TLS_OWNER).write_text(json.dumps({"host": socket.gethostname(),
                                                       "pid": os.getpid()}))
        return directory
    except OSError as error:
        raise ConfigError(f"[compute.slurm] shared_temp_directory: cannot make a private "
                          f"directory in {base} ({error.strerror or error})") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_tls(base: Path) -> list[Path]:
    """Remove the TLS directories under ``base`` of drivers that died without cleaning up
    (killed, node lost): those whose recorded driver was on this host and is gone, and those
    without an owner record older than STALE_TLS_AGE_S. Returns what was removed."""
    removed = []
    host = socket.gethostname()
    for directory in base.glob("wkdist-tls-*"):
        try:
            owner = json.loads((directory / TLS_OWNER).read_text())
            stale = owner.get("host") == host and not _alive(int(owner["pid"]))
        except FileNotFoundError:
            stale = time.time() - directory.stat().st_mtime > STALE_TLS_AGE_S
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if stale:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    if removed:
        log.info("removed %d TLS directories of drivers that are gone", len(removed))
    return removed


@contextlib.contextmanager
def slurm_cluster(compute: ComputeConfig, *, dashboard_port: int | None = 8787,
                  options: SlurmOptions | None = None) -> Iterator[Any]:
    """A SLURMCluster with no jobs yet (TLS, dashboard address, scheduler settings); closed,
    and its certificate directory removed, on exit. ``cluster.job_script()`` is the script
    every worker job runs."""
    import dask
    from distributed.security import Security

    jobqueue = _import_jobqueue()
    options = options or slurm_options(compute)
    tls_dir = _private_directory(options.tls_parent)
    cluster = None
    try:
        kwargs = dict(options.kwargs)
        scheduler_options = dict(kwargs.pop("scheduler_options", {}))
        scheduler_options["dashboard_address"] = _dashboard_address(compute, dashboard_port)
        settings = {
            "distributed.scheduler.allowed-failures": SLURM_ALLOWED_FAILURES,
            "distributed.scheduler.no-workers-timeout": f"{compute.pending_timeout}s",
        }
        with dask.config.set(settings), _port_race_tolerated():
            try:
                cluster = jobqueue.SLURMCluster(
                    n_workers=0, security=Security.temporary(),
                    shared_temp_directory=str(tls_dir), scheduler_options=scheduler_options,
                    **kwargs)
            except (ValueError, TypeError, OSError) as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else \
                    type(error).__name__
                raise ConfigError(f"[compute.slurm]: SLURMCluster refuses these options "
                                  f"({first})") from None
        cluster.wkdist_tls_dir = tls_dir
        yield cluster
    finally:
        if cluster is not None:
            cluster.close()
            for name in list(vars(cluster)):
                if name.startswith("_job_") and hasattr(getattr(cluster, name), "close"):
                    getattr(cluster, name).close()  # the certificate files
        shutil.rmtree(tls_dir, ignore_errors=True)


def _squeue() -> dict[str, tuple[str, str]] | None:
    """{job id: (state, reason)} of this user's jobs, or None when squeue fails."""
    try:
        answer = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if answer.returncode != 0:
        return None
    out = {}
    for line in answer.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


class _Watchdog(threading.Thread):
    """Replaces worker jobs that ended (retired at --lifetime, cancelled, failed, preempted).

    dask-jobqueue keeps a job in ``cluster.workers`` after it ends unless its worker had
    connected, and never resubmits on its own; adaptive scaling does not either (its plan is
    the spec, which still counts the dead job). Every ``interval`` seconds this compares the
    cluster's jobs with squeue, drops the ended ones and lets the cluster start their
    replacements. Jobs that keep ending before their worker connects stop the replacing and
    leave a message in ``error``.
    """

    def __init__(self, cluster: Any, *, interval: float = WATCH_INTERVAL) -> None:
        super().__init__(name="wkdist-slurm-watchdog", daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.queue: dict[str, tuple[str, str]] = {}
        self.error: str | None = None
        self.replaced = 0
        self._early = 0
        self._seen: set[str] = set()  # job names whose worker connected
        self.job_ids: set[str] = set()  # every job id this cluster has had
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=30)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.check()
            except Exception as error:  # never let the watchdog die silently
                log.debug("slurm watchdog: %r", error)

    def _connected_names(self) -> set[str]:
        workers = getattr(self.cluster, "scheduler_info", {}).get("workers", {})
        return {str(w.get("name")) for w in workers.values()}

    def check(self) -> None:
        from distributed.core import Status

        if self.cluster.status != Status.running or self.error:
            return
        jobs = cluster_job_ids(self.cluster)
        self.job_ids.update(jobs.values())
        queue = _squeue()
        if queue is None:
            return
        self.queue = {job_id: queue[job_id] for job_id in jobs.values() if job_id in queue}
        connected = self._connected_names()
        for name in jobs:
            if any(c == str(name) or c.startswith(f"{name}-") for c in connected):
                self._seen.add(name)
        gone = {name: job_id for name, job_id in jobs.items()
                if job_id not in queue or queue[job_id][0] in _ENDED}
        for name, job_id in gone.items():
            if name in self._seen:
                self._early = 0
            else:
                self._early += 1
                if self._early >= EARLY_DEATHS:
                    self.error = (f"{self._early} SLURM worker jobs in a row ended before their "
                                  f"worker connected (last: job {job_id}; its output: "
                                  f"{_job_log(self.cluster, job_id)}); check [compute.slurm] "
                                  "python, job_script_prologue and interface")
                    return
            self._seen.discard(name)
        if gone or len(self.cluster.workers) < len(self.cluster.worker_spec):
            self.replaced += len(gone)
            self.cluster.loop.add_callback(self._replace, gone)

    async def _replace(self, gone: dict[str, str]) -> None:
        from distributed.core import Status

        for name, job_id in gone.items():
            job = self.cluster.workers.get(name)
            if job is not None and getattr(job, "job_id", None) == job_id:
                del self.cluster.workers[name]
                await job.close()
        if self.cluster.status == Status.running:
            self.cluster.scale(jobs=len(self.cluster.worker_spec))


def cluster_job_ids(cluster: Any) -> dict[str, str]:
    """{worker name: SLURM job id} of the cluster's submitted jobs."""
    return {name: str(job.job_id) for name, job in list(cluster.workers.items())
            if getattr(job, "job_id", None)}


def cancel_jobs(job_ids: set[str]) -> None:
    """scancel every job id (finished ones included: scancel ignores them). A safety net after
    the cluster closed: dask-jobqueue cancels its jobs on close, but a job whose scancel failed
    (a busy controller) or that was submitted while closing would otherwise stay queued on the
    user's cluster."""
    if not job_ids:
        return
    try:
        subprocess.run(["scancel", *sorted(job_ids)], capture_output=True, timeout=60,
                       check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("could not scancel SLURM jobs %s: %s", " ".join(sorted(job_ids)), error)


def _job_log(cluster: Any, job_id: str) -> str:
    directory = getattr(cluster._dummy_job, "log_directory", None)
    if directory:
        return f"{directory}/{cluster.job_name or 'worker'}-{job_id}.err"
    return f"slurm-{job_id}.out in the directory the driver started in"


def _pending_message(watchdog: _Watchdog, timeout: float) -> str:
    states = [f"job {job_id} {state} ({reason})"
              for job_id, (state, reason) in sorted(watchdog.queue.items())]
    what = "; ".join(states[:5]) or "no job in squeue"
    return (f"no SLURM worker job started within {timeout:g} s ({what}); raise [compute] "
            "pending_timeout, or ask for less (cores, memory, walltime) or another queue "
            "in [compute.slurm]")


@contextlib.contextmanager
def _open_slurm(compute: ComputeConfig, *, dashboard_port: int | None,
                ) -> Iterator[ClusterHandle]:
    from distributed import Client
    from distributed.scheduler import NoWorkerError

    options = slurm_options(compute)
    check_commands()
    job_ids: set[str] = set()
    with contextlib.ExitStack() as stack:
        stack.callback(cancel_jobs, job_ids)  # runs after the cluster has closed
        cluster = stack.enter_context(slurm_cluster(compute, dashboard_port=dashboard_port,
                                                    options=options))
        check_job_script(cluster.job_script(), cluster.wkdist_tls_dir)
        watchdog = _Watchdog(cluster)
        client = Client(cluster, security=cluster.security)
        try:
            if compute.adaptive_maximum is not None:
                cluster.adapt(minimum=compute.adaptive_minimum or 1,
                              maximum=compute.adaptive_maximum)
            else:
                cluster.scale(n=compute.workers)
            watchdog.start()
            log.info("SLURM: %d worker job(s) of %d worker process(es) requested; waiting up "
                     "to %g s for the first worker", options.jobs, options.processes,
                     compute.pending_timeout)
            deadline = time.monotonic() + compute.pending_timeout
            while not cluster.scheduler_info.get("workers"):
                if watchdog.error:
                    raise SlurmError(watchdog.error)
                if time.monotonic() > deadline:
                    watchdog.check()
                    raise SlurmError(_pending_message(watchdog, compute.pending_timeout))
                time.sleep(0.2)
            link = _dashboard_for_user(compute, cluster.dashboard_link)
            port = urlparse(cluster.dashboard_link).port if cluster.dashboard_link else None
            tunnel = tunnel_command(port) if port and link and "127.0.0.1" in link else None
            try:
                yield ClusterHandle(client, link, compute.threads_per_worker, tunnel)
            except NoWorkerError:
                raise SlurmError(watchdog.error or _pending_message(
                    watchdog, compute.pending_timeout)) from None
        finally:
            watchdog.stop()
            job_ids.update(watchdog.job_ids, cluster_job_ids(cluster).values())
            client.close()


def describe_walltime(options: SlurmOptions) -> str:
    """One line on walltime and worker retirement, for plan and the README."""
    if options.lifetime_s is None:
        return (f"walltime {options.walltime_s} s; worker lifetime from your "
                "worker_extra_args")
    return (f"walltime {options.walltime_s} s; each worker retires after "
            f"{options.lifetime_s} +- {options.stagger_s} s and its job is replaced")

