"""``fast_retrain``'s cost: its epoch cap (``fast_retrain_epochs``), where the fit-matched
default stops (``fit_match``) and where its time goes on pbmc68k (``fast_retrain_cost``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import time

import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._settings import (
    ORIGINAL_TIME,
    default_budget,
    forget_sets,
    pbmc68k_cache,
    setting,
    simulated_cache,
    simulated_setting,
)

# ---------------------------------------------------------------------------- fast_retrain epochs


@dataclasses.dataclass
class EpochsParams(Common):
    """Parameters of the ``fast_retrain_epochs`` experiment.

    For each size, cells are simulated (``su.data.simulate``, calibrated on pbmc68k), a default
    ``su.SCVI`` is built, and one epoch of each schedule is timed (the mean of two epochs after
    a warm-up epoch): the default recipe (scvi-tools' plan, lr 1e-3) and fast_retrain's (KL
    weight 1, lr 1.2e-2).  The full retrain is *not* run: its cost is its per-epoch time x
    scvi-tools' epoch heuristic (400 epochs up to 20k cells, then 8M / n), and fast_retrain's
    is its per-epoch time x its default budget ``min(E, max(min_epochs, ceil(epoch_fraction x
    E)))`` (0.15 and 30: :func:`scvi_unlearn.unlearn.exact._fast_retrain.fast_budget`) -- its
    worst case: by default (``match_fit``) it stops as soon as it fits the retain validation
    cells as the original does.

    Attributes
    ----------
    sizes
        Cells simulated.
    genes
        Genes simulated.
    """

    sizes: list[int] = dataclasses.field(default_factory=lambda: [5_000, 20_000, 100_000])
    genes: int = 2000


def epoch_time(su, adata, plan_kwargs) -> float:
    """Seconds per epoch of a fresh default su.SCVI (warm-up epoch excluded)."""
    model = su.SCVI(adata)
    model.train(max_epochs=1, plan_kwargs=plan_kwargs, enable_progress_bar=False)
    t0 = time.perf_counter()
    model.train(max_epochs=2, plan_kwargs=plan_kwargs, enable_progress_bar=False)
    return (time.perf_counter() - t0) / 2


@experiment("fast_retrain_epochs", EpochsParams)
def fast_retrain_epochs(args: EpochsParams) -> pd.DataFrame:
    """Cost of fast_retrain's epoch cap relative to a default-recipe retrain as the data grow."""
    import scvi
    from scvi.model._utils import get_max_epochs_heuristic

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
    for n in (300_000, 1_000_000):
        e = get_max_epochs_heuristic(n)
        print(f"{n:,} cells: retrain {e} epochs, fast_retrain {default_budget(fast, e)} epochs")
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- fit matching


@dataclasses.dataclass
class FitMatchParams(Common):
    """Parameters of the ``fit_match`` experiment.

    ``fast_retrain_epochs`` gives ``fast_retrain``'s worst case (its epoch cap) from per-epoch
    times; by default (``match_fit``) it stops as soon as its retain validation ELBO reaches the
    original's, and how soon depends on the data.  This measures that stop.  For ``cells``
    simulated cells x ``genes`` genes it builds the setting of the simulated per-cell verdict
    (:func:`benchmarks.suites._settings.simulated_setting`: calibrated on pbmc68k, stratified
    70/30 member / held-out split, a default ``su.SCVI`` trained on the members with
    scvi-tools' recipe and epoch heuristic, seed 0; cached in ``cache/simulated_{cells}x{genes}``,
    its training time recorded there), then runs ``model.unlearn(forget)`` with the defaults
    (``method="fast_retrain"``) for seeds ``0 .. seeds - 1`` on the "CD56+ NK" members and 50
    random members, through the package's timed runner (:func:`scvi_unlearn.unlearn.run_jobs`).
    Per run: epochs trained (and the cap), wall time, wall time over the original's training
    time (a default-recipe retrain of the retain cells replays the same recipe on the members
    less the forget set), and the retain check's drop.  No retrains are run, so there is no
    per-cell verdict.

    Attributes
    ----------
    cells
        Cells simulated.
    genes
        Genes simulated.
    seeds
        Seeds of the default ``fast_retrain`` per forget set.
    original_time
        The original's training seconds (``None``: recorded in the cache when the original was
        trained there).
    """

    cells: int = 100_000
    genes: int = 1000
    seeds: int = 1
    original_time: float | None = None


@experiment("fit_match", FitMatchParams)
def fit_match(args: FitMatchParams) -> pd.DataFrame:
    """Where the default (fit-matched) fast_retrain stops, and what it costs, on large data."""
    cache = simulated_cache(args.cache, args.cells, args.genes)
    t0 = time.perf_counter()
    su, adata, model = simulated_setting(args.cells, args.genes, cache)
    seconds = args.original_time
    if seconds is None:
        if not (cache / ORIGINAL_TIME).exists():
            raise SystemExit(f"{cache / ORIGINAL_TIME} not found: pass --set original_time=S")
        seconds = json.loads((cache / ORIGINAL_TIME).read_text())["seconds"]
    print(
        f"{args.cells} cells x {args.genes} genes, {model.adata.n_obs} members, original "
        f"{model.train_recipe_['max_epochs']} epochs in {seconds:.1f} s "
        f"({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    nk = su.data.forget_by_label(adata, "CD56+ NK")
    sets = {f"CD56+ NK ({nk.size})": nk, "random (50)": su.data.forget_random(adata, 50, seed=0)}
    cap = default_budget(su.unlearn.fast_retrain, model.train_recipe_["max_epochs"])
    rows = []
    for name, forget in sets.items():
        jobs = [su.unlearn.UnlearningJob("fast_retrain", s) for s in range(args.seeds)]
        for job, (new, wall) in zip(jobs, su.unlearn.run_jobs(model, forget, jobs)):
            record = new.unlearn_record_
            rows.append(
                {
                    "forget set": name,
                    "seed": job.seed,
                    "epochs (cap)": f"{record['budget']['epochs']} ({cap})",
                    "wall (s)": round(wall, 1),
                    "time / original": round(wall / seconds, 4),
                    "retain check drop (%)": round(100 * record["checks"]["relative_drop"], 2),
                }
            )
            print(rows[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- fast_retrain cost


@dataclasses.dataclass
class CostParams(Common):
    """Parameters of the ``fast_retrain_cost`` experiment.

    The fast-unlearning issue asks for 0.05 x a default-recipe retrain's wall time.  This
    splits both costs, measured through the package (``model.unlearn``) in one process, each the
    fastest of ``reps`` runs: a model's cost is ``fixed + per_epoch x epochs``, with
    ``per_epoch`` from two epoch counts (``1`` and ``epochs``) and ``fixed`` what one epoch
    costs beyond ``per_epoch`` (task setup, Lightning, the retain check afterwards).  Rows:
    ``retrain`` (the original's recipe) at 1 and at ``epochs`` epochs; ``fast_retrain`` with a
    fixed budget (``match_fit=False``, ``average_epochs=None``), the same with weight averaging
    (``average_epochs=3``) and the same with fit matching (``match_fit=True``).  Then printed:
    the retrain at the original's own epoch count (the reference of every cost ratio), the
    default ``fast_retrain`` (fit-matched, averaged) with the epochs it trained, the cost of
    fit matching and of averaging an epoch, and the most epochs a fast retrain could train
    within 0.05 x the retrain.

    Attributes
    ----------
    original_epochs
        Training epochs of the pbmc68k original (:func:`benchmarks.suites._settings.setting`).
    forget_set
        The forget set, by name (:func:`benchmarks.suites._settings.forget_sets`, with CD34+).
    epochs
        The longer fixed budget.
    reps
        Runs of each (the fastest counts).
    """

    original_epochs: int = 200
    forget_set: str = "CD56+ NK (22)"
    epochs: int = 10
    reps: int = 3


def fastest(su, model, forget, reps: int, method: str, **kwargs) -> tuple[float, object]:
    """Fastest wall time of ``reps`` runs (seeds 0 ..; :func:`scvi_unlearn.unlearn.run_jobs`,
    degraded runs returned quietly) and the last run's model."""
    jobs = [
        su.unlearn.UnlearningJob(method, s, kwargs, quiet_degradation=True) for s in range(reps)
    ]
    runs = su.unlearn.run_jobs(model, forget, jobs)
    return min(wall for _, wall in runs), runs[-1][0]


@experiment("fast_retrain_cost", CostParams)
def fast_retrain_cost(args: CostParams) -> pd.DataFrame:
    """Where fast_retrain's time goes on pbmc68k: fixed cost, cost an epoch, fit matching."""
    cache = pbmc68k_cache(args.cache, args.original_epochs)
    su, adata, model = setting(str(cache), args.threads, args.original_epochs)
    forget = forget_sets(su, adata, cd34=True)[args.forget_set]
    recipe = model.train_recipe_["max_epochs"]
    fixed = {"match_fit": False, "average_epochs": None}
    runs = {
        "retrain (original's recipe)": ("retrain", {}),
        "fast_retrain, fixed budget": ("fast_retrain", fixed),
        "fast_retrain, fixed budget, averaged": ("fast_retrain", {**fixed, "average_epochs": 3}),
        "fast_retrain, fixed budget, fit matching": ("fast_retrain", {**fixed, "match_fit": True}),
    }
    print(f"pbmc68k, original {recipe} epochs, forget {args.forget_set}, {args.reps} reps")
    rows = []
    fixed_cost, per_epoch = {}, {}  # by run name, in seconds
    for name, (method, kwargs) in runs.items():
        one, _ = fastest(su, model, forget, args.reps, method, max_epochs=1, **kwargs)
        many, new = fastest(su, model, forget, args.reps, method, max_epochs=args.epochs, **kwargs)
        if kwargs.get("match_fit") and new.unlearn_record_["budget"]["epochs"] < args.epochs:
            raise SystemExit(f"fit matching stopped before {args.epochs} epochs: pass fewer")
        per_epoch[name] = (many - one) / (args.epochs - 1)
        fixed_cost[name] = one - per_epoch[name]
        rows.append(
            {
                "run": name,
                "1 epoch (s)": f"{one:.2f}",
                f"{args.epochs} epochs (s)": f"{many:.2f}",
                "s / epoch": f"{per_epoch[name]:.4f}",
                "fixed (s)": f"{fixed_cost[name]:.2f}",
            }
        )
        print(rows[-1], flush=True)
    full, _ = fastest(su, model, forget, 1, "retrain")
    default, new = fastest(su, model, forget, args.reps, "fast_retrain")
    trained = new.unlearn_record_["budget"]["epochs"]
    retrain_epoch = per_epoch["retrain (original's recipe)"]
    fast_epoch = per_epoch["fast_retrain, fixed budget"]
    scoring = per_epoch["fast_retrain, fixed budget, fit matching"] - fast_epoch
    averaging = per_epoch["fast_retrain, fixed budget, averaged"] - fast_epoch
    budget = (0.05 * full - fixed_cost["fast_retrain, fixed budget"]) / (
        fast_epoch + scoring + averaging
    )
    print(
        f"\nretrain, the original's {recipe} epochs: {full:.2f} s "
        f"({full / recipe:.4f} s / epoch overall)\n"
        f"fast_retrain default (fit-matched, averaged): {default:.2f} s = "
        f"{default / full:.3f} x the retrain, {trained} epochs (last seed)\n"
        f"an epoch of fast_retrain / of the retrain: {fast_epoch / retrain_epoch:.2f}; "
        f"fit matching adds {scoring:.4f} s / epoch ({scoring / fast_epoch:.0%}), "
        f"averaging {averaging:.4f} s ({averaging / fast_epoch:.0%})\n"
        f"0.05 x the retrain = {0.05 * full:.2f} s: at most {budget:.1f} fit-matched, averaged "
        f"epochs ({0.05 * recipe:.0f} epochs at the retrain's own cost an epoch)"
    )
    return pd.DataFrame(rows)
