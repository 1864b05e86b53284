"""Shared driver of the per-cell verdict grids (``reinit_verdict.py``, ``rewind_verdict.py``):
run each (method, hyper-parameters) on each forget set and seed, judge every run with
:func:`scvi_unlearn.attack.equivalence_test` against 5 cached default-recipe retrains, and
print one row per run and a summary table per (set, method).

Not a script: the grid scripts add their own arguments to :func:`grid_parser` and pass their
runs to :func:`run_grid`.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
from equivalence_power import forget_sets, markdown, reference_folder, verdict_columns

SETS = ("CD56+ NK (22)", "CD14+ Monocyte (90)")


def grid_parser(description: str, baselines) -> argparse.ArgumentParser:
    """The arguments every grid takes: cache, threads, seeds, sets, baselines, timing, CSV."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cache", default=".equivalence_refs", help="folder of the retrains")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--baselines", nargs="*", default=list(baselines))
    parser.add_argument("--retrain-time", type=float, default=None, help="seconds (skip timing)")
    parser.add_argument("--out", default=None, help="CSV of every run")
    return parser


def run_grid(su, adata, model, runs, args, t0: float, sets=None, on_report=None) -> pd.DataFrame:
    """Judge every run; ``runs``: ``(label, original, method, kwargs)`` tuples, followed by
    ``args.baselines`` (each method with its defaults on ``model``), each run on every set of
    ``args.sets`` with seeds ``0 .. args.seeds - 1`` and ``on_degradation="warn"``.
    ``sets``: forget sets by name (default: pbmc68k's, :func:`equivalence_power.forget_sets`).
    ``on_report(report, new, references, score_cache)``: called after each run's test, in the
    order of the returned rows.

    Cost = wall time over that of ``method="retrain"`` on the first set (``args.retrain_time``,
    or the mean of two timings in this process, at the start and at the end: the machine is
    shared).  Prints each run as it ends and the summary table; writes ``args.out`` (CSV of
    every run) when given; returns the per-run table.
    """
    sets = forget_sets(su, adata) if sets is None else sets
    runs = [*runs, *((m, model, m, {}) for m in args.baselines)]
    retrain_job = [su.unlearn.UnlearningJob("retrain", 100)]
    full_time = args.retrain_time
    if full_time is None:
        [(_, full_time)] = su.unlearn.run_jobs(model, sets[args.sets[0]], retrain_job)
    rows = []
    for set_name in args.sets:
        forget = sets[set_name]
        folder = reference_folder(args.cache, set_name)
        refs = su.attack.train_references(model, forget, range(5), folder=folder)
        score_cache = su.attack.ScoreCache(adata, n_draws=8, seed=0)
        for label, original, method, kwargs in runs:
            jobs = [
                su.unlearn.UnlearningJob(
                    method, s, {**kwargs, "on_degradation": "warn"}, quiet_degradation=True
                )
                for s in range(args.seeds)
            ]
            for job, (new, wall) in zip(jobs, su.unlearn.run_jobs(original, forget, jobs)):
                rep = su.attack.equivalence_test(new, refs, forget, adata=adata, cache=score_cache)
                if on_report is not None:
                    on_report(rep, new, refs, score_cache)
                rows.append(
                    {"forget set": set_name, "method": label, "seed": job.seed}
                    | verdict_columns(rep, wall, full_time, new)
                )
                print(
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()},
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    if args.retrain_time is None:
        [(_, again)] = su.unlearn.run_jobs(model, sets[args.sets[0]], retrain_job)
        print(f"retrain: {full_time:.1f} s at the start, {again:.1f} s at the end", flush=True)
        for row in rows:
            row["time / retrain"] *= full_time / ((full_time + again) / 2)
        full_time = (full_time + again) / 2
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    print(f"\nfull retrain: {full_time:.1f} s; total {time.perf_counter() - t0:.0f} s\n")
    print(markdown(summary(table)))
    return table


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (forget set, method): mean cost, per-seed mean z and utility, counts."""
    out = []
    for (set_name, name), g in table.groupby(["forget set", "method"], sort=False):
        counts = g["decision"].value_counts()
        out.append(
            {
                "forget set": set_name,
                "method": name,
                "time / retrain": f"{g['time / retrain'].mean():.3f}",
                "mean z (seeds)": " / ".join(f"{z:+.2f}" for z in g["mean z"]),
                "decision": ", ".join(f"{d} {n}/{len(g)}" for d, n in counts.items()),
                "same-type ELBO ok": f"{int(g['same-type ok'].sum())}/{len(g)}",
                "other-type held-out ELBO vs retrains": " / ".join(
                    f"{v:+.2f}%" for v in g["other types vs retrains (%)"]
                ),
                "retain drop": " / ".join(f"{v:+.2f}%" for v in g["retain check drop (%)"]),
                "passed": f"{int(g['passed'].sum())}/{len(g)}",
            }
        )
    return pd.DataFrame(out)
