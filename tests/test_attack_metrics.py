"""Membership-attack metrics: agreement with scikit-learn and properties (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from scvi_unlearn.attack import (
    advantage,
    attack_metrics,
    bootstrap_ci,
    bootstrap_metrics,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
    yeom_advantage,
)


@st.composite
def labelled_scores(draw, max_size: int = 40, tied: bool = True):
    """Labels with both classes present and integer-valued scores (ties likely if ``tied``)."""
    n1 = draw(st.integers(1, max_size // 2))
    n0 = draw(st.integers(1, max_size // 2))
    hi = 6 if tied else 10_000
    scores = draw(
        st.lists(st.integers(-hi, hi), min_size=n1 + n0, max_size=n1 + n0).map(np.asarray)
    )
    labels = np.r_[np.ones(n1, int), np.zeros(n0, int)]
    perm = draw(st.permutations(range(n1 + n0)))
    return labels[list(perm)], scores.astype(float)


@settings(max_examples=150, deadline=None)
@given(labelled_scores())
def test_auc_and_yeom_match_sklearn(data):
    y, s = data
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    assert yeom_advantage(y, s) == pytest.approx(np.max(np.abs(tpr - fpr)), abs=1e-12)
    f, t = roc_curve(y, s)
    np.testing.assert_allclose(f, fpr)
    np.testing.assert_allclose(t, tpr)


@settings(max_examples=150, deadline=None)
@given(labelled_scores())
def test_reversed_scores_give_one_minus_auc_and_same_advantages(data):
    y, s = data
    assert roc_auc(y, -s) == pytest.approx(1.0 - roc_auc(y, s), abs=1e-12)
    assert advantage(roc_auc(y, -s)) == pytest.approx(advantage(roc_auc(y, s)), abs=1e-12)
    assert yeom_advantage(y, -s) == pytest.approx(yeom_advantage(y, s), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(labelled_scores(tied=False))
def test_metrics_invariant_to_strictly_increasing_transforms(data):
    y, s = data
    ref = attack_metrics(y, s)
    for transformed in (3.0 * s - 7.0, np.exp(s / 5000.0), s**3 + s):
        assert attack_metrics(y, transformed) == pytest.approx(ref, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(labelled_scores())
def test_metric_ranges_and_their_relations(data):
    y, s = data
    m = attack_metrics(y, s)
    assert 0.0 <= m["auc"] <= 1.0
    assert 0.0 <= m["advantage"] <= 1.0
    assert 0.0 <= m["yeom_advantage"] <= 1.0
    # |AUC - 1/2| is the mean of TPR - FPR along the ROC curve, so it cannot exceed the max
    assert m["advantage"] / 2.0 <= m["yeom_advantage"] + 1e-12
    # TPR at a larger FPR budget is never smaller
    assert m["tpr@1%fpr"] <= m["tpr@5%fpr"] <= tpr_at_fpr(y, s, 0.5) <= 1.0


@settings(max_examples=60, deadline=None)
@given(labelled_scores(), st.integers(0, 2**31 - 1))
def test_bootstrap_ci_contains_point_estimate_and_is_seeded(data, seed):
    y, s = data
    point = attack_metrics(y, s)
    ci = bootstrap_ci(y, s, n_bootstrap=200, seed=seed)
    for key, (lo, hi) in ci.items():
        assert 0.0 <= lo <= point[key] <= hi <= 1.0, key
    assert ci == bootstrap_ci(y, s, n_bootstrap=200, seed=seed)
    # advantage interval: image of the AUC interval under a -> 2|a - 1/2|
    alo, ahi = ci["auc"]
    if alo <= 0.5 <= ahi:
        assert ci["advantage"][0] == 0.0


@settings(max_examples=40, deadline=None)
@given(labelled_scores(max_size=16), st.integers(0, 1000))
def test_bootstrap_replicates_are_stratified_resample_metrics(data, seed):
    """Each vectorised replicate equals the metrics recomputed on its own resample."""
    y, s = data
    reps = bootstrap_metrics(y, s, n_bootstrap=5, seed=seed)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    ip = pos[rng.integers(0, pos.size, size=(5, pos.size))]
    ineg = neg[rng.integers(0, neg.size, size=(5, neg.size))]
    for b in range(5):
        idx = np.r_[ip[b], ineg[b]]
        direct = attack_metrics(y[idx], s[idx])
        assert {k: v[b] for k, v in reps.items()} == pytest.approx(direct, abs=1e-12)


def test_perfect_separation_and_chance():
    y = np.r_[np.ones(50, int), np.zeros(50, int)]
    s = np.r_[np.arange(50) + 100.0, np.arange(50)]
    m = attack_metrics(y, s)
    assert m["auc"] == 1.0 and m["advantage"] == 1.0 and m["yeom_advantage"] == 1.0
    assert m["tpr@1%fpr"] == 1.0
    # constant scores: AUC exactly 1/2, every TPR at FPR < 1 is 0
    m = attack_metrics(y, np.zeros(100))
    assert m["auc"] == 0.5 and m["advantage"] == 0.0 and m["tpr@5%fpr"] == 0.0


def test_bootstrap_ci_is_informative():
    """Separated scores give an AUC interval above 1/2; null scores one covering it."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(60, int), np.zeros(60, int)]
    separated = np.r_[rng.normal(1.5, 1, 60), rng.normal(0, 1, 60)]
    assert bootstrap_ci(y, separated, seed=0)["auc"][0] > 0.6
    null = rng.normal(size=120)
    lo, hi = bootstrap_ci(y, null, seed=0)["auc"]
    assert lo < 0.5 < hi and hi - lo < 0.35


@pytest.mark.parametrize(
    "labels, scores, message",
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "at least one member"),
        ([1, 0, 2], [0.1, 0.2, 0.3], "0 \\(non-member\\) or 1"),
        ([1, 0], [0.1, np.nan], "NaN"),
        ([1, 0, 1], [0.1, 0.2], "same length"),
    ],
)
def test_bad_input_is_rejected(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        roc_auc(labels, scores)
