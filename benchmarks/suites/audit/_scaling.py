"""The ``scaling`` experiment: wall time of the audit and of the Fisher analysis on simulated
training cells.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._settings import simulated_members

# ---------------------------------------------------------------------------- scaling


@dataclasses.dataclass
class ScalingParams(Common):
    """Parameters of the ``scaling`` experiment.

    Simulates ``members / 0.7`` cells (``su.data.simulate``, calibrated on pbmc68k; seed 0),
    splits them into members (trained on) and held-out non-members, trains a default
    ``su.SCVI`` on the members for ``epochs`` epochs, forgets ``forget`` members of the rarest
    type with ``ssd`` (any unlearned model would do: the audit's cost does not depend on it)
    and times, each on its own:

    * ``new.membership_attack(forget, adata=adata, attack="threshold")`` (matching, the attack
      features of the forget cells and of their matched non-members: 8 posterior draws per
      cell);
    * ``new.membership_attack(forget, adata=adata)`` (default attacker: an MLP, 5-fold
      out-of-fold scores, bootstrap confidence intervals);
    * the per-cell equivalence test ``su.attack.equivalence_test(new, references, forget)``
      against ``references`` references (the audit's scoring only: the references are
      retrains, trained beforehand with the original's recipe and not timed);
    * ``model.fisher_overlap(forget cells)`` (per-sample Fisher of forget and retain cells plus
      the classifier control) and the per-sample diagonal Fisher of all members.

    The goal (issue 13): features + attacks + equivalence test under 60 s on 2 cores.

    Attributes
    ----------
    members
        Training members (the simulated cells are ``members / 0.7``).
    genes
        Genes simulated.
    forget
        Forget cells (members of the rarest type).
    epochs
        Training epochs of the original.
    references
        Reference retrains of the equivalence test.
    """

    members: int = 30_000
    genes: int = 2000
    forget: int = 200
    epochs: int = 2
    references: int = 5


@experiment("scaling", ScalingParams)
def scaling(args: ScalingParams) -> pd.DataFrame:
    """Wall time of the audit and the Fisher analysis on simulated training cells."""
    import scvi_unlearn as su

    n_total = int(round(args.members / 0.7))
    adata, train, model = simulated_members(n_total, args.genes, args.epochs)
    rare = train.obs["cell_type"].value_counts().index[-1]
    members = su.data.forget_by_label(adata, rare)
    forget = list(
        np.random.default_rng(0).choice(members, min(args.forget, members.size), replace=False)
    )
    print(f"{train.n_obs} members, {adata.n_obs - train.n_obs} non-members, forget {len(forget)}")
    references = su.attack.train_references(
        model, forget, seeds=range(args.references), enable_progress_bar=False
    )
    new = model.unlearn(forget, method="ssd")

    results: dict[str, float] = {}

    def timed(label: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        results[label] = time.perf_counter() - t0
        print(f"{label}: {results[label]:.1f} s", flush=True)

    timed(
        "membership_attack (threshold): matching + features + attack",
        lambda: new.membership_attack(forget, adata=adata, attack="threshold"),
    )
    timed("membership_attack (mlp)", lambda: new.membership_attack(forget, adata=adata))
    timed(
        f"equivalence test ({args.references} references)",
        lambda: su.attack.equivalence_test(new, references, forget, adata=adata),
    )
    audit = sum(results.values())
    print(f"audit total: {audit:.1f} s (goal < 60 s)")
    timed(
        "fisher_overlap (forget vs retain, classifier control)",
        lambda: model.fisher_overlap(train[forget]),
    )
    timed("per-sample diagonal Fisher, all members", lambda: su.fisher.diagonal_fisher(model))
    rows = [{"step": label, "seconds": f"{s:.1f}"} for label, s in results.items()]
    rows.append({"step": "**audit (the three above)**", "seconds": f"**{audit:.1f}**"})
    return pd.DataFrame(rows)
