"""Fast exact retraining on pbmc68k: per-cell equivalence, utility and cost of each schedule.

Each ``fast_retrain`` configuration (its full budget, ``match_fit=False``, except the default)
is run with seeds 0-2 on the forget sets of
``equivalence_power.py`` (whose cached original and retrains it reuses: run that script first,
or let this one train them) and judged by the per-cell equivalence test against 5 default-recipe
retrains (seeds 0-4).  Cost = wall time of ``model.unlearn(method="fast_retrain")`` over the wall
time of ``model.unlearn(method="retrain")`` (the recorded 200-epoch recipe), both through the
package's Lightning machinery and measured in this process.

    python benchmarks/fast_retrain.py --threads 1 --cache .equivalence_refs
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from equivalence_power import (
    FULL_BUDGET,
    forget_sets,
    markdown,
    reference_folder,
    setting,
    verdict_columns,
)

CONFIGS = {
    "default (fit-matched on the weights averaged over 3 epochs, at most 30 epochs)": {
        "match_fit": True,
        "average_epochs": 3,
    },
    "fit-matched, not averaged, at most 0.15 x E = 30 epochs, lr 1.2e-2, constant": {
        "match_fit": True
    },
    "0.15 x E = 30 epochs (full budget)": {},
    "0.1 x E = 20 epochs": {"epoch_fraction": 0.1},
    "20 epochs, cosine decay": {"epoch_fraction": 0.1, "schedule": "cosine"},
    "15 epochs, lr 1.5e-2": {"max_epochs": 15, "lr": 1.5e-2},
    "12 epochs, lr 2e-2": {"max_epochs": 12, "lr": 2e-2},
    "batch 256, lr 2e-2": {"batch_size": 256, "lr": 2e-2},
}
SETS = ("CD56+ NK (22)", "CD14+ Monocyte (90)", "random (50)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=".equivalence_refs", help="folder of the retrains")
    parser.add_argument("--configs", nargs="*", default=None, help="subset of CONFIGS names")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    su, adata, model = setting(args.cache, args.threads)
    configs = {k: v for k, v in CONFIGS.items() if not args.configs or k in args.configs}
    rows = []
    for set_name, forget in forget_sets(su, adata).items():
        if set_name not in SETS:
            continue
        folder = reference_folder(args.cache, set_name)
        refs = su.attack.train_references(model, forget, range(5), folder=folder)
        score_cache = su.attack.ScoreCache(adata, n_draws=8, seed=0)
        [(_, full_time)] = su.unlearn.run_jobs(
            model, forget, [su.unlearn.UnlearningJob("retrain", 100)]
        )
        for name, kwargs in configs.items():
            # a fixed budget and no weight averaging unless the config says (the schedule study
            # predates both)
            kwargs = {**FULL_BUDGET, **kwargs}
            jobs = [su.unlearn.UnlearningJob("fast_retrain", s, kwargs) for s in range(3)]
            for job, (new, wall) in zip(jobs, su.unlearn.run_jobs(model, forget, jobs)):
                rep = su.attack.equivalence_test(new, refs, forget, adata=adata, cache=score_cache)
                rows.append(
                    {"forget set": set_name, "schedule": name, "seed": job.seed}
                    | verdict_columns(rep, wall, full_time)
                )
        print(f"{set_name}: done (full retrain {full_time:.1f} s)", flush=True)
    table = pd.DataFrame(rows)
    out = []
    for (fs, name), g in table.groupby(["forget set", "schedule"], sort=False):
        counts = g["decision"].value_counts()
        out.append(
            {
                "forget set": fs,
                "schedule": name,
                "time / retrain": f"{g['time / retrain'].mean():.3f}",
                "mean z (seeds 0-2)": " / ".join(f"{z:+.2f}" for z in g["mean z"]),
                "decision": ", ".join(f"{d} {n}/{len(g)}" for d, n in counts.items()),
                "same-type ELBO ok": f"{int(g['same-type ok'].sum())}/{len(g)}",
                "other-type held-out ELBO": " / ".join(
                    f"{v:+.2f}%" for v in g["other types vs retrains (%)"]
                ),
                "passed": f"{int(g['passed'].sum())}/{len(g)}",
            }
        )
    print()
    print(markdown(pd.DataFrame(out)))
    print(
        f"\nmean z range of any method: {np.nanmin(table['mean z']):+.2f} … "
        f"{np.nanmax(table['mean z']):+.2f}"
    )


if __name__ == "__main__":
    main()
