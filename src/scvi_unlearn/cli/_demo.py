"""``scvi-unlearn demo``: the offline PBMC demo (the README's main job)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scvi_unlearn.unlearn import DEFAULT_METHOD

from ._methods import method_names


def run(args: argparse.Namespace) -> int:
    """Run the demo (:func:`scvi_unlearn.benchmark._demo.run_demo`).

    ``args``: the parsed command line; returns the exit status (0).
    """
    from scvi_unlearn.benchmark._demo import run_demo

    from ._common import interactive

    run_demo(
        out=Path(args.out),
        forget_label=args.forget_label,
        max_epochs=args.max_epochs,
        method=args.method,
        seed=args.seed,
        progress=interactive(),
    )
    return 0


#: the subcommand's name, one-line help and description (``scvi-unlearn demo --help``)
NAME = "demo"
HELP = "offline PBMC demo: train scVI, unlearn a rare cell type, audit, table + figure"
DESCRIPTION = (
    "Train scVI on the offline PBMC data (scanpy's pbmc68k_reduced, integer counts "
    "recovered), unlearn a rare cell type, retrain a reference without it, audit both "
    "with the membership attack, print the table and save a figure."
)


def add_arguments(demo: argparse.ArgumentParser) -> None:
    """Add the ``demo`` command's arguments to its parser."""
    demo.add_argument("--out", default="scvi_unlearn_output", help="output folder")
    demo.add_argument("--forget-label", default="CD56+ NK", help="cell type to forget")
    demo.add_argument("--max-epochs", type=int, default=200, help="training epochs")
    demo.add_argument(
        "--method",
        default=None,
        help=f"unlearning method, one of {method_names()} (default: {DEFAULT_METHOD})",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of everything")
