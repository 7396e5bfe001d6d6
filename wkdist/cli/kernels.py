"""``wkdist kernels``."""

from __future__ import annotations

import argparse
import sys

from .commands import command, kernel_options

__all__: list[str] = []


def _say(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr, flush=True)


def _kernels_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="configuration file (TOML)")
    kernel_options(parser)


@command("kernels", "compute the train x train and test x train kernels into the store",
         _kernels_arguments)
def _kernels(args: argparse.Namespace) -> int:
    from ..app.cluster import open_cluster
    from ..app.compute import compute_kernels, preflight
    from ..app.config import load_config
    from ..app.dataset import load_dataset
    from ..tiled.lock import hold

    config = load_config(args.config)
    dataset = load_dataset(config.data)  # before starting workers: bad data fails fast
    _say(f"data: {dataset.n_train} train, {dataset.n_test} test structures; "
         f"store {config.store.path}")
    preflight(config, dataset)
    with (hold(config.store.path, what="store", command="wkdist kernels"),
          open_cluster(config.compute) as cluster):
        _say(*cluster.lines())  # dashboard, and on SLURM the ssh tunnel command
        summary = compute_kernels(
            config, client=cluster.client, numba_threads=cluster.numba_threads,
            verify=args.verify, progress=not args.quiet, progress_interval=args.progress_interval,
            dataset=dataset,
        )
    _say(*summary.lines())
    return 0
