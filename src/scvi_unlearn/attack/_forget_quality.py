"""Forgetting quality of the NeurIPS 2023 machine-unlearning challenge, from many models.

Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS
unlearning competition" (arXiv:2406.09073, 2024).  An unlearning *algorithm* is randomised
(seeds), and so is retraining; with ``N_u`` unlearned and ``N_r`` retrained models, each forget
example has two empirical distributions of its score.  Every threshold on the score is an attack
that guesses "unlearned" above it; with its false-positive rate ``FPR`` (retrained models called
unlearned) and false-negative rate ``FNR``, the example's privacy degree is the largest

    eps = max(log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR))

over all thresholds and both orientations, as in (eps, delta)-differential privacy.  The score
of the example is ``H = 2^(-floor(eps / 0.5))`` (at most 12 halvings), and the forgetting
quality is the mean of ``H`` over the forget set: 1 when no threshold tells the two families
apart, towards 0 as they separate.

With few models the rates are coarse (the smallest non-zero rate is ``1 / N``, so the largest
measurable eps is about ``log N``) and the maximum over thresholds is biased upward: two sets
of 10 models from the *same* distribution already score well below 1 (measured in the tests).
Compare F only between candidates with the same numbers of models; at least
:data:`MIN_MODELS` of each kind are required.  The challenge used 512 unlearned and 512
retrained models per submission.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scvi_unlearn.attack._equivalence import STATISTICS, ScoreCache
from scvi_unlearn.attack._evaluation_data import as_obs_names

#: fewest models of each kind accepted (eps can then reach log(0.79 * 5) = 1.4).
MIN_MODELS = 5


@dataclass
class ForgetQuality:
    """Result of :func:`forget_quality`: ``score`` (F), per-example ``epsilons`` and ``h``."""

    score: float
    epsilons: np.ndarray
    h: np.ndarray
    n_unlearned: int
    n_retrained: int
    delta: float

    @property
    def max_measurable_epsilon(self) -> float:
        """The largest eps the numbers of models can show (smallest non-zero rate: 1 / N)."""
        return _max_epsilon(self.n_unlearned, self.n_retrained, self.delta)

    def __repr__(self) -> str:
        return (
            f"ForgetQuality(F={self.score:.3f}, {self.epsilons.size} examples, "
            f"{self.n_unlearned} unlearned vs {self.n_retrained} retrained models, "
            f"median eps {np.median(self.epsilons):.2f}, eps measurable up to "
            f"{self.max_measurable_epsilon:.2f})"
        )


def example_epsilon(unlearned: np.ndarray, retrained: np.ndarray, delta: float) -> float:
    """The privacy degree of one example from its scores under both families of models.

    Thresholds at which the FPR or the FNR is zero bound nothing (the ratio is unbounded) and
    are skipped, as in the challenge; when one threshold separates the families completely,
    the example gets the largest measurable eps (:meth:`ForgetQuality.max_measurable_epsilon`).
    """
    u = np.sort(np.asarray(unlearned, dtype=np.float64))
    r = np.sort(np.asarray(retrained, dtype=np.float64))
    thresholds = np.concatenate([[-np.inf], np.unique(np.r_[u, r])])
    # guess "unlearned" when score > threshold
    fpr = 1.0 - np.searchsorted(r, thresholds, side="right") / r.size
    fnr = np.searchsorted(u, thresholds, side="right") / u.size
    eps = 0.0
    for a, b in ((fpr, fnr), (1.0 - fpr, 1.0 - fnr)):  # both orientations of every threshold
        if np.any((a == 0) & (b == 0)):
            return _max_epsilon(u.size, r.size, delta)
        keep = (a > 0) & (b > 0)
        a, b = a[keep], b[keep]
        with np.errstate(divide="ignore", invalid="ignore"):
            e1 = np.log(np.maximum(1.0 - delta - a, 0.0) / b)
            e2 = np.log(np.maximum(1.0 - delta - b, 0.0) / a)
        eps = max(eps, float(np.nanmax(np.r_[e1, e2, 0.0])))
    return eps


def _max_epsilon(n_unlearned: int, n_retrained: int, delta: float) -> float:
    n = min(n_unlearned, n_retrained)
    return float(np.log((1 - delta - 1 / n) * n))


def forget_quality(
    unlearned_scores: np.ndarray,
    retrained_scores: np.ndarray,
    *,
    delta: float = 0.01,
    bin_width: float = 0.5,
    n_bins: int = 13,
) -> ForgetQuality:
    """The challenge's forgetting quality F from per-example scores of many models.

    Parameters
    ----------
    unlearned_scores
        ``(N_u, n)``: each unlearned model's score of each of ``n`` forget examples (e.g.
        per-cell ELBO; any score works, the attack family uses every threshold).
    retrained_scores
        ``(N_r, n)``: the same under retrained models.
    delta
        The delta of the (eps, delta) bound (challenge: 0.01).
    bin_width, n_bins
        ``H = 2^(-min(floor(eps / bin_width), n_bins - 1))`` (challenge: 0.5 and 13 bins).
    """
    u = np.atleast_2d(np.asarray(unlearned_scores, dtype=np.float64))
    r = np.atleast_2d(np.asarray(retrained_scores, dtype=np.float64))
    if u.shape[1] != r.shape[1]:
        raise ValueError(
            f"Both score matrices need one column per example: {u.shape[1]} vs {r.shape[1]}."
        )
    if min(u.shape[0], r.shape[0]) < MIN_MODELS:
        raise ValueError(
            f"The forgetting quality needs at least {MIN_MODELS} models of each kind, got "
            f"{u.shape[0]} unlearned and {r.shape[0]} retrained: with fewer, every rate is too "
            "coarse for eps to mean anything."
        )
    if not (np.isfinite(u).all() and np.isfinite(r).all()):
        raise ValueError("Scores contain NaN or infinite values.")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}.")
    eps = np.array([example_epsilon(u[:, i], r[:, i], delta) for i in range(u.shape[1])])
    h = 2.0 ** (-np.minimum(np.floor(eps / bin_width), n_bins - 1))
    return ForgetQuality(float(h.mean()), eps, h, u.shape[0], r.shape[0], float(delta))


def forget_quality_of_models(
    unlearned: Sequence[Any],
    retrained: Sequence[Any],
    forget,
    *,
    adata,
    statistic: str = "elbo",
    n_draws: int = 8,
    seed: int = 0,
    delta: float = 0.01,
) -> ForgetQuality:
    """:func:`forget_quality` of the forget cells' per-cell scores under two lists of models.

    ``unlearned``: models from one unlearning method with different seeds; ``retrained``:
    retrains with different seeds (e.g. :func:`scvi_unlearn.attack.train_references`).  The
    score is the per-cell ``statistic`` of :func:`scvi_unlearn.attack.equivalence_test`.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(STATISTICS)}, got {statistic!r}.")
    names = as_obs_names(forget, "forget")
    cache = ScoreCache(adata, n_draws, seed)
    return forget_quality(
        cache.scores(list(unlearned), "forget", names, statistic),
        cache.scores(list(retrained), "forget", names, statistic),
        delta=delta,
    )
