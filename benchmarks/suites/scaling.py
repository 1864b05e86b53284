"""Scaling and memory: the methods' time and peak memory against a retrain as the data grow.

Experiments:

* ``methods``: each approximate method's time and peak memory through ``model.unlearn()``, each
  in a fresh process, against a retrain estimated from its per-epoch time, 5k-300k simulated
  cells;
* ``fast_retrain_epochs``: ``fast_retrain``'s worst case (its epoch cap) against a
  default-recipe retrain, from per-epoch times;
* ``fit_match``: where the default (fit-matched) ``fast_retrain`` stops on large simulated
  data, and its wall time against the original's training time;
* ``retain_sample``: whether a retain sample changes what an approximate method does;
* ``speed``: every method's wall time relative to ``retrain`` on pbmc68k;
* ``fast_retrain_cost``: where ``fast_retrain``'s time goes on pbmc68k (fixed cost, cost an
  epoch, fit matching, averaging);
* ``ddp``: a method on 2 DDP processes (CPU) against the same on one.

Fresh-process workers (``methods``, ``ddp``) run as ``python -m benchmarks.suites.scaling
method FOLDER METHOD THREADS`` and ``python -m benchmarks.suites.scaling ddp FOLDER METHOD
DEVICES OUT THREADS``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._common import quiet, rss_mb, run_child
from benchmarks.suites._settings import (
    APPROXIMATE,
    FULL_BUDGET,
    ORIGINAL_TIME,
    default_budget,
    forget_sets,
    pbmc68k_cache,
    setting,
    setup,
    simulated_cache,
    simulated_members,
    simulated_setting,
)

# ---------------------------------------------------------------------------- methods


@dataclasses.dataclass
class MethodsParams(Common):
    """Parameters of the ``methods`` experiment.

    For each size, cells are simulated (``su.data.simulate``, calibrated on pbmc68k; seed 0)
    and a default ``su.SCVI`` is trained for ``original_epochs`` epochs: the methods' cost does
    not depend on how converged the original is (their budgets are epochs over a retain sample
    and Fisher passes over a retain sample, ``su.unlearn.retain_sample_size``), so a fully
    trained atlas model is not needed to time them.  The forget set has the same size at every
    n (``forget`` cells of the rarest type: one withdrawn donor's worth), so a flat cost shows
    that it does not grow with the dataset.

    * **Retrain: estimated**, not run: the default recipe's measured seconds per epoch (one
      epoch timed after a warm-up epoch) x scvi-tools' epoch heuristic (400 up to 20k cells,
      then 8M / n).  ``fast_retrain``: the same seconds per epoch x its budget
      ``max(10, ceil(0.15 x epochs))`` (same architecture and cells; only the learning rate and
      KL weight differ).  ``rewind``: the same seconds per epoch x its budget
      ``max(10, ceil(0.06 x epochs))`` over every retain cell (it restarts from a checkpoint of
      the original training, which this 2-epoch original does not keep).
    * **Approximate methods: measured**, each in its own process through ``model.unlearn()``
      (whole call: retain copy, method, checks), with the process's peak resident memory
      (``ru_maxrss``) next to its memory after loading the data and model.

    Attributes
    ----------
    sizes
        Cells simulated.
    genes
        Genes simulated.
    forget
        Forget cells (of the rarest type).
    methods
        The approximate methods measured.
    original_epochs
        Training epochs of the original.
    """

    sizes: list[int] = dataclasses.field(default_factory=lambda: [5_000, 20_000, 100_000, 300_000])
    genes: int = 2000
    forget: int = 200
    methods: list[str] = dataclasses.field(default_factory=lambda: list(APPROXIMATE))
    original_epochs: int = 2


def prepare(n: int, genes: int, forget: int, original_epochs: int, folder: Path) -> dict:
    """Simulate, train and save the original; time the default recipe's epoch."""
    import scvi

    import scvi_unlearn as su

    adata = su.data.simulate(n, genes, random_state=0)
    rare = adata.obs["cell_type"].value_counts().index[-1]
    members = np.flatnonzero(adata.obs["cell_type"].to_numpy() == rare)
    rng = np.random.default_rng(0)
    chosen = rng.choice(members, min(forget, members.size), replace=False)
    names = adata.obs_names[np.sort(chosen)].tolist()
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    scvi.settings.seed = 0
    model = su.SCVI(adata)
    model.train(max_epochs=1, enable_progress_bar=False)  # warm-up epoch
    t0 = time.perf_counter()
    model.train(max_epochs=max(1, original_epochs - 1), enable_progress_bar=False)
    epoch_s = (time.perf_counter() - t0) / max(1, original_epochs - 1)
    model.save(folder / "model", save_anndata=True, overwrite=True)
    (folder / "forget.txt").write_text("\n".join(names))
    return {"epoch_s": epoch_s, "n_forget": len(names), "rare_type": str(rare)}


