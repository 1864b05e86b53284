"""``scvi-unlearn methods``: the registered unlearning methods and what each guarantees."""

from __future__ import annotations

import argparse


def method_names() -> str:
    """The registered methods' names, in the order of :func:`scvi_unlearn.unlearn.methods`,
    for the commands' help (``--method``)."""
    from scvi_unlearn.unlearn import methods

    return ", ".join(methods()["name"])


def _cells(table) -> list[list[str]]:
    return [[str(v) for v in row] for row in table.itertuples(index=False)]


def markdown(table) -> str:
    """``table`` as a compact Markdown table, names in backticks (as in docs/unlearning.md)."""
    columns = list(table.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in _cells(table):
        if columns[0] == "name":
            row[0] = f"`{row[0]}`"
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plain_text(table) -> str:
    """``table`` as left-aligned columns separated by two spaces."""
    rows = [list(table.columns), *_cells(table)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def run(args: argparse.Namespace) -> int:
    """Print :func:`scvi_unlearn.unlearn.methods` (Markdown with ``--markdown``).

    ``args``: the parsed command line; returns the exit status (0).
    """
    from scvi_unlearn.unlearn import METHOD_COLUMNS, methods

    unknown = [c for c in args.columns if c not in METHOD_COLUMNS]
    if unknown:
        raise ValueError(f"--columns: unknown {unknown}; the table has {list(METHOD_COLUMNS)}.")
    table = methods()[list(args.columns)]
    print(markdown(table) if args.markdown else plain_text(table))
    return 0


#: columns shown by default (``--columns``: any of :data:`scvi_unlearn.unlearn.METHOD_COLUMNS`)
COLUMNS = ("name", "kind", "exact", "private", "status", "measured")

#: the subcommand's name, one-line help and description (``scvi-unlearn methods --help``)
NAME = "methods"
HELP = "list the unlearning methods and what each guarantees"
DESCRIPTION = (
    "Print the registered unlearning methods (scvi_unlearn.unlearn.methods()): kind (exact, "
    "private, approximate, adversarial), exactness, differential privacy, status (default, "
    "recommended, research baseline) and the measured verdict pass rate and cost with their "
    "source; --columns chooses others (guarantee: in words; reference; benchmark: in "
    "'benchmark --methods all')."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``methods`` command's arguments to its parser."""
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument(
        "--columns",
        nargs="+",
        default=list(COLUMNS),
        metavar="COLUMN",
        help=f"columns to print (default: {' '.join(COLUMNS)}; also guarantee, reference, "
        "benchmark)",
    )
