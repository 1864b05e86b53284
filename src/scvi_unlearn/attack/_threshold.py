"""Threshold attacks on single per-cell scores (Yeom et al., 2018), with fixed directions.

A threshold attack predicts "member" when a per-cell score exceeds a threshold; sweeping the
threshold gives the ROC curve, so the attack score is the feature itself, oriented so that a
higher value means "more member-like".  The orientation is fixed *a priori* (a model fits its
training cells better: higher ELBO, lower reconstruction NLL) and never chosen on the evaluated
cells, which would bias the AUC upward.  An AUC well below 0.5 under these orientations means
the members stand out in the unexpected direction: still a leak (the Streisand effect).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: orientation of each single-score attack: score = sign * feature (higher = member-like).
THRESHOLD_SCORES = {
    "elbo": ("elbo", 1.0),
    "reconstruction": ("reconstruction", -1.0),
    "kl": ("kl_z", 1.0),
    "kl_z": ("kl_z", 1.0),
    "train_knn_distance": ("train_knn_distance", -1.0),
}


def threshold_scores(features: pd.DataFrame, score: str = "elbo") -> np.ndarray:
    """Member scores of a threshold attack on one feature of an ``attack_features`` table.

    Parameters
    ----------
    features
        Output of :func:`~scvi_unlearn.attack.attack_features`.
    score
        ``"elbo"`` (higher ELBO = member), ``"reconstruction"`` (lower NLL = member), ``"kl"``
        / ``"kl_z"`` (larger KL of ``q(z|x)`` to the prior = member: the encoder is more
        confident about cells it was fitted to) or ``"train_knn_distance"`` (closer to the
        model's training latents = member).
    """
    if score not in THRESHOLD_SCORES:
        raise ValueError(
            f"Unknown threshold score {score!r}; choose one of {sorted(THRESHOLD_SCORES)}."
        )
    column, sign = THRESHOLD_SCORES[score]
    if column not in features.columns:
        raise KeyError(f"Feature {column!r} is not in the feature table.")
    return sign * features[column].to_numpy(dtype=np.float64)
