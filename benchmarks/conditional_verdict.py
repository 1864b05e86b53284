"""Conditional scVI on pbmc68k: the offsets' Fisher and conditional_reset's per-cell verdict.

The setting of ``equivalence_power.py`` / ``fast_retrain.py`` (pbmc68k, 30% held out, seed 0;
forget = the 22 "CD56+ NK" members), with a :class:`scvi_unlearn.ConditionalSCVI`
(``labels_key="cell_type"``, ``n_latent=10``, 200 epochs, seed 0) as the original.  Measures

1. where the forget cells' Fisher information lives (``fisher_overlap``: the share of the forget
   Fisher mass in the NK offsets vs the shared parameters) and that the retain Fisher on the NK
   offsets is exactly 0; that the NK offsets of every reference retrain are exactly 0;
2. the per-cell retrain-equivalence verdict (:func:`scvi_unlearn.attack.equivalence_test`
   against 5 default-recipe retrains of the ConditionalSCVI, seeds 0-4) and the held-out ELBO of
   ``conditional_reset`` with ``max_epochs`` 0 (the reset alone) and with retain fine-tunes,
   of ``finetune`` (defaults) and of ``fast_retrain`` with its full 30 epochs
   (``match_fit=False``, the default when this was measured; seeds 0-2), and of the original.

Cost = wall time over that of ``method="retrain"`` (the recorded 200-epoch recipe), measured in
this process.

    python benchmarks/conditional_verdict.py --threads 1 --cache .conditional_refs
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from equivalence_power import FULL_BUDGET, forget_sets, markdown, verdict_columns

SET = "CD56+ NK (22)"
LABEL = "CD56+ NK"
#: (row name, method, kwargs, seeds)
CANDIDATES = (
    ("conditional_reset, max_epochs=0 (reset only)", "conditional_reset", {}, (0,)),
    ("conditional_reset, max_epochs=5", "conditional_reset", {"max_epochs": 5}, (0, 1, 2)),
    ("conditional_reset, max_epochs=20", "conditional_reset", {"max_epochs": 20}, (0, 1, 2)),
    ("conditional_reset, max_epochs=50", "conditional_reset", {"max_epochs": 50}, (0, 1, 2)),
    ("finetune (default, 20 epochs)", "finetune", {}, (0, 1, 2)),
    (
        "fast_retrain (30 epochs, the full budget; the default before fit matching)",
        "fast_retrain",
        FULL_BUDGET,
        (0, 1, 2),
    ),
)


def conditional_original(su, adata, cache: Path, max_epochs: int = 200):
    """The ConditionalSCVI original: loaded from ``cache/original`` or trained and saved."""
    from scvi_unlearn._seeding import isolated_seed

    path = cache / "original"
    if path.exists():
        return su.ConditionalSCVI.load(str(path))
    members = adata[(adata.obs[su.data.SPLIT_KEY] == su.data.TRAIN).to_numpy()].copy()
    su.ConditionalSCVI.setup_anndata(members, layer="counts", labels_key="cell_type")
    with isolated_seed(0):
        model = su.ConditionalSCVI(members, n_latent=10)
        model.train(max_epochs=max_epochs, enable_progress_bar=False)
    model.save(str(path), save_anndata=True)
    return model


def verdict_row(su, name, seed, new, wall, full_time, refs, forget, adata, cache, ref_forget):
    rep = su.attack.equivalence_test(new, refs, forget, adata=adata, cache=cache)
    forget_elbo = cache.scores([new], "forget", np.asarray(forget, dtype=str), "elbo")[0].mean()
    return {
        "candidate": name,
        "seed": seed,
        "forget ELBO": forget_elbo,
        "forget ELBO vs retrains": forget_elbo - ref_forget,
        "same-type held-out ELBO": rep.utility["same_type_elbo"],
    } | verdict_columns(rep, wall, full_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=".conditional_refs", help="folder of the models")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--references", type=int, default=5, help="reference retrains")
    args = parser.parse_args()

    import scvi
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("scvi", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import scvi_unlearn as su
    from scvi_unlearn.model._conditional_module import LABEL_OFFSET_PARAMETER

    scvi.settings.seed = 0
    t0 = time.perf_counter()
    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    cache_dir = Path(args.cache)
    model = conditional_original(su, adata, cache_dir)
    forget = forget_sets(su, adata)[SET]
    code = int(np.flatnonzero(model.label_categories == LABEL)[0])

    # 1. Fisher: where the forget cells' information lives
    ov = model.fisher_overlap(forget, control=None)
    info = ov.label_offsets
    print("\nFisher of the original (forget = CD56+ NK members, retain = the other members):")
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
    nk = model.module.label_offsets[code].detach()
    print(f"original NK offsets: norm {float(nk.norm()):.3f}, max |o| {float(nk.abs().max()):.3f}")
    f_nk = ov.forget_fisher.values[LABEL_OFFSET_PARAMETER][:, code]
    print(f"forget Fisher on the NK offsets: mass {float(f_nk.sum()):.4g}")

    # 2. references and the per-cell verdict
    refs = su.attack.train_references(
        model, forget, range(args.references), folder=cache_dir / "CD56p_NK"
    )
    ref_nk = [float(r.module.label_offsets[code].abs().max()) for r in refs]
    print(f"max |NK offset| of the {len(refs)} retrains: {ref_nk}")
    score_cache = su.attack.ScoreCache(adata, n_draws=8, seed=0)
    ref_forget = float(
        score_cache.scores(refs, "forget", np.asarray(forget, dtype=str), "elbo").mean()
    )
    [(_, full_time)] = su.unlearn.run_jobs(
        model, forget, [su.unlearn.UnlearningJob("retrain", 100)]
    )
    print(f"full retrain: {full_time:.1f} s; retrains' mean forget ELBO {ref_forget:.2f}")
    keep = []  # the score cache is keyed by model identity: keep every candidate alive
    rows = [
        verdict_row(su, "original (no unlearning)", "-", model, 0.0, full_time, refs, forget,
                    adata, score_cache, ref_forget)
    ]  # fmt: skip
    for name, method, kwargs, seeds in CANDIDATES:
        jobs = [su.unlearn.UnlearningJob(method, s, kwargs) for s in seeds]
        for job, (new, wall) in zip(jobs, su.unlearn.run_jobs(model, forget, jobs)):
            keep.append(new)
            rows.append(
                verdict_row(su, name, job.seed, new, wall, full_time, refs, forget, adata,
                            score_cache, ref_forget)
            )  # fmt: skip
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
    print()
    print(markdown(pd.DataFrame(out)))
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
