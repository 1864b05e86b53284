"""Membership-inference metrics with stratified bootstrap confidence intervals.

Conventions: ``labels`` are 1 for members and 0 for non-members; a higher ``score`` means
"more likely a member".  All functions are deterministic (ties get mid-ranks; the bootstrap
takes a seed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

#: false-positive rates at which the true-positive rate is reported by default.
DEFAULT_FPRS = (0.01, 0.05)


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(
            f"labels and scores must be 1-d of the same length, got {labels.shape} and "
            f"{scores.shape}."
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (non-member) or 1 (member).")
    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("Need at least one member (label 1) and one non-member (label 0).")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values.")
    return labels, scores


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n1 n0), ties counted as one half)."""
    labels, scores = _check(labels, scores)
    ranks = rankdata(scores)
    n1 = labels.sum()
    n0 = labels.size - n1
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def advantage(auc: float) -> float:
    """``2 |AUC - 0.5|``: 0 at chance, 1 for perfect (or perfectly reversed) separation."""
    return float(2.0 * abs(auc - 0.5))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR at every distinct threshold (from ``(0, 0)`` to ``(1, 1)``)."""
    labels, scores = _check(labels, scores)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    # last position of each run of equal scores
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / labels.sum()]
    fpr = np.r_[0.0, fp / (~labels).sum()]
    return fpr, tpr


def yeom_advantage(labels, scores) -> float:
    """Yeom et al. (2018) membership advantage: ``max over thresholds |TPR - FPR|``."""
    fpr, tpr = roc_curve(labels, scores)
    return float(np.max(np.abs(tpr - fpr)))


def tpr_at_fpr(labels, scores, fpr: float) -> float:
    """Highest TPR over thresholds whose FPR is at most ``fpr`` (Carlini et al., 2022)."""
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}.")
    f, t = roc_curve(labels, scores)
    return float(t[f <= fpr + 1e-12].max())


def attack_metrics(labels, scores, fprs: Sequence[float] = DEFAULT_FPRS) -> dict[str, float]:
    """AUC, ``advantage``, ``yeom_advantage`` and ``tpr@{fpr}`` for each requested FPR."""
    auc = roc_auc(labels, scores)
    out = {
        "auc": auc,
        "advantage": advantage(auc),
        "yeom_advantage": yeom_advantage(labels, scores),
    }
    for f in fprs:
        out[tpr_key(f)] = tpr_at_fpr(labels, scores, f)
    return out


def tpr_key(fpr: float) -> str:
    """Name of the TPR-at-``fpr`` metric, e.g. ``"tpr@1%fpr"``."""
    return f"tpr@{fpr * 100:g}%fpr"


def bootstrap_metrics(
    labels,
    scores,
    n_bootstrap: int = 1000,
    seed: int = 0,
    fprs: Sequence[float] = DEFAULT_FPRS,
) -> dict[str, np.ndarray]:
    """Metrics of ``n_bootstrap`` stratified resamples (members and non-members resampled
    separately, with replacement, so every resample keeps both class sizes).

    Returns a dict metric -> array of ``n_bootstrap`` replicates.  The scores are held fixed
    (the attacker is not refitted), so the spread reflects the finite evaluation set.
    """
    labels, scores = _check(labels, scores)
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}.")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    ip = pos[rng.integers(0, pos.size, size=(n_bootstrap, pos.size))]
    ineg = neg[rng.integers(0, neg.size, size=(n_bootstrap, neg.size))]
    idx = np.hstack([ip, ineg])
    y = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    s = scores[idx]
    # vectorised AUC over resamples
    ranks = rankdata(s, axis=1)
    auc = (ranks[:, : pos.size].sum(axis=1) - pos.size * (pos.size + 1) / 2) / (
        pos.size * neg.size
    )
    # vectorised ROC over resamples: sort each row by decreasing score, cut at score changes
    order = np.argsort(-s, axis=1, kind="mergesort")
    ss = np.take_along_axis(s, order, axis=1)
    yy = y[order]
    tpr = np.cumsum(yy, axis=1) / pos.size
    fpr = np.cumsum(~yy, axis=1) / neg.size
    # only thresholds at the end of a run of equal scores are real operating points
    end = np.ones_like(ss, dtype=bool)
    end[:, :-1] = np.diff(ss, axis=1) != 0
    gap = np.where(end, np.abs(tpr - fpr), 0.0)
    out = {"auc": auc, "advantage": 2.0 * np.abs(auc - 0.5), "yeom_advantage": gap.max(axis=1)}
    for f in fprs:
        ok = end & (fpr <= f + 1e-12)
        out[tpr_key(f)] = np.where(ok, tpr, 0.0).max(axis=1)
    return out


def bootstrap_ci(
    labels,
    scores,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    fprs: Sequence[float] = DEFAULT_FPRS,
) -> dict[str, tuple[float, float]]:
    """Stratified percentile-bootstrap confidence intervals of :func:`attack_metrics`.

    Every interval contains its point estimate: a percentile interval that misses it (possible
    for small, tied samples) is extended to it.  The interval of ``advantage`` is the image of
    the AUC interval under ``a -> 2|a - 0.5|`` (it starts at 0 when the AUC interval covers
    0.5); a percentile interval of the folded statistic itself would exclude 0 at chance.
    """
    point = attack_metrics(labels, scores, fprs)
    reps = bootstrap_metrics(labels, scores, n_bootstrap, seed, fprs)
    return ci_from_replicates(point, reps, level)


def ci_from_replicates(
    point: dict[str, float], reps: dict[str, np.ndarray], level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """The intervals of :func:`bootstrap_ci` from point estimates and bootstrap replicates."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    alpha = (1.0 - level) / 2.0
    ci = {}
    for key, values in reps.items():
        lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
        ci[key] = (float(min(lo, point[key])), float(max(hi, point[key])))
    lo, hi = ci["auc"]
    ends = (advantage(lo), advantage(hi))
    ci["advantage"] = (0.0 if lo <= 0.5 <= hi else min(ends), max(ends))
    return ci