def method_worker(folder: Path, method: str) -> dict:
    """Unlearn with ``method`` in this (fresh) process: seconds, peak memory, budget."""
    import scvi

    import scvi_unlearn as su

    scvi.settings.seed = 0
    model = su.SCVI.load(str(folder / "model"))
    names = (folder / "forget.txt").read_text().split("\n")
    loaded_mb = rss_mb()
    kwargs = {} if method == "ssd" else {"enable_progress_bar": False}
    t0 = time.perf_counter()
    new = model.unlearn(names, method=method, seed=0, on_degradation="warn", **kwargs)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "method_s": new.unlearn_record_["method_time_s"],
        "loaded_mb": loaded_mb,
        "peak_mb": rss_mb(),
        "budget": new.unlearn_record_["budget"],
    }


@experiment("methods", MethodsParams)
def methods(args: MethodsParams) -> pd.DataFrame:
    """Each approximate method's time and peak memory against an estimated retrain, per size."""
    from scvi.model._utils import get_max_epochs_heuristic

    from scvi_unlearn.unlearn import fast_retrain, rewind

    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            info = prepare(n, args.genes, args.forget, args.original_epochs, folder)
            epochs = get_max_epochs_heuristic(n)
            retrain_s = info["epoch_s"] * epochs
            fast_s = info["epoch_s"] * default_budget(fast_retrain, epochs)
            rewind_epochs = default_budget(rewind, epochs)
            rewind_s = info["epoch_s"] * rewind_epochs
            base = {"cells": f"{n:,}", "forget": info["n_forget"]}
            for method, seconds in (
                (f"retrain (estimated: {epochs} epochs)", retrain_s),
                ("fast_retrain (estimated)", fast_s),
                (f"rewind (estimated: {rewind_epochs} epochs)", rewind_s),
            ):
                ratio = "1" if method.startswith("retrain") else f"{seconds / retrain_s:.3f}"
                rows.append(
                    base | {"method": method, "seconds": f"{seconds:.0f}", "time / retrain": ratio}
                )
            for method in args.methods:
                r = run_child("benchmarks.suites.scaling", "method", folder, method, args.threads)
                budget = r["budget"]
                rows.append(
                    base
                    | {
                        "method": method,
                        "seconds": f"{r['seconds']:.1f}",
                        "time / retrain": f"{r['seconds'] / retrain_s:.4f}",
                        "of which the method (s)": f"{r['method_s']:.1f}",
                        "retain cells / epoch": budget.get("retain_cells_per_epoch", "-"),
                        "retain cells (Fisher)": budget.get("retain_cells_importance", "-"),
                        "memory after load (MB)": f"{r['loaded_mb']:.0f}",
                        "peak memory (MB)": f"{r['peak_mb']:.0f}",
                    }
                )
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows).fillna("-")
    measured = table[~table["method"].str.contains("estimated")]
    ratios = measured["time / retrain"].astype(float)
    print(f"\nlargest approximate-method ratio: {ratios.max():.4f} (goal <= 0.1)")
    if not math.isfinite(ratios.max()):
        raise SystemExit(1)
    return table


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


# ---------------------------------------------------------------------------- retain sample


