"""``wkdist tune``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..app.config import load_config
from ..app.tune import run_tune
from .commands import command

__all__: list[str] = []


def _tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="configuration file (TOML) with a [tune] table")
    parser.add_argument("--out", required=True, help="output directory (resumable)")
    parser.add_argument("--quiet", action="store_true", help="no per-candidate lines")


@command("tune", "search kernel hyperparameters by cross-validation inside the training set",
         _tune_arguments)
def _tune(args: argparse.Namespace) -> int:
    run_tune(load_config(args.config), Path(args.out), quiet=args.quiet)
    return 0
