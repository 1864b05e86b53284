"""``scvi-unlearn audit``: judge an unlearned model against retrains of the original."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ._common import (
    check_cells_in,
    load_model,
    model_folder,
    preview,
    progress,
    read_adata,
    read_cells,
    registered_layer,
    trained_cells,
    use_as_counts_layer,
)

ATTACKS = ("calibrated", "shadow", "mlp", "threshold")
#: files written into ``--out``
OUTPUTS = (
    "membership.csv",
    "equivalence.csv",
    "equivalence_per_cell.csv",
    "verdict.txt",
    "equivalence.png",
    "membership_roc.png",
)


def _heldout(adata, args: argparse.Namespace, forget: np.ndarray) -> np.ndarray:
    """The held-out cells (``--heldout-cells`` or ``obs["membership"]``), written to the obs."""
    import pandas as pd

    import scvi_unlearn as su

    key = su.data.SPLIT_KEY
    if args.heldout_cells is not None:
        held = read_cells(args.heldout_cells, "--heldout-cells")
        check_cells_in(adata, held, "--heldout-cells", args.heldout_cells, args.adata)
        both = np.intersect1d(held, forget)
        if both.size:
            raise ValueError(
                f"--heldout-cells {args.heldout_cells}: {both.size} of its cells are also in "
                f"--forget-cells, e.g. {preview(both)}."
            )
        mask = np.isin(np.asarray(adata.obs_names, dtype=str), held)
        adata.obs[key] = pd.Categorical(
            np.where(mask, su.data.HOLDOUT, su.data.TRAIN),
            categories=[su.data.TRAIN, su.data.HOLDOUT],
        )
        return held
    if key not in adata.obs or not (adata.obs[key].astype(str) == su.data.HOLDOUT).any():
        raise ValueError(
            f"{args.adata} has no held-out cells: the audit compares the forget cells with "
            f"cells no model trained on. Mark them in obs[{key!r}] ('{su.data.HOLDOUT}'; "
            "scvi_unlearn.data.membership_split before training) or list them with "
            "--heldout-cells FILE (one obs_name per line)."
        )
    names = np.asarray(adata.obs_names, dtype=str)
    return np.setdiff1d(names[(adata.obs[key].astype(str) == su.data.HOLDOUT).to_numpy()], forget)


def _check_roles(model, folder, option, forget, heldout, check_forget: bool) -> None:
    """The original trained on every forget cell; no model trained on a held-out cell."""
    trained = trained_cells(model, folder, option)
    seen = np.intersect1d(trained, heldout)
    if seen.size:
        raise ValueError(
            f"{seen.size} held-out cells were used to train the model in {folder} ({option}), "
            f"e.g. {preview(seen)}: held-out cells must be cells no model trained on."
        )
    if check_forget:
        unseen = forget[~np.isin(forget, trained)]
        if unseen.size:
            raise ValueError(
                f"{unseen.size} of the forget cells were not used to train the original in "
                f"{folder}, e.g. {preview(unseen)}: list only cells it trained on."
            )


def _references(original, forget, args: argparse.Namespace, bar) -> list:
    """Retrains of the original without the forget cells (reused from ``--references``)."""
    import scvi_unlearn as su

    seeds = list(range(args.n_references))
    kwargs = {"folder": args.references, "enable_progress_bar": False}
    if args.n_jobs > 1:
        refs = su.attack.train_references(
            original, forget, seeds=seeds, n_jobs=args.n_jobs, **kwargs
        )
        bar.update(len(seeds))
        return refs
    refs = []
    for s in seeds:  # one at a time: the bar moves per reference, the folder fills up
        refs += su.attack.train_references(original, forget, seeds=[s], **kwargs)
        bar.update(1)
    return refs


def _reuse_message(args: argparse.Namespace) -> str:
    """How many references ``--references`` already holds and how many will be trained."""
    seeds = set(range(args.n_references))
    if args.references is None:
        return f"references: {len(seeds)} to train (not kept: no --references)"
    manifest = Path(args.references) / "references.json"
    have = json.loads(manifest.read_text())["seeds"] if manifest.exists() else []
    n_reused = len(seeds & set(have))
    return (
        f"references in {args.references}: {n_reused} reused, {len(seeds) - n_reused} to train "
        f"(seeds 0..{len(seeds) - 1})"
    )


def _write(out: Path, report, target, eq, lines: list[str]) -> None:
    """Write the tables, the verdicts and the figures into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    candidate = report.to_frame()
    candidate.insert(0, "model", "candidate")
    refs = target.to_frame()
    refs.insert(0, "model", [f"reference {i}" for i in range(len(refs))])
    pd.concat([candidate, refs], ignore_index=True).to_csv(out / "membership.csv", index=False)
    eq.to_frame().to_csv(out / "equivalence.csv", index=False)
    eq.per_cell.to_csv(out / "equivalence_per_cell.csv", index_label="obs_name")
    (out / "verdict.txt").write_text("\n".join(lines) + "\n")
    for name, draw in (("equivalence.png", eq.plot), ("membership_roc.png", report.plot_roc)):
        ax = draw()
        ax.figure.savefig(out / name, dpi=150, bbox_inches="tight")
        plt.close(ax.figure)


