"""``wkdist export``."""

from __future__ import annotations

import argparse
import sys

from ..app.export import export_dataset
from .commands import command

__all__: list[str] = []


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="configuration file (TOML)")
    parser.add_argument("--out", required=True, help="output directory")


@command("export", "write the configured data set and split as DIR/train.extxyz and "
         "DIR/test.extxyz, with targets and original indices", _export_arguments)
def _export(args: argparse.Namespace) -> int:
    for line in export_dataset(args.config, args.out):
        print(line, file=sys.stderr, flush=True)
    return 0
