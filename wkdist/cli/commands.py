"""The registry of ``wkdist`` subcommands and the options they share.

Command modules (``wkdist.cli.kernels``, ``status``, ``export``, ``run``, ``plan``, ``tune``)
register with :func:`command`; ``wkdist.cli.main`` imports them and builds the parser, so
imports run one way: main -> command modules -> this module.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["COMMANDS", "command", "kernel_options"]


@dataclass(frozen=True)
class _Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, _Command] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Decorator registering ``run(args) -> exit status`` as subcommand ``name``."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = _Command(help, add_arguments, run)
        return run

    return register


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def kernel_options(parser: argparse.ArgumentParser) -> None:
    """--verify, --quiet and --progress-interval: the same for every command computing kernels."""
    parser.add_argument("--verify", action="store_true",
                        help="check every finished tile's checksum first; recompute damaged ones")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--progress-interval", type=_seconds, default=10.0, metavar="SECONDS",
                        help="seconds between progress lines when stderr is not a terminal "
                             "(default 10; printed whether or not a tile finished)")
