"""The ``pbmc_audit`` experiment: the membership audit of the original and of an independent
retrain on pbmc68k ("CD56+ NK"), every attack.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd

from benchmarks._harness import Common, experiment

# ---------------------------------------------------------------------------- pbmc68k audit


@dataclasses.dataclass
class PbmcAuditParams(Common):
    """Parameters of the ``pbmc_audit`` experiment.

    Trains the original model (the test-suite recipe: n_latent=10, n_hidden=64, ``epochs``
    epochs on the training members, ``train_size=0.9``, seed 0), builds the retrain target from
    3 retrains (``model.retrain_target``, seeds 0-2) for the ``mlp`` and ``calibrated``
    attacks, and audits the original and a fourth, independent retrain (seed 3) with every
    attack.  The retrain targets and the verdicts are printed; the table has each audit with
    its wall time; the ROC figure of the calibrated audits is saved.

    Attributes
    ----------
    epochs
        Training epochs of the original.
    figures
        Folder of the ROC figure (``audit_roc_cd56nk.png``).
    """

    epochs: int = 30
    figures: str = "docs/figures"


@experiment("pbmc_audit", PbmcAuditParams)
def pbmc_audit(args: PbmcAuditParams) -> pd.DataFrame:
    """Membership audit on the offline PBMC data, "CD56+ NK" as the forget set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed

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
    for attack in ("mlp", "calibrated"):
        t = time.perf_counter()
        targets[attack] = original.retrain_target(
            forget, nonmembers, seeds=(0, 1, 2), adata=adata, attack=attack
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
                    "auc": f"{row['auc']:.3f}",
                    "auc_ci": f"[{row['auc_low']:.3f}, {row['auc_high']:.3f}]",
                    "advantage": f"{row['advantage']:.3f}",
                    "yeom": f"{row['yeom_advantage']:.3f}",
                    "tpr@5%fpr": f"{row['tpr@5%fpr']:.3f}",
                    "seconds": f"{seconds:.3f}",
                }
            )
            print(f"{name:>15} | {report.verdict()}")
            if attack == "calibrated":
                ax = plt.gca()
                report.plot_roc(ax=ax, label=f"{name} AUC {report.auc:.2f}")
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / "audit_roc_cd56nk.png"
    plt.title("Calibrated attack, CD56+ NK forget set")
    plt.savefig(path, dpi=120, bbox_inches="tight")
    plt.close()
    print(f"\nROC figure: {path}")
    return pd.DataFrame(rows)
