"""Where the default fast_retrain stops, and what it costs, on large simulated data.

``fast_retrain_scaling.py`` gives ``fast_retrain``'s worst case (its epoch cap) from per-epoch
times; by default (``match_fit``) it stops as soon as its retain validation ELBO reaches the
original's, and how soon depends on the data.  This script measures that stop.  For ``--cells``
simulated cells x ``--genes`` genes it builds the setting of ``scale_verdict.py``
(:func:`scale_verdict.simulated_setting`: calibrated on pbmc68k, stratified 70/30 member /
held-out split, a default ``su.SCVI`` trained on the members with scvi-tools' recipe and epoch
heuristic, seed 0; cached in ``--cache``, its training time recorded there), then runs
``model.unlearn(forget)`` with the defaults (``method="fast_retrain"``) for seeds
``0 .. --seeds - 1`` on the "CD56+ NK" members and 50 random members, through the package's
timed runner (:func:`scvi_unlearn.unlearn.run_jobs`).  Printed per run: epochs trained (and
the cap), wall time, wall time over the original's training time (a default-recipe retrain of
the retain cells replays the same recipe on the members less the forget set: 50 cells, or the
whole NK type, 4.5% of the members), and the retain check's drop.  No retrains are run, so
there is no per-cell verdict: ``scale_verdict.py`` gives it where the retrains are affordable.

    python benchmarks/fit_match_scaling.py --threads 1 --cells 100000 --cache /tmp/scale_refs_100k
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from equivalence_power import markdown
from scale_verdict import ORIGINAL_TIME, simulated_setting
from scaling import default_budget, quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--cache", required=True, help="folder of the original")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--original-time",
        type=float,
        default=None,
        help="seconds (default: recorded in the cache when the original was trained there)",
    )
    args = parser.parse_args()
    quiet(args.threads)
    import pandas as pd

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    su, adata, model = simulated_setting(args.cells, args.genes, cache)
    seconds = args.original_time
    if seconds is None:
        if not (cache / ORIGINAL_TIME).exists():
            raise SystemExit(f"{cache / ORIGINAL_TIME} not found: pass --original-time")
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
    print()
    print(markdown(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
