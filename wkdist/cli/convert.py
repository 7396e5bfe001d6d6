"""``wkdist convert``."""

from __future__ import annotations

import argparse

from .commands import command

__all__: list[str] = []


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="kernel store directory written by wkdist 0.1")


@command("convert", "rewrite a kernel store of wkdist 0.1 in the current format, in place "
                    "(finished tiles are kept)", _convert_arguments)
def _convert(args: argparse.Namespace) -> int:
    from ..tiled.lock import hold
    from ..tiled.store import convert_store, open_store

    with hold(args.store, what="store", command="wkdist convert"):
        counts = convert_store(args.store)
        store = open_store(args.store)  # the converted store must open
    print(f"store {store.path}: format 2; {counts['tiles']} finished tiles kept, "
          f"{counts['mirrors_removed']} mirror chunks and {counts['marker_files_removed']} "
          "marker files removed")
    return 0
