"""``wkdist plan``."""

from __future__ import annotations

import argparse

from ..app.plan import plan_lines
from .commands import command

__all__: list[str] = []


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="configuration file (TOML)")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="SLURM: do not ask the controller about the worker job "
                             "(sbatch --test-only)")
    parser.add_argument("--remeasure", action="store_true",
                        help="measure this machine's rates again and cache them in place of "
                             "the cached ones (measure on an idle machine)")


@command("plan", "what a run would compute, store and cost; SLURM: the worker job script "
                 "(nothing is computed or submitted)", _plan_arguments)
def _plan(args: argparse.Namespace) -> int:
    for line in plan_lines(args.config, check=args.check, remeasure=args.remeasure):
        print(line, flush=True)
    return 0
