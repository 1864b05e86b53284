"""Cost of fast_retrain relative to a default-recipe retrain as the dataset grows.

For each size, cells are simulated (``su.data.simulate``, calibrated on pbmc68k), a default
``su.SCVI`` is built, and one epoch of each schedule is timed (the mean of two epochs after a
warm-up epoch): the default recipe (scvi-tools' plan, lr 1e-3) and fast_retrain's (KL weight 1,
lr 1.2e-2).  The full retrain is *not* run: its cost is its per-epoch time x scvi-tools' epoch
heuristic (400 epochs up to 20k cells, then 8M / n), and fast_retrain's is its per-epoch time x
its default budget ``min(E, max(min_epochs, ceil(epoch_fraction x E)))`` (0.15 and 30:
:func:`scvi_unlearn.unlearn.exact._fast_retrain.fast_budget`) -- its worst case: by default
(``match_fit``) it stops as soon as it fits the retain validation cells as the original does.

    python benchmarks/fast_retrain_scaling.py --threads 1
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import pandas as pd
from equivalence_power import markdown
from scaling import default_budget


def epoch_time(su, adata, plan_kwargs) -> float:
    """Seconds per epoch of a fresh default su.SCVI (warm-up epoch excluded)."""
    model = su.SCVI(adata)
    model.train(max_epochs=1, plan_kwargs=plan_kwargs, enable_progress_bar=False)
    t0 = time.perf_counter()
    model.train(max_epochs=2, plan_kwargs=plan_kwargs, enable_progress_bar=False)
    return (time.perf_counter() - t0) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000, 100_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    import scvi
    import torch
    from scvi.model._utils import get_max_epochs_heuristic

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("scvi").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import inspect

    import scvi_unlearn as su

    fast = su.unlearn.fast_retrain
    lr = inspect.signature(fast).parameters["lr"].default

    scvi.settings.seed = 0
    fast_plan = {"lr": lr, "n_epochs_kl_warmup": None, "n_steps_kl_warmup": None}
    rows = []
    for n in args.sizes:
        adata = su.data.simulate(n, args.genes, random_state=0)
        su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
        default_s = epoch_time(su, adata, None)
        fast_s = epoch_time(su, adata, fast_plan)
        e = get_max_epochs_heuristic(n)
        f = default_budget(fast, e)
        rows.append(
            {
                "cells": f"{n:,}",
                "retrain epochs (heuristic)": e,
                "fast_retrain epochs": f,
                "s / epoch (default)": f"{default_s:.2f}",
                "s / epoch (fast)": f"{fast_s:.2f}",
                "retrain (s, estimated)": f"{e * default_s:.0f}",
                "fast_retrain (s, estimated)": f"{f * fast_s:.0f}",
                "time / retrain": f"{f * fast_s / (e * default_s):.3f}",
            }
        )
        print(rows[-1], flush=True)
    print()
    print(markdown(pd.DataFrame(rows)))
    for n in (300_000, 1_000_000):
        e = get_max_epochs_heuristic(n)
        print(f"{n:,} cells: retrain {e} epochs, fast_retrain {default_budget(fast, e)} epochs")


if __name__ == "__main__":
    main()