@dataclasses.dataclass
class RetainSampleParams(Common):
    """Parameters of the ``retain_sample`` experiment.

    The retain-sample budget (``su.unlearn.retain_sample_size``) makes each epoch of an
    approximate method a pass over a random sample of retain cells instead of all of them.  On
    pbmc68k the default sample is every cell, so its measured defaults cannot tell whether a
    sample changes the outcome.  Here the data are large enough for a sample to be much smaller
    than the retain set: ``cells`` simulated cells (calibrated on pbmc68k, rarest type 3% of
    the cells, seed 0), a stratified 70/30 member / held-out split, a default ``su.SCVI``
    trained ``epochs`` epochs on the members (seed 0), forget = ``forget`` members of the
    rarest type.  Every approximate method runs with its defaults twice: with
    ``retain_sample=sample`` (far below the retain set: a stricter test than the default floor
    of 2,048) and with ``retain_sample="all"``.  For each: the mean per-cell ELBO (8 draws,
    seed 0) of the forget cells, of the held-out cells of the same type and the change of the
    other types' held-out ELBO from the original, the forget advantage (forget ELBO minus
    same-type held-out ELBO) and the method time.

    Attributes
    ----------
    cells
        Cells simulated.
    genes
        Genes simulated.
    epochs
        Training epochs of the original.
    forget
        Forget cells (members of the rarest type).
    sample
        The small retain sample.
    methods
        The approximate methods run.
    exact
        Add two exact references without retrains of the default recipe: ``fast_retrain`` with
        its full budget (``match_fit=False``) and ``fast_retrain`` given each sampled method's
        cell passes (its default epochs x ``sample`` cells, in epochs over every retain
        training cell, rounded up; also ``match_fit=False``): the exact retrain at equal cost.
    """

    cells: int = 6000
    genes: int = 1000
    epochs: int = 60
    forget: int = 60
    sample: int = 512
    methods: list[str] = dataclasses.field(default_factory=lambda: list(APPROXIMATE))
    exact: bool = False


@experiment("retain_sample", RetainSampleParams)
def retain_sample(args: RetainSampleParams) -> pd.DataFrame:
    """Does a retain sample change what an approximate method does?  Sample vs every cell."""
    import scvi_unlearn as su

    adata, train, model = simulated_members(
        args.cells, args.genes, args.epochs, rare_fraction=0.03
    )
    rare = train.obs["cell_type"].value_counts().index[-1]
    members = su.data.forget_by_label(adata, rare)
    forget = np.sort(
        np.random.default_rng(0).choice(members, min(args.forget, members.size), replace=False)
    )
    heldout = adata[adata.obs["membership"] != "train"]
    same = heldout[heldout.obs["cell_type"] == rare].copy()
    other = heldout[heldout.obs["cell_type"] != rare].copy()
    forget_cells = adata[forget].copy()

    def scores(m) -> dict:
        return {
            k: float(su.metrics.per_cell_elbo(m, a)["elbo"].mean())
            for k, a in (("forget", forget_cells), ("same", same), ("other", other))
        }

    base = scores(model)
    print(f"{train.n_obs} members; forget {forget.size} of {rare!r}; original {base}")
    rows = [{"method": "original", "retain sample": "-", **base, "other held-out": "0"}]

    def run(label: str, method: str, sample, **kwargs) -> None:
        if method != "ssd":
            kwargs["enable_progress_bar"] = False
        t0 = time.perf_counter()
        new = model.unlearn(forget, method=method, seed=0, on_degradation="warn", **kwargs)
        seconds = time.perf_counter() - t0
        s = scores(new)
        change = 100 * (s["other"] - base["other"]) / abs(base["other"])
        rows.append(
            {
                "method": label,
                "retain sample": sample,
                **s,
                "other held-out": f"{change:+.2f}%",
                "seconds": f"{seconds:.1f}",
            }
        )
        print(rows[-1], flush=True)

    retain_train = int(np.isin(train.obs_names[model.train_indices], forget, invert=True).sum())
    if args.exact:
        run("fast_retrain (full budget)", "fast_retrain", "all", **FULL_BUDGET)
    for method in args.methods:
        for sample in (args.sample, "all"):
            run(method, method, sample, retain_sample=sample)
        epochs = inspect.signature(su.unlearn.METHODS[method]).parameters.get("max_epochs")
        if args.exact and epochs is not None and epochs.default is not None:
            equal = math.ceil(epochs.default * min(args.sample, retain_train) / retain_train)
            run(
                f"fast_retrain, {equal} epochs (= {method}, sample)",
                "fast_retrain",
                "all",
                max_epochs=equal,
                **FULL_BUDGET,  # the given epochs, not fewer: equal cost
            )
    table = pd.DataFrame(rows)
    table["forget advantage"] = table["forget"] - table["same"]
    for key in ("forget", "same", "other", "forget advantage"):
        table[key] = table[key].map(lambda v: f"{v:.1f}")
    table = table.rename(
        columns={
            "forget": "forget ELBO",
            "same": "same-type held-out ELBO",
            "other": "other-type held-out ELBO",
            "other held-out": "other held-out vs original",
        }
    )
    return table.fillna("-")


