"""The equivalence test's statistics and the challenge's forgetting quality, on simulated scores.

Scores are simulated as a cell effect + a model-level shift shared by all cells (a retrain that
is globally a little better) + cell-level noise, which is the correlation structure that makes
cell-level formulas wrong and the model-level null necessary.
"""

from __future__ import annotations

import numpy as np
import pytest

from scvi_unlearn.attack import forget_quality
from scvi_unlearn.attack._zscores import (
    ReferenceModel,
    aggregates,
    decide,
    loo_null_z,
    moderated_variance,
    null_test,
)


def _models(rng, k, n_cells=30, shift_sd=0.3, cell_sd=None, offset=0.0):
    """``k`` models' scores of ``n_cells`` cells (fixed cell means and spreads)."""
    base = np.linspace(-700, -600, n_cells)
    sd = np.linspace(2.0, 6.0, n_cells) if cell_sd is None else cell_sd
    shifts = rng.normal(0, shift_sd, size=(k, 1)) * sd.mean()
    return base + offset * sd + shifts + rng.normal(0, 1, size=(k, n_cells)) * sd


def _test(candidate, refs, margin=1.5):
    ref = ReferenceModel.fit(refs)
    z = ref.z(candidate)
    null = [z_.mean() for z_ in loo_null_z(refs)]
    test = null_test(z.mean(), np.array(null), n_constraints=1)
    return decide(test, margin)[0], test


def test_moderated_variance_shrinks_toward_a_common_prior():
    rng = np.random.default_rng(0)
    true = rng.lognormal(0, 0.5, size=2000)
    s2 = true * rng.chisquare(4, size=2000) / 4
    mod, d0 = moderated_variance(s2, 4)
    assert np.isfinite(d0) and d0 > 0
    # a weighted mean of each cell's variance (4 df) and one prior value s0^2 (d0 df) ...
    prior = (mod * (d0 + 4) - 4 * s2) / d0
    assert np.allclose(prior, prior[0])
    assert np.all((mod - s2) * (prior[0] - s2) >= -1e-9)
    # ... which is closer to the true variances than the raw sample variances are
    assert np.mean((np.log(mod) - np.log(true)) ** 2) < np.mean((np.log(s2) - np.log(true)) ** 2)
    # identical variances: no evidence of spread, every cell gets the pooled value
    same, d0 = moderated_variance(np.full(50, 2.0), 3)
    assert np.isinf(d0) and np.allclose(same, 2.0)
    with pytest.raises(ValueError, match=">= 2 references"):
        moderated_variance(s2, 0)


def test_z_of_another_model_from_the_same_distribution_is_standardised():
    rng = np.random.default_rng(1)
    zs = []
    for _ in range(300):
        models = _models(rng, 6, shift_sd=0.0)
        zs.append(ReferenceModel.fit(models[:5]).z(models[5]))
    z = np.concatenate(zs)
    assert abs(z.mean()) < 0.05
    assert 0.9 < z.var() < 1.4  # Student-t with d0 + 4 df: variance a little above 1


def test_false_positive_rate_is_nominal_with_model_level_shifts():
    """A held-out retrain is rejected ('remembers' / 'over-forgets') at most ~5% of the time,
    although a model-level shift makes all its cells move together."""
    rng = np.random.default_rng(2)
    rejected = 0
    n = 400
    for _ in range(n):
        models = _models(rng, 6, shift_sd=0.4)
        decision, test = _test(models[5], models[:5])
        rejected += test.p_value < 0.05
    assert rejected / n <= 0.075


def test_a_remembering_and_an_over_forgetting_candidate_are_detected():
    rng = np.random.default_rng(3)
    refs = _models(rng, 5, shift_sd=0.2)
    better = _models(rng, 1, shift_sd=0.2, offset=3.0)[0]  # fit 3 s.d. better: remembers
    worse = _models(rng, 1, shift_sd=0.2, offset=-3.0)[0]
    assert _test(better, refs)[0] == "remembers"
    assert _test(worse, refs)[0] == "over-forgets"
    assert _test(_models(rng, 1, shift_sd=0.2)[0], refs, margin=3.0)[0] == "equivalent"


def test_decide_follows_two_one_sided_tests():
    narrow = null_test(0.1, np.array([0.2, -0.1, 0.15, -0.25, 0.0]), n_constraints=1)
    decision, (lo, hi) = decide(narrow, margin=1.0)
    assert decision == "equivalent" and -1.0 <= lo < 0.1 < hi <= 1.0
    wide = null_test(0.1, np.array([2.0, -1.5, 1.8, -2.2, 0.1]), n_constraints=1)
    assert decide(wide, margin=1.0)[0] == "no power"
    far = null_test(5.0, np.array([0.2, -0.1, 0.15, -0.25, 0.0]), n_constraints=1)
    assert far.p_value < 0.01 and decide(far, margin=1.0)[0] == "remembers"
    assert null_test(-5.0, far.null, n_constraints=1).p_value == pytest.approx(far.p_value)
    # the leave-one-out constraint costs one degree of freedom
    assert far.df == 4 and null_test(5.0, far.null).df == 5


def test_leave_one_out_needs_three_references_and_aggregates_are_signed():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="at least 3 references"):
        loo_null_z(_models(rng, 2))
    with pytest.raises(ValueError, match="K >= 2"):
        ReferenceModel.fit(_models(rng, 1))
    agg = aggregates(np.array([3.0, 3.0, -1.0, 0.0]), critical=2.0)
    assert agg["mean_z"] == pytest.approx(1.25)
    assert agg["mean_z2"] == pytest.approx(19 / 4)
    assert agg["frac_beyond"] == pytest.approx(0.5)
    assert np.isnan(aggregates(np.array([]), 2.0)["mean_z"])


def test_forget_quality_is_one_when_indistinguishable_and_small_when_separated():
    rng = np.random.default_rng(5)
    same = rng.normal(size=(20, 40))
    null = forget_quality(same[:10], same[10:])
    identical = forget_quality(same[:10], same[:10])
    assert identical.score == 1.0 and np.all(identical.epsilons == 0)
    apart = forget_quality(rng.normal(5, 1, size=(10, 40)), rng.normal(size=(10, 40)))
    # every example separated: eps = log((1 - 0.01 - 0.1) / 0.1) = 2.19 -> 2^-4
    assert apart.max_measurable_epsilon == pytest.approx(np.log(0.89 / 0.1))
    assert apart.score == pytest.approx(2.0**-4)
    # the same distribution scores far better than separated families (not 1: 10 models each)
    assert null.score > 4 * apart.score
    half = forget_quality(rng.normal(1, 1, size=(10, 40)), rng.normal(size=(10, 40)))
    assert apart.score < half.score < null.score
    with pytest.raises(ValueError, match="at least 5 models"):
        forget_quality(same[:3], same[3:6])
    with pytest.raises(ValueError, match="one column per example"):
        forget_quality(same[:10, :5], same[10:, :6])
