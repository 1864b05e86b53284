"""The ``scvi-unlearn`` command line: ``demo``, ``benchmark``, ``unlearn``, ``audit`` and
``methods``.

One module per command (``_demo``, ``_benchmark``, ``_unlearn``, ``_audit``, ``_methods``), each
with
``NAME``, ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args)``; the
subcommands are built here once (:func:`build_parser`); shared checks of the user's files in
``_common``.
Usage and outputs: ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _audit, _benchmark, _demo, _methods, _unlearn

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``scvi-unlearn``.

    Returns
    -------
    argparse.ArgumentParser
        The parser, with the subcommands ``demo``, ``benchmark``, ``unlearn``, ``audit`` and
        ``methods``.
    """
    parser = argparse.ArgumentParser(
        prog="scvi-unlearn",
        description="Machine unlearning, membership audits and Fisher analysis for scVI models.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Lightning and scvi-tools logs, warnings"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: fastest for these small models on shared "
        "cores, and the setting the documented numbers were produced with)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (_demo, _benchmark, _unlearn, _audit, _methods):
        sub_parser = sub.add_parser(
            command.NAME, help=command.HELP, description=command.DESCRIPTION
        )
        command.add_arguments(sub_parser)
        sub_parser.set_defaults(func=command.run)
    return parser


def _quiet_console() -> None:
    """Keep the command's output to its own progress and tables (the library stays verbose)."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scvi-unlearn``.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a bad input (a one-line error on standard error),
        1 when ``unlearn --on-degradation raise`` stops a degraded model.  Argument-syntax
        errors exit through :class:`SystemExit` with status 2 (argparse).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        _quiet_console()
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    import torch

    torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as err:
        # a KeyError's str() is the repr of its message: print the message itself
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"scvi-unlearn: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