# ---------------------------------------------------------------------------- speed


@dataclasses.dataclass
class SpeedParams(Common):
    """Parameters of the ``speed`` experiment.

    The setting of the defaults study (:func:`benchmarks.suites._settings.setup`): the offline
    PBMC data, the members of a stratified 70 / 30 split, an ``su.SCVI`` with the default
    architecture and recipe (400 epochs by scvi-tools' heuristic) and the "CD56+ NK" members
    (22 cells) as the forget set.  Each method runs with its defaults (``retrain`` = the
    recorded recipe); the time is ``unlearn_record_["wall_time_s"]`` (the whole ``unlearn``
    call: data copy, method, checks).  Progress bars off.

    Attributes
    ----------
    repeats
        Runs per method (median).
    methods
        The methods timed after ``retrain`` (``None``: every registered method).
    cache
        Folder of the cached original.
    """

    repeats: int = 1
    methods: list[str] | None = None
    cache: str = os.path.join(tempfile.gettempdir(), "su_unlearn")


@experiment("speed", SpeedParams)
def speed(args: SpeedParams) -> pd.DataFrame:
    """Wall time of every unlearning method relative to retrain on pbmc68k, in one run."""
    import scvi_unlearn as su

    os.makedirs(args.cache, exist_ok=True)
    model, _, _, forget = setup(args.cache, args.threads)
    names = ["retrain"] + [m for m in args.methods or su.unlearn.METHODS if m != "retrain"]
    times: dict[str, float] = {}
    for method in names:
        kwargs = {} if method == "ssd" else {"enable_progress_bar": False}
        runs = []
        for r in range(args.repeats):
            new = model.unlearn(forget, method=method, seed=r, on_degradation="warn", **kwargs)
            runs.append(new.unlearn_record_["wall_time_s"])
        times[method] = float(np.median(runs))
        print(f"{method:16s} {times[method]:8.2f} s", flush=True)
    return pd.DataFrame(
        {
            "method": m,
            "wall time (s)": f"{times[m]:.2f}",
            "time / retrain": f"{times[m] / times['retrain']:.4f}",
        }
        for m in names
    )


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


# ---------------------------------------------------------------------------- DDP


@dataclasses.dataclass
class DDPParams(Common):
    """Parameters of the ``ddp`` experiment.

    Setting: the offline PBMC data (``su.data.pbmc68k()``), the stratified 70/30 member split,
    a default ``su.SCVI`` trained ``epochs`` epochs on the members (seed 0), forget = the CD56+
    NK members.  Each method runs with its defaults, once on one process and once with
    Lightning's DDP on 2 CPU processes (``accelerator="cpu", devices=2,
    strategy="ddp_find_unused_parameters_true"``: scVI has parameters that get no gradient,
    e.g. the library encoder with observed library sizes, which plain ``"ddp"`` refuses).
    Reported: the mean per-cell ELBO (8 draws, seed 0) of the forget cells, of the held-out
    CD56+ NK cells and of the other held-out cells, for both runs.

    Every run is its own process (``python -m benchmarks.suites.scaling ddp ...``; Lightning's
    DDP launcher starts the second rank by re-running that command), loading the saved
    original; rank 0 writes the scores.  Under DDP each process sees half of every epoch's
    minibatches and gradients are averaged, so the result is not bit-identical to one process
    (and BatchNorm statistics are per process); the question is whether its quality is the
    same.

    Attributes
    ----------
    epochs
        Training epochs of the original.
    methods
        The methods run on 1 and on 2 processes.
    """

    epochs: int = 200
    methods: list[str] = dataclasses.field(
        default_factory=lambda: ["finetune", "scrub", "fast_retrain"]
    )


