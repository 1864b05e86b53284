"""Per-cell retrain-equivalence verdict of the critic methods on pbmc68k (CD56+ NK, 3 seeds).

The setting of ``equivalence_power.py`` / ``fast_retrain.py`` (whose cached original and
retrains it reuses: run one of them first, or let this one train them): pbmc68k, 30% held out,
scVI ``n_latent=10`` trained 200 epochs on the members; forget = the 22 "CD56+ NK" members;
each run (seeds 0-2) is judged by :func:`scvi_unlearn.attack.equivalence_test` against 5
default-recipe retrains (seeds 0-4).  ``extragradient`` and ``mi_regularized`` run with their
defaults (non-members = the retain validation cells) and with ``nonmembers=`` the held-out
cells (which include the 9 held-out NK cells of the verdict's same-type utility check: in those
rows that check is not independent of the method).  Cost = wall time over the wall time of
``method="retrain"`` (the recorded 200-epoch recipe), measured in this process.

    python benchmarks/critic_verdict.py --threads 1 --cache /tmp/eqrefs
    python benchmarks/critic_verdict.py --threads 1 --cache /tmp/eqrefs --methods extragradient
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from equivalence_power import forget_sets, markdown, setting, verdict_columns

SET = "CD56+ NK (22)"
METHODS = ("extragradient", "mi_regularized")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=".equivalence_refs", help="folder of the retrains")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--nonmembers", nargs="*", default=["validation", "heldout"])
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    args = parser.parse_args()

    su, adata, model = setting(args.cache, args.threads)
    forget = forget_sets(su, adata)[SET]
    heldout = adata[(adata.obs[su.data.SPLIT_KEY] == su.data.HOLDOUT).to_numpy()].copy()
    folder = Path(args.cache) / "CD56p_NK"
    refs = su.attack.train_references(model, forget, range(5), folder=folder)
    score_cache = su.attack.ScoreCache(adata, n_draws=8, seed=0)
    [(_, full_time)] = su.unlearn.run_jobs(
        model, forget, [su.unlearn.UnlearningJob("retrain", 100)]
    )
    sources = {"validation": "validation", "heldout": heldout}
    rows = []
    for method in args.methods:
        for source in args.nonmembers:
            kwargs = {"nonmembers": sources[source]}
            jobs = [su.unlearn.UnlearningJob(method, s, kwargs) for s in range(args.seeds)]
            for job, (new, wall) in zip(jobs, su.unlearn.run_jobs(model, forget, jobs)):
                rep = su.attack.equivalence_test(new, refs, forget, adata=adata, cache=score_cache)
                rows.append(
                    {"method": f"{method} (nonmembers={source})", "seed": job.seed}
                    | verdict_columns(rep, wall, full_time, new)
                )
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    out = []
    for name, g in table.groupby("method", sort=False):
        counts = g["decision"].value_counts()
        out.append(
            {
                "method": name,
                "time / retrain": f"{g['time / retrain'].mean():.3f}",
                "mean z (seeds 0-2)": " / ".join(f"{z:+.2f}" for z in g["mean z"]),
                "decision": ", ".join(f"{d} {n}/{len(g)}" for d, n in counts.items()),
                "membership contrast": " / ".join(f"{z:+.2f}" for z in g["membership contrast"]),
                "same-type ELBO ok": f"{int(g['same-type ok'].sum())}/{len(g)}",
                "other-type held-out ELBO vs retrains": " / ".join(
                    f"{v:+.2f}%" for v in g["other types vs retrains (%)"]
                ),
                "passed": f"{int(g['passed'].sum())}/{len(g)}",
            }
        )
    print(f"\nfull retrain: {full_time:.1f} s\n")
    print(markdown(pd.DataFrame(out)))


if __name__ == "__main__":
    main()
