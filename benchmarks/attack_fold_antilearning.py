"""Out-of-fold anti-learning on a matched design: stratified vs matched-pair folds.

Members (30 training members) and label-matched held-out non-members are audited under
models that never saw the members (trained 300 epochs on 30 other training members, seeds
1 and 2), so the true AUC is 0.5.  Prints the out-of-fold MLP AUC (95% CI) with scikit-learn's
stratified folds and with matched-pair folds (``paired_folds``; the default is now label-blind
grouped folds, see ``benchmarks/attack_null_checks.py``).

    python benchmarks/attack_fold_antilearning.py [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import warnings

import numpy as np
import torch

import scvi_unlearn as su
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.attack import attack_features, bootstrap_ci, feature_columns, mlp_attack, roc_auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    pbmc = su.data.pbmc68k()
    su.data.membership_split(pbmc, holdout=0.3, stratify="cell_type", seed=0)
    rng = np.random.default_rng(0)
    train = np.sort(np.asarray(pbmc.obs_names[pbmc.obs["membership"] == "train"], dtype=str))
    chosen = rng.choice(train, size=60, replace=False)
    members, retain = np.sort(chosen[:30]), np.sort(chosen[30:])
    nonmembers = su.data.matched_nonmembers(pbmc, members, method="label", seed=0)
    y = np.r_[np.ones(members.size, int), np.zeros(nonmembers.size, int)]
    print("model  folds       AUC    95% CI")
    for seed in (1, 2):
        sub = pbmc[pbmc.obs_names.isin(retain)].copy()
        su.SCVI.setup_anndata(sub, layer="counts", labels_key="cell_type")
        with isolated_seed(seed):
            model = su.SCVI(sub, n_latent=10, n_hidden=64)
            model.train(max_epochs=300, train_size=1.0, enable_progress_bar=False)
        feats = attack_features(model, pbmc, np.r_[members, nonmembers])
        x = feats[feature_columns(feats)].to_numpy()
        for folds in ("stratified", "paired"):
            scores = mlp_attack(x, y, seed=0, folds=folds).scores
            lo, hi = bootstrap_ci(y, scores, seed=0)["auc"]
            print(f"seed {seed} {folds:<11} {roc_auc(y, scores):.3f}  [{lo:.3f}, {hi:.3f}]")


if __name__ == "__main__":
    main()
