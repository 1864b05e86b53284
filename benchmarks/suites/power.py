"""False-positive rate and power of the per-cell equivalence test on pbmc68k.

For each forget set (:func:`_settings.forget_sets`), ``retrains`` exact retrains (seeds
``0 .. retrains - 1``) of the original (:func:`_settings.setting`, ``max_epochs`` epochs) are
trained once (cached per forget set, where the verdict suite caches its references).  Null
tests: a retrain that is *not* among the K references is tested against K references drawn from
the others (``draws`` reference sets per held-out retrain); a rejection ("remembers" /
"over-forgets") is a false positive.  Detection:
the original model and every approximate method of :data:`METHODS` (default hyper-parameters,
seed 0) against ``draws`` random K-subsets.  Decisions are derived from each test's mean z,
interval and p-value for several margins (:data:`MARGINS`).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._settings import forget_sets, pbmc68k_cache, reference_folder, setting

#: equivalence margins the decisions are derived for
MARGINS = (1.0, 1.5, 2.0, 2.5)
#: the approximate methods tested as candidates (with their defaults, seed 0)
METHODS = ("finetune", "gradient_ascent", "ssd", "scrub", "contrastive", "fisher")


def decision(row, margin: float, alpha: float = 0.05) -> str:
    """The decision of one test at ``margin``: equivalent when its interval is inside
    ``[-margin, margin]``, else remembers / over-forgets when ``p < alpha``, else no power."""
    if -margin <= row["low"] and row["high"] <= margin:
        return "equivalent"
    if row["p"] < alpha:
        return "remembers" if row["mean_z"] > 0 else "over-forgets"
    return "no power"


@dataclasses.dataclass
class PowerParams(Common):
    """Parameters of the ``power`` experiment.

    Attributes
    ----------
    retrains
        Exact retrains per forget set.
    ks
        Numbers of references K.
    draws
        Reference sets per test.
    max_epochs
        The original's training epochs.
    sets
        Forget-set names (empty: all of :func:`_settings.forget_sets`).
    """

    retrains: int = 10
    ks: list[int] = dataclasses.field(default_factory=lambda: [3, 5, 8])
    draws: int = 3
    max_epochs: int = 200
    sets: list[str] = dataclasses.field(default_factory=list)


@experiment("power", PowerParams)
def power(params: PowerParams) -> dict[str, pd.DataFrame]:
    """False positives of retrains against other retrains, and detection of the candidates."""
    t0 = time.perf_counter()
    cache = pbmc68k_cache(params.cache, params.max_epochs)
    su, adata, model = setting(str(cache), params.threads, params.max_epochs)
    rng = np.random.default_rng(0)
    rows = []
    for set_name, forget in forget_sets(su, adata).items():
        if params.sets and set_name not in params.sets:
            continue
        folder = reference_folder(cache, set_name)
        retrains = su.attack.train_references(model, forget, range(params.retrains), folder=folder)
        candidates = {"original": model}
        runs = su.unlearn.run_jobs(
            model, forget, [su.unlearn.UnlearningJob(m, 0) for m in METHODS]
        )
        candidates.update({m: new for m, (new, _) in zip(METHODS, runs)})
        score_cache = su.attack.ScoreCache(adata, n_draws=8, seed=0)

        def _test(
            candidate, refs, kind, name, k, set_name=set_name, forget=forget, sc=score_cache
        ):
            rep = su.attack.equivalence_test(candidate, refs, forget, adata=adata, cache=sc)
            rows.append(
                {
                    "forget_set": set_name,
                    "K": k,
                    "kind": kind,
                    "model": name,
                    "mean_z": rep.statistic,
                    "low": rep.interval[0],
                    "high": rep.interval[1],
                    "p": rep.p_value,
                    "membership": rep.membership_test.statistic,
                    "same_type_ok": rep.utility.get("same_type_ok"),
                    "other_types_ok": rep.utility.get("other_types_ok"),
                }
            )

        for k in params.ks:
            if k + 1 > len(retrains):
                continue
            for c, cand in enumerate(retrains):
                others = [r for j, r in enumerate(retrains) if j != c]
                for _ in range(params.draws):
                    idx = rng.choice(len(others), k, replace=False)
                    _test(cand, [others[i] for i in idx], "null", f"retrain {c}", k)
            for name, cand in candidates.items():
                for _ in range(params.draws):
                    idx = rng.choice(len(retrains), k, replace=False)
                    _test(cand, [retrains[i] for i in idx], "candidate", name, k)
        print(f"{set_name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)

    table = pd.DataFrame(rows)
    for margin in MARGINS:
        table[f"decision_{margin:g}"] = table.apply(decision, axis=1, margin=margin)
    null = table[table["kind"] == "null"]
    out = []
    for (fs, k), g in null.groupby(["forget_set", "K"], sort=False):
        row = {"forget set": fs, "K": k, "tests": len(g)}
        row["false positives"] = f"{(g['p'] < 0.05).mean():.1%}"
        row["mean z range"] = f"{g['mean_z'].min():+.2f} … {g['mean_z'].max():+.2f}"
        for margin in MARGINS:
            row[f"equivalent @{margin:g}"] = (
                f"{(g[f'decision_{margin:g}'] == 'equivalent').mean():.0%}"
            )
        out.append(row)
    nulls = pd.DataFrame(out)
    cand = table[table["kind"] == "candidate"]
    out = []
    for (fs, name, k), g in cand.groupby(["forget_set", "model", "K"], sort=False):
        row = {"forget set": fs, "model": name, "K": k}
        row["mean z"] = f"{g['mean_z'].mean():+.2f}"
        row["membership contrast"] = f"{g['membership'].mean():+.2f}"
        for margin in (1.5, 2.0):
            counts = g[f"decision_{margin:g}"].value_counts()
            row[f"@{margin:g}"] = ", ".join(f"{d} {n}/{len(g)}" for d, n in counts.items())
        row["same-type ELBO ok"] = f"{g['same_type_ok'].mean():.0%}"
        out.append(row)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return {
        "Null tests: held-out retrains against K others": nulls,
        "Candidates (seed-0 runs) against K references: decision at margin 1.5 / 2.0": (
            pd.DataFrame(out)
        ),
        "every test": table,
    }
