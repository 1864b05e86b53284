"""The ``scvi-unlearn`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from scvi_unlearn.benchmark._demo import run_demo

    run_demo(
        out=Path(args.out),
        forget_label=args.forget_label,
        max_epochs=args.max_epochs,
        method=args.method,
        seed=args.seed,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``scvi-unlearn`` (subcommands ``demo``)."""
    parser = argparse.ArgumentParser(
        prog="scvi-unlearn",
        description="Machine unlearning, membership audits and Fisher analysis for scVI models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="offline PBMC demo: train scVI, unlearn a rare cell type, audit, table + figure",
        description=(
            "Train scVI on the offline PBMC data (scanpy's pbmc68k_reduced, integer counts "
            "recovered), unlearn a rare cell type, retrain a reference without it, audit both "
            "with the membership attack, print the table and save a figure."
        ),
    )
    demo.add_argument("--out", default="scvi_unlearn_output", help="output folder")
    demo.add_argument("--forget-label", default="CD56+ NK", help="cell type to forget")
    demo.add_argument("--max-epochs", type=int, default=200, help="training epochs")
    demo.add_argument("--method", default=None, help="unlearning method (default: the default)")
    demo.add_argument("--seed", type=int, default=0, help="seed of everything")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scvi-unlearn``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError) as err:
        print(f"scvi-unlearn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
