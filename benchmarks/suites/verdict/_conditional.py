"""The ``conditional`` experiment: a :class:`scvi_unlearn.ConditionalSCVI` original on pbmc68k,
where the forget cells' Fisher information lives, and the per-cell verdict of its runs.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment, markdown
from benchmarks.suites import _settings as s
from benchmarks.suites.verdict._runs import expand_runs


@dataclasses.dataclass
class ConditionalParams(Common):
    """Parameters of the ``conditional`` experiment.

    Attributes
    ----------
    references
        Default-recipe retrains of the ConditionalSCVI (seeds ``0 .. references - 1``).
    original_epochs
        Training epochs of the ConditionalSCVI original (seed 0; cached in
        ``cache/conditional``).
    forget_set
        The forget set (a name of :func:`_settings.forget_sets`) ...
    label
        ... and its cell type, whose label offsets are inspected.
    seeds
        Seeds of each candidate, ``0 .. seeds - 1`` (unless the run gives its ``seeds``).
    runs
        The candidates: runs as in ``grid`` (``label``, ``method``, ``kwargs``, ``none``,
        ``seeds``), each judged per seed.
    """

    seeds: int = 3
    references: int = 5
    original_epochs: int = 200
    forget_set: str = "CD56+ NK (22)"
    label: str = "CD56+ NK"
    runs: list[dict] = dataclasses.field(default_factory=list)


def conditional_original(su, adata, folder: Path, max_epochs: int):
    """The ConditionalSCVI original (``labels_key="cell_type"``, ``n_latent=10``, seed 0):
    loaded from ``folder/original`` or trained and saved there."""
    from scvi_unlearn._seeding import isolated_seed

    path = folder / "original"
    if path.exists():
        return su.ConditionalSCVI.load(str(path))
    members = adata[(adata.obs[su.data.SPLIT_KEY] == su.data.TRAIN).to_numpy()].copy()
    su.ConditionalSCVI.setup_anndata(members, layer="counts", labels_key="cell_type")
    with isolated_seed(0):
        model = su.ConditionalSCVI(members, n_latent=10)
        model.train(max_epochs=max_epochs, enable_progress_bar=False)
    model.save(str(path), save_anndata=True)
    return model


@experiment("conditional", ConditionalParams)
def conditional(params: ConditionalParams) -> dict[str, pd.DataFrame]:
    """Conditional scVI on pbmc68k: the offsets' Fisher and its candidates' per-cell verdict."""
    import scvi

    import scvi_unlearn as su
    from scvi_unlearn.model._conditional_module import LABEL_OFFSET_PARAMETER

    scvi.settings.seed = 0
    t0 = time.perf_counter()
    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    folder = Path(params.cache) / "conditional"
    model = conditional_original(su, adata, folder, params.original_epochs)
    forget = s.forget_sets(su, adata)[params.forget_set]
    code = int(np.flatnonzero(model.label_categories == params.label)[0])

    # 1. Fisher: where the forget cells' information lives
    ov = model.fisher_overlap(forget, control=None)
    info = ov.label_offsets
    print(f"\nFisher of the original (forget = {params.forget_set}, retain = the other members):")
    print({k: v for k, v in info.items() if k not in ("parameter", "codes")})
    cats = ov.by_category.copy()
    f_mass = {
        c: float(sum(ov.forget_fisher.values[t].sum() for t in g.index))
        for c, g in ov.by_tensor.groupby("category")
    }
    total = sum(f_mass.values())
    cats["forget Fisher share"] = [f_mass[c] / total for c in cats.index]
    cats = cats.reset_index()
    cats["cosine"] = cats["cosine"].map(lambda v: f"{v:.3f}")
    cats["forget Fisher share"] = cats["forget Fisher share"].map(lambda v: f"{v:.4f}")
    print(markdown(cats))
    offsets = model.module.label_offsets[code].detach()
    print(
        f"original {params.label} offsets: norm {float(offsets.norm()):.3f}, "
        f"max |o| {float(offsets.abs().max()):.3f}"
    )
    f_label = ov.forget_fisher.values[LABEL_OFFSET_PARAMETER][:, code]
    print(f"forget Fisher on the {params.label} offsets: mass {float(f_label.sum()):.4g}")

    # 2. references and the per-cell verdict
    refs = su.attack.train_references(
        model,
        forget,
        range(params.references),
        folder=s.reference_folder(folder, params.forget_set),
    )
    ref_offsets = [float(r.module.label_offsets[code].abs().max()) for r in refs]
    print(f"max |{params.label} offset| of the {len(refs)} retrains: {ref_offsets}")
    score_cache = su.attack.ScoreCache(adata, n_draws=8, seed=0)
    names = np.asarray(forget, dtype=str)
    ref_forget = float(score_cache.scores(refs, "forget", names, "elbo").mean())
    [(_, full_time)] = su.unlearn.run_jobs(
        model, forget, [su.unlearn.UnlearningJob("retrain", 100)]
    )
    print(f"full retrain: {full_time:.1f} s; retrains' mean forget ELBO {ref_forget:.2f}")

    def verdict_row(name, seed, new, wall) -> dict:
        rep = su.attack.equivalence_test(new, refs, forget, adata=adata, cache=score_cache)
        forget_elbo = score_cache.scores([new], "forget", names, "elbo")[0].mean()
        return {
            "candidate": name,
            "seed": seed,
            "forget ELBO": forget_elbo,
            "forget ELBO vs retrains": forget_elbo - ref_forget,
            "same-type held-out ELBO": rep.utility["same_type_elbo"],
        } | s.verdict_columns(rep, wall, full_time)

    keep = []  # the score cache is keyed by model identity: keep every candidate alive
    rows = [verdict_row("original (no unlearning)", "-", model, 0.0)]
    for run in expand_runs(params.runs):
        jobs = [
            su.unlearn.UnlearningJob(run["method"], seed, run["kwargs"])
            for seed in run.get("seeds", range(params.seeds))
        ]
        for job, (new, wall) in zip(jobs, su.unlearn.run_jobs(model, forget, jobs)):
            keep.append(new)
            rows.append(verdict_row(run["label"], job.seed, new, wall))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    out = []
    for name, g in table.groupby("candidate", sort=False):
        counts = g["decision"].value_counts()
        out.append(
            {
                "candidate": name,
                "time / retrain": f"{g['time / retrain'].mean():.3f}",
                "mean z": " / ".join(f"{z:+.2f}" for z in g["mean z"]),
                "decision": ", ".join(f"{d} {n}/{len(g)}" for d, n in counts.items()),
                "membership contrast": " / ".join(f"{z:+.2f}" for z in g["membership contrast"]),
                "forget ELBO - retrains'": " / ".join(
                    f"{v:+.1f}" for v in g["forget ELBO vs retrains"]
                ),
                "same-type ELBO ok": f"{int(g['same-type ok'].sum())}/{len(g)}",
                "other-type held-out ELBO vs retrains": " / ".join(
                    f"{v:+.2f}%" for v in g["other types vs retrains (%)"]
                ),
                "passed": f"{int(g['passed'].sum())}/{len(g)}",
            }
        )
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")
    return {"Fisher by category": cats, "verdict": pd.DataFrame(out), "runs": table}
