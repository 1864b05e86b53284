"""Why a fast exact retrain fails whole-cell-type forget sets: its fit trajectory on pbmc68k.

``fast_retrain`` (its schedule, weights averaged, no fit matching: ``--epochs`` epochs) is
trained once per forget set with a callback that scores, after every epoch, the mean ELBO of five
groups of cells: the forget cells, a seeded sample of 300 retain training cells, the retain
validation cells, and the held-out cells (never trained on by any model) of the forget cells'
types and of the other types.  The same groups are scored on the original and on the 5 cached
default-recipe retrains (``equivalence_power.py``'s cache; they are trained when missing).  The
forget cells are scored for the analysis only: no method sees them.

    python benchmarks/unseen_type_trajectory.py --cache /tmp/eqrefs400 --original-epochs 400

Prints, per forget set, the retrains' mean (and range) per group and the trajectory at the
epochs where it matches the original's validation fit (what ``match_fit`` stops at), the
original's training fit, the retrains' forget-cell fit (closest mean), and the last epoch; with
``--out`` a CSV of every epoch.  docs/fast_unlearning.md quotes the tables.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from equivalence_power import forget_sets, markdown, reference_folder, setting
from lightning.pytorch.callbacks import Callback

GROUPS = ("forget", "train", "validation", "same type", "other types")
TRAIN_SAMPLE = 300


class GroupTrace(Callback):
    """After every epoch, the mean ELBO of each group on the returned (averaged) weights."""

    def __init__(self, score):
        self.score = score
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        from scvi_unlearn.unlearn.core._averaging import ExponentialAveraging

        averaged = [c for c in trainer.callbacks if isinstance(c, ExponentialAveraging)]
        module = averaged[0].module if averaged else pl_module.module
        self.rows.append({"epoch": len(self.rows) + 1, **self.score(module)})


def group_scorer(su, adata, model, forget):
    """A function of a module: the mean ELBO of each of :data:`GROUPS` (4 seeded draws)."""
    from scvi_unlearn.unlearn.core._guard import cell_elbos

    members = model.adata
    forget_pos = members.obs_names.get_indexer(np.asarray(forget))
    types = members.obs["cell_type"].iloc[forget_pos].unique()
    rng = np.random.default_rng(0)
    train = np.setdiff1d(model.train_indices, forget_pos)
    train = np.sort(rng.choice(train, min(TRAIN_SAMPLE, train.size), replace=False))
    validation = np.setdiff1d(model.validation_indices, forget_pos)
    heldout = adata[(adata.obs[su.data.SPLIT_KEY] != su.data.TRAIN).to_numpy()].copy()
    model._validate_anndata(heldout)
    same = heldout.obs["cell_type"].isin(types).to_numpy()
    cells = {
        "forget": (model.adata_manager, forget_pos),
        "train": (model.adata_manager, train),
        "validation": (model.adata_manager, validation),
        "same type": (model.get_anndata_manager(heldout), np.flatnonzero(same)),
        "other types": (model.get_anndata_manager(heldout), np.flatnonzero(~same)),
    }

    def score(module) -> dict[str, float]:
        return {
            g: float(cell_elbos(module, manager, idx).mean()) if idx.size else np.nan
            for g, (manager, idx) in cells.items()
        }

    return score


def first_reaching(trace: pd.DataFrame, group: str, target: float) -> int | None:
    hit = trace.index[trace[group] >= target]
    return int(trace.loc[hit[0], "epoch"]) if len(hit) else None


def summary(trace: pd.DataFrame, refs: pd.DataFrame, original: dict) -> pd.DataFrame:
    rows = [
        {"model": "retrains (mean)", **refs.mean().to_dict()},
        {
            "model": "retrains (range)",
            **{g: f"{refs[g].min():.1f} … {refs[g].max():.1f}" for g in GROUPS},
        },
        {"model": "original", **original},
    ]
    marks = {
        "validation fit = original's (match_fit)": first_reaching(
            trace, "validation", original["validation"]
        ),
        "training fit = original's": first_reaching(trace, "train", original["train"]),
        "forget fit closest to retrains'": int(
            trace.loc[(trace["forget"] - refs["forget"].mean()).abs().idxmin(), "epoch"]
        ),
        "last epoch": int(trace["epoch"].iloc[-1]),
    }
    for label, epoch in marks.items():
        if epoch is None:
            rows.append({"model": f"fast, {label}: not reached"})
            continue
        row = trace[trace["epoch"] == epoch].iloc[0]
        rows.append({"model": f"fast, {label}: epoch {epoch}", **row[list(GROUPS)].to_dict()})
    table = pd.DataFrame(rows, columns=["model", *GROUPS])
    return table.map(lambda v: v if isinstance(v, str) else ("" if pd.isna(v) else f"{v:.1f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=".equivalence_refs", help="folder of the retrains")
    parser.add_argument("--original-epochs", type=int, default=400)
    parser.add_argument(
        "--sets",
        nargs="*",
        default=["CD34+ (9)", "CD8+ Cytotoxic T (38)", "CD56+ NK (22)"],
        help="forget-set names",
    )
    parser.add_argument("--epochs", type=int, default=120, help="fast_retrain epochs")
    parser.add_argument("--options", default="{}", help="more fast_retrain options (JSON)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default=None, help="CSV of every epoch")
    args = parser.parse_args()

    t0 = time.perf_counter()
    su, adata, model = setting(args.cache, args.threads, args.original_epochs)
    sets = forget_sets(su, adata, cd34=True)
    options = {"max_epochs": args.epochs, "match_fit": False, **json.loads(args.options)}
    traces = []
    for name in args.sets:
        forget = sets[name]
        score = group_scorer(su, adata, model, forget)
        folder = reference_folder(args.cache, name)
        retrains = su.attack.train_references(model, forget, range(5), folder=folder)
        refs = pd.DataFrame([score(r.module) for r in retrains])
        trace = GroupTrace(score)
        model.unlearn(
            forget,
            method="fast_retrain",
            seed=args.seed,
            enable_progress_bar=False,
            callbacks=[trace],
            **options,
        )
        frame = pd.DataFrame(trace.rows)
        traces.append(frame.assign(forget_set=name))
        head = f"{name}: {args.original_epochs}-epoch original, fast_retrain {options}"
        print(f"\n### {head}, seed {args.seed} ({time.perf_counter() - t0:.0f} s)\n")
        print(markdown(summary(frame, refs, score(model.module))), flush=True)
    if args.out:
        pd.concat(traces).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