def run(args: argparse.Namespace) -> int:
    """Audit the model in ``MODEL_DIR``: membership attack and per-cell equivalence.

    ``args``: the parsed command line; returns the exit status (0, whatever the verdicts).
    """
    import scvi_unlearn as su

    if args.n_references < 3:
        raise ValueError("--n-references must be >= 3 (5 is the calibrated number).")
    if args.n_draws < 1:
        raise ValueError("--n-draws must be >= 1.")
    if args.references is not None and Path(args.references).is_file():
        raise ValueError(f"--references {args.references} is a file, not a folder.")
    candidate_dir = model_folder(args.model_dir, "MODEL_DIR")
    original_dir = model_folder(args.original, "--original")
    forget = read_cells(args.forget_cells, "--forget-cells")
    adata = read_adata(args.adata)
    check_cells_in(adata, forget, "--forget-cells", args.forget_cells, args.adata)
    heldout = _heldout(adata, args, forget)
    layer, labels = registered_layer(original_dir)
    label_key = args.label_key or labels
    if label_key is not None and label_key not in adata.obs:
        raise ValueError(
            f"--label-key {label_key!r} is not a column of {args.adata} "
            f"(columns: {list(adata.obs.columns)})."
        )
    original = load_model(original_dir, adata, args.adata, "--original")
    _check_roles(original, original_dir, "--original", forget, heldout, check_forget=True)
    model = load_model(candidate_dir, adata.copy(), args.adata, "MODEL_DIR")
    _check_roles(model, candidate_dir, "MODEL_DIR", forget, heldout, check_forget=False)
    use_as_counts_layer(adata, layer)  # matched non-members' PCA reads layers["counts"]
    print(
        f"auditing {candidate_dir} against {args.n_references} retrains of {original_dir} "
        f"without the {forget.size} forget cells ({heldout.size} held-out cells)"
    )
    print(_reuse_message(args))
    bar = progress(args.n_references + 3, "audit", unit="step")
    refs = _references(original, forget, args, bar)
    attack_kwargs = {"label_key": label_key} if label_key is not None else {"match_method": "pca"}
    target = su.attack.retrain_target(
        refs,
        forget,
        adata=adata,
        attack=args.attack,
        seed=args.seed,
        n_draws=args.n_draws,
        **attack_kwargs,
    )
    bar.update(1)
    report = target.evaluate(model, adata)
    bar.update(1)
    eq = target.equivalence(model, adata)
    bar.update(1)
    bar.close()
    membership = target.check(report)
    passed = membership.passed and eq.passed
    lines = [
        f"model        {candidate_dir}",
        f"original     {original_dir}",
        f"forget cells {forget.size} ({args.forget_cells}); held-out cells {heldout.size}",
        f"references   {len(refs)} retrains (seeds 0..{len(refs) - 1})",
        f"membership   {report.verdict()}",
        f"equivalence  {eq.verdict()}",
        f"overall      {'PASS' if passed else 'FAIL'} (membership "
        f"{'passed' if membership.passed else 'failed'}, equivalence "
        f"{'passed' if eq.passed else 'failed'}: both must pass)",
    ]
    print("\n".join(lines[-3:]))
    if args.out is not None:
        _write(Path(args.out), report, target, eq, lines)
        print(f"wrote {', '.join(OUTPUTS)} to {args.out}")
    return 0


#: the subcommand's name, one-line help and description (``scvi-unlearn audit --help``)
NAME = "audit"
HELP = "membership attack and per-cell equivalence of an unlearned model vs retrains"
DESCRIPTION = (
    "Retrain the original (--original) without the forget cells --n-references times "
    "(reusing those saved in --references), then judge the model in MODEL_DIR against "
    "them: the membership attack (the forget cells vs matched held-out cells) and the "
    "per-cell retrain-equivalence test. Needs held-out cells: obs['membership'] == "
    "'heldout' in --adata, or --heldout-cells."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``audit`` command's arguments to its parser."""
    p.add_argument("model_dir", metavar="MODEL_DIR", help="folder of the model to audit")
    p.add_argument(
        "--original", required=True, metavar="ORIGINAL_DIR", help="the model before unlearning"
    )
    p.add_argument("--adata", required=True, metavar="FILE.h5ad", help="the data")
    p.add_argument(
        "--forget-cells", required=True, metavar="CELLS.txt", help="the forgotten cells"
    )
    p.add_argument(
        "--heldout-cells",
        metavar="CELLS.txt",
        help="cells no model trained on (default: obs['membership'] == 'heldout')",
    )
    p.add_argument(
        "--references",
        metavar="REFS_DIR",
        help="folder keeping the retrains for later audits (default: not kept)",
    )
    p.add_argument(
        "--n-references", type=int, default=5, help="retrains (seeds 0..n-1; >= 3, default 5)"
    )
    p.add_argument("--attack", choices=ATTACKS, default="calibrated", help="membership attack")
    p.add_argument(
        "--label-key",
        default=None,
        help="obs column of cell types (default: the labels the original was set up with)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the audit")
    p.add_argument("--n-draws", type=int, default=8, help="posterior draws per cell (default 8)")
    p.add_argument("--n-jobs", type=int, default=1, help="parallel reference retrains")
    p.add_argument("--out", metavar="REPORT_DIR", help="folder of the report files")
