"""The ``wkdist`` command line: the subcommands of ``wkdist.commands`` under one error policy.

Every deliberate error (WkdistError), a malformed TOML file or an unusable path ends as one line
``wkdist: error: ...`` on stderr and exit status 2, never a traceback. Subcommands register
with ``wkdist.commands.command``; this module imports them (never the other way round).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tomllib
from collections.abc import Sequence
from typing import Any

from .commands import COMMANDS, command, kernel_options
from .errors import WkdistError
from .interrupts import driver_interrupts

__all__ = ["main", "command", "kernel_options", "COMMANDS"]


def _say(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- wkdist kernels


def _kernels_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="configuration file (TOML)")
    kernel_options(parser)


@command("kernels", "compute the train x train and test x train kernels into the store",
         _kernels_arguments)
def _kernels(args: argparse.Namespace) -> int:
    from .cluster import open_cluster
    from .compute import compute_kernels, preflight
    from .config import load_config
    from .dataset import load_dataset
    from .lock import hold

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


# --------------------------------------------------------------------------- wkdist status


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="kernel store directory (or a model directory: its "
                                      "files are checked against their checksums)")
    parser.add_argument("--verify", action="store_true",
                        help="check every done kernel and factor tile's checksums; damaged tiles "
                             "are reported and unmarked so the next run recomputes them")


@command("status", "tiles done per array; --verify checks them", _status_arguments)
def _status(args: argparse.Namespace) -> int:
    from .lock import hold
    from .model import FORMAT as MODEL_FORMAT
    from .model import verify_model
    from .store import open_store

    if _is_model(args.store, MODEL_FORMAT):
        attrs = verify_model(args.store)  # a damaged model: one line, exit 2
        print(f"model {args.store}: target {attrs.get('target')!r}, "
              f"{len(attrs['manifest']['files'])} files match their checksums")
        return 0
    store = open_store(args.store, mode="r+" if args.verify else "r")
    with (hold(store.path, what="store", command="wkdist status --verify") if args.verify
          else contextlib.nullcontext()):
        return _store_status(store, args.verify)


def _store_status(store: Any, verify: bool) -> int:
    from .solve import verify_factors
    from .store import progress_counts, verify_tiles

    meta = store.meta
    print(f"store {store.path}: n_train {store.n_train}, n_test {store.n_test}, "
          f"tile_size {store.tile_size}, nu_max {meta['settings']['nu_max']}, "
          f"wkdist {meta['version']}")
    damaged = verify_tiles(store, repair=True) if verify else []
    factors = verify_factors(store.path, repair=True) if verify else []
    complete = True
    for name, (done, total) in progress_counts(store).items():
        complete &= done == total
        print(f"{name}: {done}/{total} tiles done")
    if verify:
        if damaged:
            print(f"damaged: {len(damaged)} tiles ({', '.join(map(str, damaged[:20]))}"
                  f"{', ...' if len(damaged) > 20 else ''}); unmarked, the next "
                  "`wkdist kernels` recomputes them")
        if factors:
            print(f"damaged: {len(factors)} factor tiles ({', '.join(factors[:20])}"
                  f"{', ...' if len(factors) > 20 else ''}); unmarked, the next `wkdist fit` "
                  "recomputes them")
        if damaged or factors:
            return 1
        print("verify: every done tile and factor tile is intact")
    print("complete" if complete else "incomplete: `wkdist kernels CONFIG.toml` computes the rest")
    return 0


def _is_model(path: str, model_format: str) -> bool:
    """Whether ``path`` looks like a model directory (its zarr.json names the model format)."""
    try:
        with open(os.path.join(path, "zarr.json"), "rb") as handle:
            return model_format.encode() in handle.read()
    except OSError:
        return False


# Commands defined in their own modules register themselves on import (here, after kernels and
# status, so that --help lists the commands in workflow order).
from . import (  # noqa: E402
    export,  # noqa: F401  (export)
    pipeline,  # noqa: F401  (fit, run, predict)
    plan,  # noqa: F401  (plan)
    tune,  # noqa: F401  (tune)
)

# --------------------------------------------------------------------------- entry point


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="wkdist", description="Wigner kernels at scale")
    parser.add_argument("--version", action="version", version=f"wkdist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, spec in COMMANDS.items():
        spec.add_arguments(sub.add_parser(name, help=spec.help, description=spec.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wkdist`` with ``argv`` (default sys.argv[1:]); returns the exit status."""
    args = _parser().parse_args(argv)
    if not logging.getLogger("wkdist").handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("wkdist: %(levelname)s: %(message)s"))
        logging.getLogger("wkdist").addHandler(handler)
    try:
        with driver_interrupts():
            return COMMANDS[args.command].run(args)
    except (WkdistError, tomllib.TOMLDecodeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
    except BrokenPipeError:  # `wkdist plan ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:
        message = f"{error.filename or ''}: {error.strerror or error}".lstrip(": ")
    except KeyboardInterrupt:
        message = "interrupted; finished tiles are kept, rerun to resume"
    print(f"wkdist: error: {message}", file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
    # Run as a script this file is a second module, "__main__", that the command modules do
    # not register into: hand over to the imported wkdist.cli.
    from wkdist.cli import main as _main

    sys.exit(_main())
