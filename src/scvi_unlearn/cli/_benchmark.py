"""``scvi-unlearn benchmark``: methods x seeds on one forget set (built-in or own data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scvi_unlearn.benchmark._arguments import all_methods

from ._common import (
    check_cells_in,
    check_counts_layer,
    interactive,
    read_adata,
    read_cells,
    use_as_counts_layer,
)

DATASETS = ("pbmc68k", "pbmc33k", "tabula_muris")
ATTACKS = ("calibrated", "shadow", "mlp", "threshold")


def _load_data(args: argparse.Namespace):
    """The dataset (built-in or ``--adata``) and how to name it in messages."""
    import scvi_unlearn as su

    if args.adata is not None:
        adata = read_adata(args.adata)
        check_counts_layer(adata, args.layer, args.adata)
        use_as_counts_layer(adata, args.layer)
        return adata, str(args.adata)
    name = args.dataset or "pbmc68k"
    return getattr(su.data, name)(), f"the {name} data"


def _split(adata, args: argparse.Namespace, source: str, forget_file) -> None:
    """Check ``obs["membership"]``, or write a stratified one (forget cells kept as members)."""
    import scvi_unlearn as su

    key = su.data.SPLIT_KEY
    if key in adata.obs:
        values = set(adata.obs[key].astype(str).unique())
        unknown = values - {su.data.TRAIN, su.data.HOLDOUT}
        if unknown or su.data.HOLDOUT not in values or su.data.TRAIN not in values:
            raise ValueError(
                f"{source}: obs[{key!r}] must hold {su.data.TRAIN!r} and {su.data.HOLDOUT!r} "
                f"cells only (found {sorted(values)}); drop the column to let the command "
                "hold out cells itself."
            )
        print(f"{source}: using its obs[{key!r}] split")
        return
    su.data.membership_split(
        adata, holdout=args.holdout, stratify=args.label_key, seed=args.split_seed
    )
    msg = (
        f"{source}: no obs[{key!r}]; held out {args.holdout:.0%} of every {args.label_key} "
        f"(seed {args.split_seed})"
    )
    if forget_file is not None:  # the listed cells are the forget set: keep them as members
        adata.obs.loc[forget_file, key] = su.data.TRAIN
        msg += "; the --forget-cells cells are kept as training members"
    print(msg)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write its tables and figures.

    ``args``: the parsed command line; returns the exit status (0).
    """
    import scvi_unlearn as su
    from scvi_unlearn.benchmark import run as run_benchmark
    from scvi_unlearn.benchmark import train_original
    from scvi_unlearn.benchmark._arguments import original_train_kwargs

    methods = "all" if args.methods == ["all"] else args.methods
    for m in [] if methods == "all" else methods:
        su.unlearn.get_method(m)
    if args.seeds < 1 or args.retrain_seeds < 3:
        raise ValueError("--seeds must be >= 1 and --retrain-seeds >= 3.")
    if args.n_draws < 1:
        raise ValueError("--n-draws must be >= 1.")
    if args.adata is None and args.layer != "counts":
        raise ValueError("--layer is for --adata (the built-in datasets hold layers['counts']).")
    forget_file = read_cells(args.forget_cells, "--forget-cells") if args.forget_cells else None
    adata, source = _load_data(args)
    if args.label_key not in adata.obs:
        raise ValueError(
            f"--label-key {args.label_key!r} is not a column of {source} "
            f"(columns: {list(adata.obs.columns)})."
        )
    if forget_file is not None:
        check_cells_in(adata, forget_file, "--forget-cells", args.forget_cells, source)
    _split(adata, args, source, forget_file)
    if forget_file is None:
        forget = su.data.forget_by_label(adata, args.forget_label, key=args.label_key)
    else:
        held = adata.obs.loc[forget_file, su.data.SPLIT_KEY].astype(str) != su.data.TRAIN
        if held.any():
            raise ValueError(
                f"--forget-cells {args.forget_cells}: {int(held.sum())} of its cells are held "
                f"out in obs['membership'] of {source} (e.g. {list(held.index[held][:5])}): "
                "a forget cell must be a training member."
            )
        forget = forget_file
    n_members = int((adata.obs[su.data.SPLIT_KEY].astype(str) == su.data.TRAIN).sum())
    print(
        f"{source}: {adata.n_obs} cells, {n_members} training members; forgetting "
        f"{len(forget)} cells"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = train_original(
        adata,
        label_key=args.label_key,
        model_kwargs={"n_latent": args.n_latent},
        train_kwargs=original_train_kwargs(methods, {"max_epochs": args.max_epochs}),
        seed=args.seed,
    )
    result = run_benchmark(
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
        n_draws=args.n_draws,
        umap=not args.no_umap,
        progress=interactive(),
        seed=args.seed,
    )
    result.to_csv(out)
    (out / "summary.md").write_text(result.to_markdown())
    result.save_figures(out)
    print(result.to_markdown())
    print(f"wrote CSV, Markdown and PNG files to {out}")
    return 0


#: the subcommand's name, one-line help and description (``scvi-unlearn benchmark --help``)
NAME = "benchmark"
HELP = "methods x seeds on one forget set, audited against the retrain target"
DESCRIPTION = (
    "Load a built-in dataset (--dataset) or your own .h5ad (--adata, raw counts in "
    "--layer), hold out cells (never trained on) unless obs['membership'] exists, train "
    "scVI on the members, forget a label's members (--forget-label) or listed cells "
    "(--forget-cells) with each method and seed, train the retrain references and "
    "cost-matched retrains, audit everything with one protocol, and write "
    "benchmark_table.csv, benchmark_summary.csv, summary.md and figures."
)


def add_arguments(bench: argparse.ArgumentParser) -> None:
    """Add the ``benchmark`` command's arguments to its parser."""
    data = bench.add_mutually_exclusive_group()
    data.add_argument(
        "--dataset", choices=DATASETS, default=None, help="built-in dataset (default pbmc68k)"
    )
    data.add_argument("--adata", metavar="FILE.h5ad", help="your own data (an .h5ad file)")
    bench.add_argument(
        "--layer",
        default="counts",
        help="layer of raw integer counts in --adata ('X' for adata.X; default counts)",
    )
    forget = bench.add_mutually_exclusive_group(required=True)
    forget.add_argument("--forget-label", help="label whose training members are forgotten")
    forget.add_argument(
        "--forget-cells", metavar="CELLS.txt", help="file of cells to forget, one obs_name a line"
    )
    bench.add_argument("--label-key", default="cell_type", help="obs column of the labels")
    bench.add_argument(
        "--methods",
        nargs="+",
        default=["all"],
        help=f"method names, or 'all' (default: {', '.join(all_methods())}; the rows of "
        "'scvi-unlearn methods --columns name benchmark' with benchmark True)",
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
    bench.add_argument(
        "--holdout", type=float, default=0.3, help="held-out fraction (without obs['membership'])"
    )
    bench.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split")
    bench.add_argument(
        "--attacks",
        nargs="+",
        choices=ATTACKS,
        default=["calibrated", "shadow"],
        help="attacks of the audit, the primary one first (default: calibrated shadow)",
    )
    bench.add_argument(
        "--n-draws", type=int, default=8, help="posterior draws per cell in the audits (8)"
    )
    bench.add_argument(
        "--no-umap", action="store_true", help="skip the latent UMAP figure (slow on big data)"
    )
    bench.add_argument("--n-jobs", type=int, default=1, help="parallel unlearning runs")
    bench.add_argument("--seed", type=int, default=0, help="seed of training and the audit")
    bench.add_argument("--out", required=True, help="output folder")
