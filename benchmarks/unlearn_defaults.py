"""Measure how each unlearning method's hyper-parameters move the forget ELBO (defaults study).

Setting (the one the defaults in ``docs/unlearning.md`` were chosen on): the offline PBMC data
(``su.data.pbmc68k()``), a stratified member / non-member split
(``membership_split(holdout=0.3, stratify="cell_type", seed=0)``), an ``su.SCVI`` with the
default architecture trained with the default recipe (``max_epochs`` heuristic = 400, 90% / 10%
train / validation split, seed 0) on the members, and the rare type "CD56+ NK" (22 training
members, 9 held-out) as the forget set.

For the original, three retrain seeds and every configuration it prints the mean per-cell ELBO
(``su.metrics.per_cell_elbo``: 8 draws, seed 0) of the forget cells, of the held-out cells of
the same type, the gap between the two (the memorisation signal; ``closed`` = fraction of the
original's gap removed, 1 = held-out level), the held-out ELBO of the other cell types and its
relative change from the original (criterion: within 2%), and the wall time.

Run::

    python benchmarks/unlearn_defaults.py                      # defaults of every method
    python benchmarks/unlearn_defaults.py --grid               # + the hyper-parameter grid
    python benchmarks/unlearn_defaults.py --methods scrub --grid
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings

FORGET_LABEL = "CD56+ NK"

#: configurations tried with --grid (the defaults are always measured too)
GRID: dict[str, list[dict]] = {
    "finetune": [
        {"max_epochs": 5},
        {"max_epochs": 20},
        {"max_epochs": 40},
        {"max_epochs": 20, "lr": 3e-3},
    ],
    "gradient_ascent": [
        {"max_epochs": 10, "beta": 0.9},
        {"max_epochs": 10, "beta": 0.5},
        {"max_epochs": 20, "beta": 0.9},
        {"max_epochs": 10, "beta": 0.9, "forget_margin": 0.1},
        {"max_epochs": 5, "beta": 0.0, "finetune_epochs": 5},
    ],
    "scrub": [
        {"max_epochs": 10, "max_step_epochs": 5, "divergence_cap": 2.0},
        {"max_epochs": 10, "max_step_epochs": 5, "divergence_cap": 10.0},
        {"max_epochs": 20, "max_step_epochs": 10, "divergence_cap": 5.0},
        {"max_epochs": 10, "max_step_epochs": 5, "alpha": 0.1},
    ],
    "contrastive": [
        {"max_epochs": 10, "shrink": 0.25},
        {"max_epochs": 10, "shrink": 0.75},
        {"max_epochs": 20, "shrink": 0.5},
        {"max_epochs": 10, "shrink": 0.5, "finetune_epochs": 5},
    ],
    "ssd": [
        {"alpha": 10.0, "lambda_": 1.0},
        {"alpha": 5.0, "lambda_": 1.0},
        {"alpha": 2.0, "lambda_": 1.0},
        {"alpha": 10.0, "lambda_": 5.0},
    ],
    "fisher": [
        {"alpha": 1e-6},
        {"alpha": 1e-5},
        {"alpha": 1e-4},
        {"alpha": 1e-3},
        {"alpha": 1e-6, "ascent_epochs": 5},
    ],
}


def _quiet():
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


def setup(cache_dir: str, threads: int | None):
    """Data, split, the original model (cached in ``cache_dir``) and the evaluation sets."""
    import torch

    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed

    if threads:
        torch.set_num_threads(threads)
    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    members = adata[adata.obs["membership"] == "train"].copy()
    heldout = adata[adata.obs["membership"] == "heldout"].copy()
    su.SCVI.setup_anndata(members, layer="counts", labels_key="cell_type")
    path = os.path.join(cache_dir, "original")
    if os.path.exists(path):
        model = su.SCVI.load(path, adata=members)
    else:
        with isolated_seed(0):
            model = su.SCVI(members)
            model.train(train_size=0.9, enable_progress_bar=False)
        model.save(path, overwrite=True)
    forget = su.data.forget_by_label(adata, FORGET_LABEL)
    return model, members, heldout, forget


def evaluate(model, members, heldout, forget) -> dict[str, float]:
    """Forget / held-out ELBO summary of one model."""
    from scvi_unlearn.metrics import per_cell_elbo

    f = per_cell_elbo(model, members[forget].copy())["elbo"].mean()
    h = per_cell_elbo(model, heldout)["elbo"]
    same = (heldout.obs["cell_type"] == FORGET_LABEL).to_numpy()
    return {
        "forget": float(f),
        "heldout_same": float(h[same].mean()),
        "gap": float(f - h[same].mean()),
        "heldout_other": float(h[~same].mean()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=None, help="default: all built-ins")
    parser.add_argument("--grid", action="store_true", help="also run the hyper-parameter grid")
    parser.add_argument("--retrain-seeds", type=int, default=3)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "su_unlearn"))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="write all rows to this JSON file")
    args = parser.parse_args(argv)
    _quiet()
    os.makedirs(args.cache, exist_ok=True)
    import scvi_unlearn as su

    model, members, heldout, forget = setup(args.cache, args.threads)
    methods = args.methods or [m for m in su.unlearn.METHODS if m != "retrain"]
    rows = []

    def report(label, m, seconds):
        r = evaluate(m, members, heldout, forget)
        r.update(label=label, seconds=seconds)
        if rows:
            ref = rows[0]
            r["closed"] = (ref["gap"] - r["gap"]) / ref["gap"]
            r["other_change"] = (r["heldout_other"] - ref["heldout_other"]) / abs(
                ref["heldout_other"]
            )
        else:
            r["closed"] = 0.0
            r["other_change"] = 0.0
        rows.append(r)
        print(
            f"{label:62s} forget {r['forget']:9.2f}  heldout-NK {r['heldout_same']:9.2f}  "
            f"gap {r['gap']:7.2f}  closed {r['closed']:6.2f}  heldout-other "
            f"{r['heldout_other']:9.2f} ({100 * r['other_change']:+5.2f}%)  {seconds:6.1f}s",
            flush=True,
        )

    report("original", model, 0.0)
    for seed in range(args.retrain_seeds):
        t = time.perf_counter()
        new = model.unlearn(forget, method="retrain", seed=seed, enable_progress_bar=False)
        report(f"retrain seed={seed}", new, time.perf_counter() - t)
    for method in methods:
        configs = [{}] + (GRID.get(method, []) if args.grid else [])
        for cfg in configs:
            kwargs = dict(cfg)
            if method not in ("ssd",):
                kwargs.setdefault("enable_progress_bar", False)
            t = time.perf_counter()
            try:
                new = model.unlearn(forget, method=method, **kwargs)
            except Exception as err:  # report and continue the study
                print(f"{method} {cfg}: {type(err).__name__}: {err}", flush=True)
                continue
            label = f"{method} {'defaults' if not cfg else json.dumps(cfg)}"
            report(label, new, time.perf_counter() - t)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
