"""Membership audit on the offline PBMC data, "CD56+ NK" as the forget set.

Trains the original model (the test-suite recipe: n_latent=10, n_hidden=64, 30 epochs on the
training members), builds the retrain target from 3 retrains (``model.retrain_target``), and
audits the original and a fourth, independent retrain with every attack.  Prints one table,
the retrain targets and the verdicts, the wall time of each audit, and saves the ROC figure.

    python benchmarks/attack_pbmc_audit.py [--epochs 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import torch

import scvi_unlearn as su
from scvi_unlearn._seeding import isolated_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # tiny models: more threads only oversubscribe
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)

    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    forget = su.data.forget_by_label(adata, "CD56+ NK")
    train = adata[adata.obs["membership"] == "train"].copy()
    su.SCVI.setup_anndata(train, layer="counts", labels_key="cell_type")
    with isolated_seed(0):
        original = su.SCVI(train, n_latent=10, n_hidden=64)
        original.train(max_epochs=args.epochs, train_size=0.9, enable_progress_bar=False)
    candidate = original.unlearn(forget, method="retrain", seed=3)
    nonmembers = su.data.matched_nonmembers(adata, forget, seed=0)
    print(
        f"{forget.size} members (CD56+ NK training cells), {nonmembers.size} matched non-members"
    )

    rows, targets = [], {}
    for attack, extra in (("mlp", {}), ("calibrated", {})):
        t = time.perf_counter()
        targets[attack] = original.retrain_target(
            forget, nonmembers, seeds=(0, 1, 2), adata=adata, attack=attack, **extra
        )
        print(f"\n{targets[attack]}\n  built in {time.perf_counter() - t:.1f} s")
    for name, model in (("original", original), ("retrain seed 3", candidate)):
        for attack, kwargs in (
            ("mlp", {"target": targets["mlp"]}),
            ("threshold", {"score": "elbo"}),
            ("calibrated", {"target": targets["calibrated"]}),
            ("drift", {"baseline": original}),
        ):
            if attack == "drift" and model is original:
                continue
            t = time.perf_counter()
            report = model.membership_attack(
                forget, nonmembers, adata=adata, attack=attack, **kwargs
            )
            seconds = time.perf_counter() - t
            row = report.to_frame().iloc[0]
            rows.append(
                {
                    "model": name,
                    "attack": attack,
                    "auc": row["auc"],
                    "auc_ci": f"[{row['auc_low']:.3f}, {row['auc_high']:.3f}]",
                    "advantage": row["advantage"],
                    "yeom": row["yeom_advantage"],
                    "tpr@5%fpr": row["tpr@5%fpr"],
                    "seconds": seconds,
                }
            )
            print(f"{name:>15} | {report.verdict()}")
            if attack == "calibrated":
                ax = plt.gca()
                report.plot_roc(ax=ax, label=f"{name} AUC {report.auc:.2f}")
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "audit_roc_cd56nk.png"
    plt.title("Calibrated attack, CD56+ NK forget set")
    plt.savefig(path, dpi=120, bbox_inches="tight")
    print(f"\nROC figure: {path}")


if __name__ == "__main__":
    main()
