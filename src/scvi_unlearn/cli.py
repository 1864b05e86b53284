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


_DATASETS = ("pbmc68k", "pbmc33k", "tabula_muris")


def _benchmark(args: argparse.Namespace) -> int:
    import scvi_unlearn as su
    from scvi_unlearn.benchmark import run, train_original

    methods = "all" if args.methods == ["all"] else args.methods
    for m in [] if methods == "all" else methods:
        su.unlearn.get_method(m)
    if args.seeds < 1 or args.retrain_seeds < 3:
        raise ValueError("--seeds must be >= 1 and --retrain-seeds >= 3.")
    adata = getattr(su.data, args.dataset)()
    if args.label_key not in adata.obs:
        raise ValueError(
            f"--label-key {args.label_key!r} is not a column of the {args.dataset} data "
            f"(columns: {list(adata.obs.columns)})."
        )
    su.data.membership_split(
        adata, holdout=args.holdout, stratify=args.label_key, seed=args.split_seed
    )
    forget = su.data.forget_by_label(adata, args.forget_label, key=args.label_key)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = train_original(
        adata,
        label_key=args.label_key,
        model_kwargs={"n_latent": args.n_latent},
        train_kwargs={"max_epochs": args.max_epochs},
        seed=args.seed,
    )
    result = run(
        adata,
        forget,
        methods=methods,
        seeds=args.seeds,
        retrain_seeds=args.retrain_seeds,
        model=model,
        label_key=args.label_key,
        budgets=tuple(args.budgets),
        attacks=args.attacks,
        n_jobs=args.n_jobs,
        seed=args.seed,
    )
    result.to_csv(out)
    (out / "summary.md").write_text(result.to_markdown())
    result.save_figures(out)
    print(result.to_markdown())
    print(f"wrote CSV, Markdown and PNG files to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``scvi-unlearn`` (subcommands ``demo`` and ``benchmark``)."""
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

    bench = sub.add_parser(
        "benchmark",
        help="methods x seeds on one forget set, audited against the retrain target",
        description=(
            "Load a dataset, hold out cells (never trained on), train scVI on the members, "
            "forget every member of one label with each method and seed, train the retrain "
            "references and cost-matched retrains, audit everything with one protocol, and "
            "write benchmark_table.csv, benchmark_summary.csv, summary.md and figures."
        ),
    )
    bench.add_argument("--dataset", choices=_DATASETS, default="pbmc68k", help="dataset")
    bench.add_argument("--forget-label", required=True, help="label whose members are forgotten")
    bench.add_argument("--label-key", default="cell_type", help="obs column of the labels")
    bench.add_argument(
        "--methods", nargs="+", default=["all"], help="method names, or 'all' (default)"
    )
    bench.add_argument("--seeds", type=int, default=3, help="seeds per method (0..n-1)")
    bench.add_argument(
        "--retrain-seeds", type=int, default=5, help="retrain references (>= 3; 5 calibrated)"
    )
    bench.add_argument(
        "--budgets",
        type=float,
        nargs="*",
        default=[0.25, 0.5],
        help="epoch fractions of the cost-matched retrains",
    )
    bench.add_argument("--max-epochs", type=int, default=200, help="original's epochs")
    bench.add_argument("--n-latent", type=int, default=10, help="latent dimension")
    bench.add_argument("--holdout", type=float, default=0.3, help="held-out fraction")
    bench.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split")
    bench.add_argument(
        "--attacks",
        nargs="+",
        choices=("calibrated", "shadow", "mlp", "threshold"),
        default=["calibrated", "shadow"],
        help="attacks of the audit, the primary one first (default: calibrated shadow)",
    )
    bench.add_argument("--n-jobs", type=int, default=1, help="parallel unlearning runs")
    bench.add_argument("--seed", type=int, default=0, help="seed of training and the audit")
    bench.add_argument("--out", required=True, help="output folder")
    bench.set_defaults(func=_benchmark)
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
    """Entry point of ``scvi-unlearn``."""
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
    except (ValueError, KeyError) as err:
        print(f"scvi-unlearn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
