"""Per-cell retrain-equivalence verdict on simulated data larger than pbmc68k.

On pbmc68k (469 retain cells, 4 minibatches an epoch) ``fast_retrain`` needs 30 epochs (0.15 x
the original's 200) to be retrain-equivalent, and the approximate methods that bound their cost
by a retain sample see every retain cell anyway.  Here the data are larger: ``--cells``
simulated cells (``su.data.simulate``, calibrated on pbmc68k, seed 0) x ``--genes`` genes, a
stratified 70/30 member / held-out split, the original a default ``su.SCVI`` (``n_latent=10``)
trained on the members with scvi-tools' default recipe and epoch heuristic (400 epochs up to
20k cells; seed 0), forget = the "CD56+ NK" members and 50 random members.  Each run (seeds
0 .. ``--seeds`` - 1) is judged by :func:`scvi_unlearn.attack.equivalence_test` against 5
default-recipe retrains (seeds 0-4, cached in ``--cache``), with the verdict grids' driver
(:func:`verdict_grid.run_grid`): ``fast_retrain`` as by default (stopped when its retain
validation ELBO reaches the original's, ``match_fit``), with its full budget (``0.15 x`` the
original's epochs) and with ``--epochs`` fixed budgets, and the approximate methods of
``--methods`` with their defaults (``distill`` and ``reinit_finetune`` take a retain sample of
2,048 cells an epoch, below the retain set here).  Cost = wall time over a default-recipe
retrain's, timed in the same process.  ``--warmup-epochs`` adds ``fast_retrain`` with
``kl_warmup=True`` (the KL weight warmed up over the budget, as the default recipe warms it up
over 400 epochs) at those budgets, ``--fit-variants`` the fit-matched ``fast_retrain`` with a
lower rate, with KL warm-up, with or without the moving average of its weights
(:data:`FIT_VARIANTS`; all, or those named).  Without ``--retrain-time`` the cost divides by
the original's training time when ``simulated_setting`` recorded it in the cache
(``original_time.json``), else by a retrain timed here.

    python benchmarks/scale_verdict.py --threads 1 --cache /tmp/scale_refs
    python benchmarks/scale_verdict.py --threads 1 --cache /tmp/scale_refs \\
        --no-default-runs --warmup-epochs 60 30 --retrain-time 212.9 --threads 2
    python benchmarks/scale_verdict.py --threads 1 --cache /tmp/scale_refs --epochs \\
        --methods --retrain-time 212.9
    python benchmarks/scale_verdict.py --threads 1 --cache /tmp/scale_refs --no-default-runs \\
        --fit-variants --retrain-time 212.9
    python benchmarks/scale_verdict.py --threads 1 --cells 10000 --cache /tmp/scale_refs_10k \\
        --sets "random (50)" --epochs --methods
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from equivalence_power import FULL_BUDGET
from scaling import quiet
from verdict_grid import grid_parser, run_grid

#: ``--fit-variants``: the fit-matched (default) ``fast_retrain`` with another rate, warm-up or
#: weight averaging (the first four without the average, as measured before it was the default;
#: "averaged over 3 epochs" without the cap in steps and checked once an epoch, the default
#: before the cap; the last the default's proportions at 100,000 cells, an average over 0.6 of
#: an epoch checked 5 times an epoch, at the 99 steps an epoch of 20,000 cells)
FIT_VARIANTS = {
    "lr 6e-3": {"lr": 6e-3, "average_epochs": None},
    "lr 3e-3, cap 120": {"lr": 3e-3, "max_epochs": 120, "average_epochs": None},
    "KL warm-up over 60": {"kl_warmup": True, "average_epochs": None},
    "KL warm-up over 30": {"kl_warmup": True, "max_epochs": 30, "average_epochs": None},
    "averaged over 3 epochs": {
        "average_epochs": 3,
        "max_average_steps": None,
        "check_steps": None,
    },
    "not averaged": {"average_epochs": None},
    "averaged over 60 steps, checked every 20": {"max_average_steps": 60, "check_steps": 20},
}


#: the original's training time, written next to it by :func:`simulated_setting`
ORIGINAL_TIME = "original_time.json"


def simulated_setting(cells: int, genes: int, cache: Path):
    """``(su, adata, original)``: the simulated data with its split and the original, loaded
    from ``cache/original`` or trained there (default recipe, the epoch heuristic, seed 0; its
    training time written to ``cache/original_time.json``)."""
    import scvi
    import torch
    from scvi.model._utils import get_max_epochs_heuristic

    import scvi_unlearn as su
    from scvi_unlearn.benchmark._runner import train_original

    scvi.settings.seed = 0
    adata = su.data.simulate(cells, genes, random_state=0)
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    path = cache / "original"
    if path.exists():
        return su, adata, su.SCVI.load(str(path))
    members = int((adata.obs[su.data.SPLIT_KEY] == su.data.TRAIN).sum())
    epochs = get_max_epochs_heuristic(members)
    t0 = time.perf_counter()
    model = train_original(adata, train_kwargs={"max_epochs": epochs}, seed=0)
    seconds = time.perf_counter() - t0
    model.save(str(path), save_anndata=True)
    timing = {"seconds": seconds, "torch_threads": torch.get_num_threads()}
    (cache / ORIGINAL_TIME).write_text(json.dumps(timing))
    return su, adata, model


def main() -> None:
    parser = grid_parser(__doc__.splitlines()[0], baselines=())
    parser.add_argument("--cells", type=int, default=5000)
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--epochs", type=int, nargs="*", default=[30, 20, 12])
    parser.add_argument("--methods", nargs="*", default=["distill", "reinit_finetune"])
    parser.add_argument(
        "--warmup-epochs",
        type=int,
        nargs="*",
        default=[],
        help="also fast_retrain with kl_warmup=True for these budgets",
    )
    parser.add_argument(
        "--fit-variants",
        nargs="*",
        choices=list(FIT_VARIANTS),
        default=None,
        help="also the fit-matched fast_retrain with these variants (all without a name)",
    )
    parser.add_argument(
        "--no-default-runs",
        action="store_true",
        help="only the --warmup-epochs and --fit-variants runs",
    )
    parser.set_defaults(sets=None)  # the sets below, not pbmc68k's
    args = parser.parse_args()
    quiet(args.threads)
    t0 = time.perf_counter()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    su, adata, model = simulated_setting(args.cells, args.genes, cache)
    if args.retrain_time is None and (cache / ORIGINAL_TIME).exists():
        # the original's training time, recorded when it was trained: a retrain replays its
        # recipe on the members less the forget set, and timing one here would cost as much
        args.retrain_time = json.loads((cache / ORIGINAL_TIME).read_text())["seconds"]
        print(f"retrain time: the original's {args.retrain_time:.1f} s", flush=True)
    nk = su.data.forget_by_label(adata, "CD56+ NK")
    sets = {f"CD56+ NK ({nk.size})": nk, "random (50)": su.data.forget_random(adata, 50, seed=0)}
    args.sets = args.sets or list(sets)
    recipe = model.train_recipe_["max_epochs"]
    print(
        f"{args.cells} cells x {args.genes} genes, {model.adata.n_obs} members, original "
        f"{recipe} epochs; sets {', '.join(args.sets)} ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    runs = [
        ("fast_retrain (default, fit-matched)", model, "fast_retrain", {}),
        ("fast_retrain, full budget", model, "fast_retrain", FULL_BUDGET),
    ]
    runs += [
        (f"fast_retrain {e} epochs", model, "fast_retrain", {"max_epochs": e, **FULL_BUDGET})
        for e in args.epochs
    ]
    runs += [(m, model, m, {}) for m in args.methods]
    if args.no_default_runs:
        runs = []
    runs += [
        (
            f"fast_retrain {e} epochs, KL warm-up",
            model,
            "fast_retrain",
            {"max_epochs": e, "kl_warmup": True, **FULL_BUDGET},
        )
        for e in args.warmup_epochs
    ]
    if args.fit_variants is not None:
        names = args.fit_variants or list(FIT_VARIANTS)
        runs += [(f"fit-matched, {k}", model, "fast_retrain", FIT_VARIANTS[k]) for k in names]
    run_grid(su, adata, model, runs, args, t0, sets=sets)


if __name__ == "__main__":
    main()
