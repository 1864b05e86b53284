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

import numpy as np

FORGET_LABEL = "CD56+ NK"

#: configurations tried with --grid (the defaults are always measured too); the numbers quoted in
#: the methods' docstrings and docs/unlearning.md come from one run of this grid
GRID: dict[str, list[dict]] = {
    "finetune": [
        {"max_epochs": 10, "lr": 1e-3},
        {"max_epochs": 40, "lr": 1e-3},
        {"max_epochs": 20, "lr": 3e-3},
        {"max_epochs": 20, "lr": 1e-2},
    ],
    "gradient_ascent": [
        {"max_epochs": 10, "beta": 0.5, "forget_margin": 0.05},
        {"max_epochs": 10, "beta": 0.9, "forget_margin": 0.05},
        {"max_epochs": 10, "beta": 0.9, "forget_margin": 0.1},
        {"max_epochs": 5, "beta": 0.0, "forget_margin": 0.05, "finetune_epochs": 5},
    ],
    "scrub": [
        {"divergence_cap": 5.0, "lr": 1e-3},
        {"divergence_cap": 20.0, "lr": 1e-3},
        {"divergence_cap": 50.0, "lr": 1e-3},
        {"divergence_cap": 50.0, "lr": 3e-3},
    ],
    "contrastive": [
        {"shrink": 0.25, "finetune_epochs": 0},
        {"shrink": 0.5, "finetune_epochs": 0},
        {"shrink": 0.5, "finetune_epochs": 2},
        {"shrink": 0.75, "finetune_epochs": 5},
    ],
    "ssd": [
        {"alpha": 5.0, "lambda_": 1.0},
        {"alpha": 10.0, "lambda_": 5.0},
        {"alpha": 10.0, "lambda_": 1.0, "n_draws": 4},
    ],
    "fisher": [
        {"alpha": 1e-6},
        {"alpha": 2e-5},
        {"alpha": 1e-4},
        {"alpha": 1e-3},
        {"alpha": 1e-6, "ascent_epochs": 5},
        {"alpha": 5e-5, "ascent_epochs": 5},
    ],
}


def _quiet():
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


def cached_retrain(model, forget, seed: int, cache_dir: str):
    """The exact retrain of ``model`` without ``forget`` for ``seed``: loaded from
    ``cache_dir/retrain_seed{seed}`` (with its recorded wall time) or run and saved there.
    Returns ``(retrained model, seconds)``."""
    import scvi_unlearn as su

    path = os.path.join(cache_dir, f"retrain_seed{seed}")
    if os.path.exists(path):
        new = su.SCVI.load(path)
        return new, new.unlearn_record_["wall_time_s"]
    t = time.perf_counter()
    new = model.unlearn(forget, method="retrain", seed=seed, enable_progress_bar=False)
    seconds = time.perf_counter() - t
    new.save(path, save_anndata=True, overwrite=True)
    return new, seconds


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
    base: dict[str, float] = {}

    def report(label, m, seconds):
        r = evaluate(m, members, heldout, forget)
        r.update(label=label, seconds=seconds)
        if not base:
            base.update(r)
        r["closed"] = (base["gap"] - r["gap"]) / base["gap"]
        r["other_change"] = (r["heldout_other"] - base["heldout_other"]) / abs(
            base["heldout_other"]
        )
        if "retrain_forget" in base:
            r["toward_retrain"] = (base["forget"] - r["forget"]) / (
                base["forget"] - base["retrain_forget"]
            )
        rows.append(r)
        to_retrain = f"{r['toward_retrain']:5.2f}" if "toward_retrain" in r else "  -  "
        print(
            f"{label:58s} forget {r['forget']:8.1f} heldout-NK {r['heldout_same']:8.1f} "
            f"gap {r['gap']:6.1f} closed {r['closed']:5.2f} to-retrain {to_retrain} "
            f"heldout-other {r['heldout_other']:7.1f} ({100 * r['other_change']:+5.2f}%) "
            f"{seconds:6.1f}s",
            flush=True,
        )

    report("original", model, 0.0)
    retrain_forget = []
    for seed in range(args.retrain_seeds):
        new, seconds = cached_retrain(model, forget, seed, args.cache)
        report(f"retrain seed={seed}", new, seconds)
        retrain_forget.append(rows[-1]["forget"])
    if retrain_forget:
        base["retrain_forget"] = float(np.mean(retrain_forget))
        print(f"retrain mean forget ELBO {base['retrain_forget']:.2f}", flush=True)
    for method in methods:
        configs = [{}] + (GRID.get(method, []) if args.grid else [])
        for cfg in configs:
            kwargs = dict(cfg)
            if method not in ("ssd",):
                kwargs.setdefault("enable_progress_bar", False)
            t = time.perf_counter()
            try:
                new = model.unlearn(forget, method=method, on_degradation="warn", **kwargs)
            except Exception as err:  # report and continue the study
                print(f"{method} {cfg}: {type(err).__name__}: {err}", flush=True)
                continue
            label = f"{method} {'defaults' if not cfg else json.dumps(cfg)}"
            report(label, new, time.perf_counter() - t)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    print()
    print(markdown_table(rows))
    return 0


def markdown_table(rows: list[dict]) -> str:
    """The rows as the Markdown table of docs/unlearning.md."""
    lines = [
        "| model | forget ELBO | held-out NK | gap | to retrain | held-out other (change) "
        "| time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        to_retrain = f"{r['toward_retrain']:.2f}" if "toward_retrain" in r else "-"
        lines.append(
            f"| {r['label']} | {r['forget']:.1f} | {r['heldout_same']:.1f} | {r['gap']:.1f} | "
            f"{to_retrain} | {r['heldout_other']:.1f} ({100 * r['other_change']:+.2f}%) | "
            f"{r['seconds']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
