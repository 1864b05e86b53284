"""The ``grid`` experiment: every run x forget set x seed of the config against default-recipe
retrains, on pbmc68k or simulated data.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites import _settings as s
from benchmarks.suites.verdict._runs import VARIANTS, expand_runs
from benchmarks.suites.verdict._summary import SpreadRecorder, spread_table, summary


@dataclasses.dataclass
class GridParams(Common):
    """Parameters of the ``grid`` experiment.

    Attributes
    ----------
    data
        ``"pbmc68k"`` or ``"simulated"``.
    original_epochs
        pbmc68k: the original's training epochs (its retrains replay that recipe; an original
        other than the 200-epoch one is cached in ``cache/pbmc68k_{E}_epochs``).
    cells, genes
        Simulated: the data's size (cached in ``cache/simulated_{cells}x{genes}``).
    cd34
        pbmc68k: add the 9 CD34+ members to the forget sets (first).
    sets
        Forget sets by name (empty: every set of the data: pbmc68k's five of
        :func:`_settings.forget_sets`, simulated ``CD56+ NK (n)`` and ``random (50)``).
    seeds
        Seeds of each run, ``0 .. seeds - 1``.
    references
        Default-recipe retrains each run is judged against.
    runs
        The runs (the docstring of :mod:`benchmarks.suites.verdict`).
    select
        Labels of the runs to keep (empty: all).
    baselines
        Methods run with their defaults after the runs (row name: the method).
    retrain_time
        Seconds of a default-recipe retrain (``None``: the original's recorded training time on
        simulated data, else timed here).
    time_each_set
        Time a retrain on each forget set before its runs (instead of on the first set at the
        start and at the end).
    on_degradation
        Passed to every run (``"warn"``: a degraded run is measured, not stopped; ``"auto"``:
        the method's default, which stops it with an error).
    spread
        Also the calibration table: the spread of the forget cells' ELBO across seeds against
        the retrains' (:func:`spread_table`).
    """

    data: str = "pbmc68k"
    original_epochs: int = 200
    cells: int = 5000
    genes: int = 1000
    cd34: bool = False
    sets: list[str] = dataclasses.field(default_factory=list)
    seeds: int = 3
    references: int = 5
    runs: list[dict] = dataclasses.field(default_factory=list)
    select: list[str] = dataclasses.field(default_factory=list)
    baselines: list[str] = dataclasses.field(default_factory=list)
    retrain_time: float | None = None
    time_each_set: bool = False
    on_degradation: str = "warn"
    spread: bool = False


def load_setting(params: GridParams):
    """``(su, adata, original, forget sets by name, cache folder)`` of ``params.data``."""
    if params.data == "pbmc68k":
        folder = s.pbmc68k_cache(params.cache, params.original_epochs)
        su, adata, model = s.setting(str(folder), params.threads, params.original_epochs)
        recorded = model.train_recipe_["max_epochs"]
        if recorded != params.original_epochs:
            raise SystemExit(
                f"{folder}/original was trained {recorded} epochs, not original_epochs "
                f"{params.original_epochs}."
            )
        return su, adata, model, s.forget_sets(su, adata, cd34=params.cd34), folder
    if params.data == "simulated":
        folder = s.simulated_cache(params.cache, params.cells, params.genes)
        su, adata, model = s.simulated_setting(params.cells, params.genes, folder)
        nk = su.data.forget_by_label(adata, "CD56+ NK")
        sets = {
            f"CD56+ NK ({nk.size})": nk,
            "random (50)": su.data.forget_random(adata, 50, seed=0),
        }
        print(
            f"{params.cells} cells x {params.genes} genes, {model.adata.n_obs} members, original "
            f"{model.train_recipe_['max_epochs']} epochs",
            flush=True,
        )
        return su, adata, model, sets, folder
    raise SystemExit(f"data is 'pbmc68k' or 'simulated', not {params.data!r}")


def set_references(su, params: GridParams, model, folder: Path, set_name: str, forget):
    """The ``params.references`` default-recipe retrains of ``model`` without ``forget``,
    cached per forget set (:func:`_settings.reference_folder`)."""
    return su.attack.train_references(
        model, forget, range(params.references), folder=s.reference_folder(folder, set_name)
    )


def rewound_original(su, adata, folder: Path, k: int, reference, epochs: int):
    """The original (seed 0, ``epochs`` epochs) trained with a checkpoint after ``k`` epochs:
    loaded from ``folder/original_rewind{k}`` or trained and saved there; prints whether its
    weights equal ``reference``'s."""
    import torch

    from scvi_unlearn.benchmark._runner import train_original

    path = folder / f"original_rewind{k}"
    if path.exists():
        model = su.SCVI.load(str(path))
    else:
        kwargs = {"max_epochs": epochs, "rewind_epoch": k}
        model = train_original(adata, train_kwargs=kwargs, seed=0)
        model.save(str(path), save_anndata=True)
    ours, ref = model.module.state_dict(), reference.module.state_dict()
    diff = max(float((ours[n].double() - ref[n].double()).abs().max()) for n in ref)
    same = ours.keys() == ref.keys() and all(torch.equal(ours[n], ref[n]) for n in ref)
    verdict = "equal" if same else "DIFFER"
    print(
        f"original with rewind_epoch={k}: weights {verdict} to the cached original's (max "
        f"|diff| {diff:.3g}); checkpoint epoch {model.rewind_checkpoint_['epoch']}",
        flush=True,
    )
    return model


@experiment("grid", GridParams)
def grid(params: GridParams) -> dict[str, pd.DataFrame]:
    """Per-cell verdict of every run x forget set x seed against default-recipe retrains."""
    t0 = time.perf_counter()
    su, adata, model, sets, folder = load_setting(params)
    names = params.sets or list(sets)
    unknown = sorted(set(names) - set(sets))
    if unknown:
        raise SystemExit(f"unknown forget sets {unknown}; known: {list(sets)}")
    runs = expand_runs(params.runs, params.select)
    runs += [{"label": m, "method": m, "kwargs": {}} for m in params.baselines]
    unknown = sorted({r["variant"] for r in runs if "variant" in r} - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    originals = {
        k: rewound_original(su, adata, folder, k, model, params.original_epochs)
        for k in dict.fromkeys(r["rewind_epoch"] for r in runs if "rewind_epoch" in r)
    }
    full_time = params.retrain_time
    if full_time is None and (folder / s.ORIGINAL_TIME).exists():
        # the original's training time, recorded when it was trained: a retrain replays its
        # recipe on the members less the forget set, and timing one here would cost as much
        full_time = json.loads((folder / s.ORIGINAL_TIME).read_text())["seconds"]
        print(f"retrain time: the original's {full_time:.1f} s", flush=True)
    timed_here = full_time is None
    retrain_job = [su.unlearn.UnlearningJob("retrain", 100)]
    if timed_here and not params.time_each_set:
        [(_, full_time)] = su.unlearn.run_jobs(model, sets[names[0]], retrain_job)
    recorder = SpreadRecorder() if params.spread else None
    rows = []
    for set_name in names:
        forget = sets[set_name]
        refs = set_references(su, params, model, folder, set_name, forget)
        if timed_here and params.time_each_set:
            [(_, full_time)] = su.unlearn.run_jobs(model, forget, retrain_job)
            print(f"{set_name}: full retrain {full_time:.1f} s", flush=True)
        score_cache = su.attack.ScoreCache(adata, n_draws=8, seed=0)
        for run in runs:
            kwargs = {**run["kwargs"], "on_degradation": params.on_degradation}
            if "variant" in run:
                kwargs = VARIANTS[run["variant"]](su, adata, kwargs)
            original = originals.get(run.get("rewind_epoch"), model)
            jobs = [
                su.unlearn.UnlearningJob(run["method"], seed, kwargs, quiet_degradation=True)
                for seed in run.get("seeds", range(params.seeds))
            ]
            for job, (new, wall) in zip(jobs, su.unlearn.run_jobs(original, forget, jobs)):
                rep = su.attack.equivalence_test(new, refs, forget, adata=adata, cache=score_cache)
                if recorder is not None:
                    recorder(rep, new, refs, score_cache)
                rows.append(
                    {"forget set": set_name, "method": run["label"], "seed": job.seed}
                    | s.verdict_columns(rep, wall, full_time, new)
                )
                print(
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()},
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    if timed_here and not params.time_each_set:
        [(_, again)] = su.unlearn.run_jobs(model, sets[names[0]], retrain_job)
        print(f"retrain: {full_time:.1f} s at the start, {again:.1f} s at the end", flush=True)
        for row in rows:
            row["time / retrain"] *= full_time / ((full_time + again) / 2)
        full_time = (full_time + again) / 2
    table = pd.DataFrame(rows)
    print(f"\nfull retrain: {full_time:.1f} s; total {time.perf_counter() - t0:.0f} s")
    print(f"mean z range: {np.nanmin(table['mean z']):+.2f} … {np.nanmax(table['mean z']):+.2f}")
    tables = {"summary": summary(table), "runs": table}
    if recorder is not None:
        tables["calibration: spread of the forget cells' ELBO across seeds vs the retrains'"] = (
            spread_table(table, recorder)
        )
    return tables
