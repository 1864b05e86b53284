"""The audit and the Fisher analysis at atlas scale: wall time on 30k training cells.

Simulates ``--members / 0.7`` cells (``su.data.simulate``, calibrated on pbmc68k;
seed 0), splits them into members (trained on) and held-out non-members, trains a default
``su.SCVI`` on the members for ``--epochs`` epochs, forgets ``--forget`` members of the rarest
type with ``ssd`` (any unlearned model would do: the audit's cost does not depend on it) and
times, each on its own:

* the attack features of the forget cells and of their matched non-members
  (``su.attack.attack_features`` through ``membership_attack``: 8 posterior draws per cell);
* ``new.membership_attack(forget, adata=adata)`` (default attacker: an MLP, 5-fold
  out-of-fold scores, bootstrap confidence intervals);
* the per-cell equivalence test ``su.attack.equivalence_test(new, references, forget)`` against
  five references (the audit's scoring only: the references are retrains, trained beforehand
  with the original's recipe and not timed);
* ``model.fisher_overlap(forget cells)`` (per-sample Fisher of forget and retain cells plus the
  classifier control) and the per-sample diagonal Fisher of all members.

The goal (issue 13): features + attacks + equivalence test under 60 s on 2 cores.

    python benchmarks/audit_scaling.py --members 30000 --threads 1
"""

from __future__ import annotations

import argparse
import time


def timed(label: str, fn, results: dict):
    t0 = time.perf_counter()
    out = fn()
    results[label] = time.perf_counter() - t0
    print(f"{label}: {results[label]:.1f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=30_000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--forget", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of the original")
    parser.add_argument("--references", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    import numpy as np
    from scaling import quiet, simulated_members

    import scvi_unlearn as su

    quiet(args.threads)
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
    timed(
        "membership_attack (threshold): matching + features + attack",
        lambda: new.membership_attack(forget, adata=adata, attack="threshold"),
        results,
    )
    timed("membership_attack (mlp)", lambda: new.membership_attack(forget, adata=adata), results)
    timed(
        "equivalence test (5 references)",
        lambda: su.attack.equivalence_test(new, references, forget, adata=adata),
        results,
    )
    audit = sum(results.values())
    print(f"audit total: {audit:.1f} s (goal < 60 s)")
    timed("fisher_overlap (forget vs retain, classifier control)",
          lambda: model.fisher_overlap(train[forget]), results)  # fmt: skip
    timed("per-sample diagonal Fisher, all members", lambda: su.fisher.diagonal_fisher(model),
          results)  # fmt: skip

    print("\n| step | seconds |\n|---|---|")
    for label, seconds in results.items():
        print(f"| {label} | {seconds:.1f} |")
    print(f"| **audit (the three above)** | **{audit:.1f}** |")


if __name__ == "__main__":
    main()
