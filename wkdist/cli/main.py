"""The ``wkdist`` entry point: every subcommand under one error policy.

Every deliberate error (WkdistError), a malformed TOML file or an unusable path ends as one line
``wkdist: error: ...`` on stderr and exit status 2, never a traceback (``--traceback`` shows it).
Subcommands register with :func:`wkdist.cli.commands.command` when their module (one per
command group, listed in ``COMMAND_MODULES``) is imported.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tomllib
from collections.abc import Sequence

from ..app.interrupts import driver_interrupts
from ..errors import WkdistError
from .commands import COMMANDS

__all__ = ["main"]

# The command modules, in the order --help lists their commands (the workflow's order); each
# registers its commands with wkdist.cli.commands when imported.
COMMAND_MODULES = ("kernels", "status", "convert", "export", "run", "plan", "tune")



class _Stderr(logging.Handler):
    """The library's log on the stderr of the moment: progress lines as they are, warnings
    and errors prefixed ``wkdist: LEVEL:``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno > logging.INFO:
                message = f"wkdist: {record.levelname}: {message}"
            print(message, file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="wkdist", description="Wigner kernels at scale")
    parser.add_argument("--version", action="version", version=f"wkdist {__version__}")
    parser.add_argument("-T", "--traceback", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    for module in COMMAND_MODULES:
        importlib.import_module(f"wkdist.cli.{module}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, spec in COMMANDS.items():
        spec.add_arguments(sub.add_parser(name, help=spec.help, description=spec.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wkdist`` with ``argv`` (default sys.argv[1:]); returns the exit status."""
    args = _parser().parse_args(argv)
    logger = logging.getLogger("wkdist")
    if not any(isinstance(handler, _Stderr) for handler in logger.handlers):
        logger.addHandler(_Stderr())
    logger.setLevel(logging.INFO)
    try:
        with driver_interrupts():
            return COMMANDS[args.command].run(args)
    except (WkdistError, tomllib.TOMLDecodeError) as error:
        if args.traceback:
            raise
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
    except BrokenPipeError:  # `wkdist plan ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:
        if args.traceback:
            raise
        message = f"{error.filename or ''}: {error.strerror or error}".lstrip(": ")
    except KeyboardInterrupt:
        message = "interrupted; finished tiles are kept, rerun to resume"
    print(f"wkdist: error: {message}", file=sys.stderr, flush=True)
    return 2
