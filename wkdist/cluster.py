"""Start or connect to the Dask cluster that [compute] names.

Local workers are processes with one Dask thread each: the engine parallelizes a tile over
``threads_per_worker`` numba threads itself, so Dask threads on top would oversubscribe cores.
The dashboard is bound to 127.0.0.1 (it has no authentication); the address printed is that
local one, not ``dashboard_link``, which names the host's external address.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

from .config import ComputeConfig
from .errors import ConfigError

__all__ = ["ClusterHandle", "open_cluster", "local_dashboard"]

# A tile task is idempotent and short next to a worker's life: let it outlive a few lost
# workers before Dask gives up (KilledWorker); the store's markers make any rerun cheap.
ALLOWED_FAILURES = 10


@dataclass
class ClusterHandle:
    client: object  # distributed.Client
    dashboard: str | None  # an address the user can open, or None
    numba_threads: int


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
def open_cluster(compute: ComputeConfig, *, dashboard_port: int | None = 8787,
                 ) -> Iterator[ClusterHandle]:
    """Yield a connected client; a local cluster is shut down on exit.

    ``dashboard_port``: the preferred port, any free port when it is taken (or None).
    """
    import dask
    from distributed import Client, LocalCluster

    if compute.cluster == "slurm":
        raise ConfigError('[compute] cluster: "slurm" is not implemented yet; '
                          'use "local" or "tcp://host:port"')
    if compute.cluster == "local":
        port = dashboard_port if dashboard_port and _free(dashboard_port) else 0
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
            cluster = LocalCluster(
                n_workers=compute.workers, threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=f"127.0.0.1:{port}",
            )
        try:
            with Client(cluster) as client:
                yield ClusterHandle(client, local_dashboard(cluster.dashboard_link),
                                    compute.threads_per_worker)
        finally:
            cluster.close()
    else:
        try:
            client = Client(compute.cluster, timeout="30s")
        except (OSError, TimeoutError) as error:
            raise ConfigError(f"[compute] cluster: cannot connect to {compute.cluster} "
                              f"({error})") from None
        with client:
            yield ClusterHandle(client, client.dashboard_link, compute.threads_per_worker)
