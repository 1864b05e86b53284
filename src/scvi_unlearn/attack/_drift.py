"""The seed study's "drift" protocol: one attacker fitted on the baseline, reused unchanged.

COMPARISON ONLY.  The study fitted one attacker on its original (baseline) model's features and
applied it unchanged to every unlearned model, reporting the AUC of that fixed attacker
(DESIGN section 8, bug 2).  This measures how far a model's features *drift* from the
baseline's decision rule, not whether the members are still detectable: an attacker trained on
the evaluated model itself can find a signal the fixed one misses, and an AUC far below 0.5
(the study's "Streisand" contrastive result) is the fixed rule being inverted.

By default the protocol is cross-fitted (each cell is scored by a baseline attacker that was
not trained on it), which removes the study's second bug (AUC on the attacker's own training
cells) while keeping the fixed-baseline design; ``cross_fit=False`` reproduces the study.
"""

from __future__ import annotations

import numpy as np

from scvi_unlearn.attack._mlp import CrossFitScores, SpectralMLPAttacker, cross_fit


def drift_attack(
    baseline_x: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    n_splits: int = 5,
    seed: int = 0,
    cross_fit_folds: bool = True,
    **attacker_kwargs,
) -> CrossFitScores:
    """Scores of the evaluated model's features by attackers fitted on the baseline's.

    Parameters
    ----------
    baseline_x
        Features of the evaluated cells under the baseline (original) model.
    x
        Features of the same cells (same rows) under the evaluated model.
    y
        Labels (1 = member).
    n_splits, seed
        Folds and seed of the cross-fitting.
    cross_fit_folds
        ``True``: each cell is scored by a baseline attacker trained without it; ``False``:
        one attacker trained on every cell, as in the study (in-sample; comparison only).
    attacker_kwargs
        Passed to :class:`~scvi_unlearn.attack.SpectralMLPAttacker`.  The attacker's
        standardization is fitted on the baseline features and reused, as in the study.
    """
    baseline_x = np.asarray(baseline_x, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if baseline_x.shape != x.shape:
        raise ValueError(
            f"baseline and evaluated features differ in shape: {baseline_x.shape} vs {x.shape}."
        )
    if cross_fit_folds:
        return cross_fit(
            baseline_x,
            y,
            lambda f: SpectralMLPAttacker(seed=seed + f, **attacker_kwargs),
            n_splits=n_splits,
            seed=seed,
            score_x=x,
        )
    attacker = SpectralMLPAttacker(seed=seed, **attacker_kwargs).fit(baseline_x, y)
    n = np.asarray(y).size
    return CrossFitScores(
        scores=attacker.decision_function(x),
        fold=np.zeros(n, dtype=int),
        train_index=[np.arange(n)],
    )
