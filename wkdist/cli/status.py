"""``wkdist status``."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from .commands import command

__all__: list[str] = []


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="kernel store directory (or a model directory: its "
                                      "files are checked against their checksums)")
    parser.add_argument("--verify", action="store_true",
                        help="check every done kernel and factor tile's checksums; damaged tiles "
                             "are reported and unmarked so the next run recomputes them")


@command("status", "tiles done per array; --verify checks them", _status_arguments)
def _status(args: argparse.Namespace) -> int:
    from ..krr.model import FORMAT as MODEL_FORMAT
    from ..krr.model import verify_model
    from ..tiled.lock import hold
    from ..tiled.store import open_store

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
    from ..krr.solve import verify_factors
    from ..tiled.store import progress_counts, verify_tiles

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
