"""Null checks of the cross-fitted MLP's fold designs and of the shadow attack (docs/audit.md).

Prints, for a 100-epoch ``su.benchmark.train_original`` model of the pbmc68k split used
throughout (holdout 0.3, stratified, seed 0):

1. random null: two random disjoint sets of 40 held-out cells (no model trained on either),
   12 repetitions, out-of-fold AUC of the MLP with paired / stratified / grouped folds; 6
   repetitions of the shadow attack;
2. structured null: the 22 "CD56+ NK" members vs their matched held-out cells under a retrain
   that never saw them, and under the original that did (5 seeds per fold design, 3 for shadow);
3. the test suite's label-matched design (30 random training members vs 30 label-matched
   held-out cells, models trained 300 epochs on 30 other members), 4 seeds per fold design.

Usage: ``python benchmarks/attack_null_checks.py [--threads 1]`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

import scvi_unlearn as su
from scvi_unlearn.attack import attack_features, feature_columns, mlp_attack, roc_auc
from scvi_unlearn.benchmark import train_original

FOLDS = ("paired", "stratified", "grouped")


def _features(model, adata, names):
    feats = attack_features(model, adata, names)
    return feats[feature_columns(feats, "full")].to_numpy()


def _mlp_aucs(x, y, seeds, folds):
    return [roc_auc(y, mlp_attack(x, y, seed=s, folds=folds).scores) for s in seeds]


def _line(name, values):
    print(f"{name:<44} mean {np.mean(values):.3f}  sd {np.std(values):.3f}  {np.round(values, 2)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    model = train_original(adata, train_kwargs={"max_epochs": 100})
    held = np.asarray(adata.obs_names[adata.obs["membership"] == "heldout"])

    print("1. random null (true AUC 0.5)")
    x_held = _features(model, adata, held)
    y = np.r_[np.ones(40), np.zeros(40)].astype(int)
    for folds in FOLDS:
        aucs = []
        for s in range(12):
            idx = np.random.default_rng(100 + s).permutation(held.size)[:80]
            aucs.append(roc_auc(y, mlp_attack(x_held[idx], y, seed=s, folds=folds).scores))
        _line(f"   mlp, {folds} folds", aucs)
    aucs = []
    for s in range(6):
        p = np.random.default_rng(100 + s).permutation(held)
        r = model.membership_attack(
            p[:40], p[40:80], adata=adata, attack="shadow", seed=s, n_bootstrap=100
        )
        aucs.append(r.auc)
    _line("   shadow", aucs)

    print("2. NK forget set vs matched held-out cells")
    forget = su.data.forget_by_label(adata, "CD56+ NK")
    non = su.data.matched_nonmembers(adata, forget)
    y2 = np.r_[np.ones(forget.size), np.zeros(non.size)].astype(int)
    retrain = model.unlearn(forget, method="retrain", seed=1)
    for name, mdl in (("retrain (null)", retrain), ("original", model)):
        x2 = _features(mdl, adata, np.r_[forget, non])
        for folds in FOLDS:
            _line(f"   {name}, mlp {folds}", _mlp_aucs(x2, y2, range(5), folds))
        aucs = [
            mdl.membership_attack(
                forget, adata=adata, attack="shadow", seed=s, n_bootstrap=100
            ).auc
            for s in range(3)
        ]
        _line(f"   {name}, shadow", aucs)

    print("3. the test suite's label-matched design")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import test_attack as design  # the fixtures' recipe, reused rather than restated

    cells = design.cells.__wrapped__(adata)
    members, nonmembers = cells["members"], cells["nonmembers"]
    y3 = np.r_[np.ones(members.size), np.zeros(nonmembers.size)].astype(int)
    models = {
        "retrain seed 1 (null)": design._fit(adata, cells["retain"], seed=1),
        "retrain seed 2 (null)": design._fit(adata, cells["retain"], seed=2),
        "original": design._fit(adata, np.r_[members, cells["retain"]], seed=0),
    }
    for name, mdl in models.items():
        x3 = _features(mdl, adata, np.r_[members, nonmembers])
        for folds in FOLDS:
            _line(f"   {name}, mlp {folds}", _mlp_aucs(x3, y3, range(4), folds))
        aucs = [
            mdl.membership_attack(
                members, nonmembers, adata=adata, attack="shadow", seed=s, n_bootstrap=100
            ).auc
            for s in range(3)
        ]
        _line(f"   {name}, shadow", aucs)


if __name__ == "__main__":
    main()