def _ddp_sets(su, adata) -> dict:
    forget = su.data.forget_by_label(adata, "CD56+ NK")
    heldout = adata[adata.obs["membership"] != "train"]
    return {
        "forget": adata[forget].copy(),
        "same-type held-out": heldout[heldout.obs["cell_type"] == "CD56+ NK"].copy(),
        "other held-out": heldout[heldout.obs["cell_type"] != "CD56+ NK"].copy(),
    }


def _ddp_scores(su, model, sets: dict) -> dict:
    return {k: float(su.metrics.per_cell_elbo(model, a)["elbo"].mean()) for k, a in sets.items()}


def ddp_worker(folder: Path, method: str, devices: int) -> dict | None:
    """Unlearn with ``method`` on ``devices`` processes; rank 0 returns the scores."""
    import anndata as ad
    import scvi

    import scvi_unlearn as su

    scvi.settings.seed = 0
    adata = ad.read_h5ad(folder / "adata.h5ad")
    model = su.SCVI.load(str(folder / "model"))
    sets = _ddp_sets(su, adata)
    extra = {"devices": 2, "strategy": "ddp_find_unused_parameters_true"} if devices == 2 else {}
    t0 = time.perf_counter()
    new = model.unlearn(
        list(sets["forget"].obs_names), method=method, seed=0, accelerator="cpu",
        enable_progress_bar=False, on_degradation="warn", **extra,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return None
    scores = _ddp_scores(su, new, sets)
    return {"method": method, "processes": devices, **scores, "seconds": seconds}


@experiment("ddp", DDPParams)
def ddp(args: DDPParams) -> pd.DataFrame:
    """A method on 2 DDP processes (CPU) against the same on one: forget and held-out ELBO."""
    import scvi

    import scvi_unlearn as su

    scvi.settings.seed = 0
    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    train = adata[adata.obs["membership"] == "train"].copy()
    su.SCVI.setup_anndata(train, layer="counts", labels_key="cell_type")
    model = su.SCVI(train)
    model.train(max_epochs=args.epochs, enable_progress_bar=False)
    sets = _ddp_sets(su, adata)
    rows = [{"method": "original", "processes": 1, **_ddp_scores(su, model, sets)}]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model.save(str(folder / "model"), save_anndata=True)
        adata.write_h5ad(folder / "adata.h5ad")
        for method in args.methods:
            for devices in (1, 2):
                out = folder / f"{method}-{devices}.json"
                cmd = [sys.executable, "-m", "benchmarks.suites.scaling", "ddp", str(folder),
                       method, str(devices), str(out), str(args.threads)]  # fmt: skip
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(
                        f"{method} on {devices} process(es) failed:\n{done.stderr[-3000:]}"
                    )
                rows.append(json.loads(out.read_text()))
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    for key in [*sets, "seconds"]:
        table[key] = table[key].map(lambda v: f"{v:.1f}")
    return table.replace("nan", "-")


def _main(argv: list[str]) -> None:
    """The fresh-process workers: ``method FOLDER METHOD THREADS`` prints one JSON line;
    ``ddp FOLDER METHOD DEVICES OUT THREADS`` writes rank 0's JSON to ``OUT``."""
    kind, folder, method, *rest = argv
    quiet(int(rest[-1]))
    if kind == "method":
        print(json.dumps(method_worker(Path(folder), method)))
    elif kind == "ddp":
        row = ddp_worker(Path(folder), method, int(rest[0]))
        if row is not None:
            Path(rest[1]).write_text(json.dumps(row))
    else:
        raise SystemExit(f"unknown worker {kind!r}: method or ddp")


if __name__ == "__main__":
    _main(sys.argv[1:])
