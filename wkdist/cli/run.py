"""``wkdist fit``, ``wkdist run`` and ``wkdist predict``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..app.config import load_config
from ..app.pipeline import config_for_run, predict_file, run_pipeline
from .commands import command, kernel_options

__all__: list[str] = []


def _fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="configuration file (TOML)")
    parser.add_argument("--out", required=True, help="output directory")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None,
                        help="configuration file (TOML); default: a small built-in QM9 job")
    parser.add_argument("--out", required=True, help="output directory")
    kernel_options(parser)


@command("fit", "fit KRR on a finished kernel store; write results, predictions and model",
         _fit_arguments)
def _fit(args: argparse.Namespace) -> int:
    return run_pipeline(load_config(args.config), Path(args.out), kernels=False)


@command("run", "the whole job: kernels (resumable), fit, test predictions, report",
         _run_arguments)
def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    return run_pipeline(config_for_run(args.config, out), out, kernels=True, quiet=args.quiet,
                        verify=args.verify, progress_interval=args.progress_interval)


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model directory (DIR/model from `wkdist run`)")
    parser.add_argument("structures", help="structures to predict (any ASE-readable file)")
    parser.add_argument("--out", default=None, help="CSV path (default: standard output)")
    parser.add_argument("--cluster", default=None,
                        help='"local" or "tcp://host:port" (default: this process)')
    parser.add_argument("--workers", type=int, default=2, help="local worker processes")
    parser.add_argument("--allow-unseen-elements", action="store_true",
                        help="predict structures with elements the training set never had "
                             "(zero kernel and zero baseline for them) instead of NaN")


@command("predict", "predict new structures with a fitted model", _predict_arguments)
def _predict(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    text = predict_file(args.model, args.structures, out=out, cluster=args.cluster,
                        workers=args.workers, allow_unseen_elements=args.allow_unseen_elements)
    if out is None:
        sys.stdout.write(text)
    return 0
