"""The verdict knows exact methods (issue #29, item 3 and decision 3).

An exact candidate (a method in ``su.unlearn.FROM_SCRATCH``) passes on utility alone: its z
against retrains of the original's recipe is a recipe difference, never "remembers" as a
failure.  Utility checks fail only *below* the retrains by more than a stated margin (0.5% of
the retrains' mean |ELBO| for the forget cells' types, 2% for the others, pooled and per type).
The reference-count guidance (``references_needed``, ``ReferencePowerWarning``) follows the
measured power study.  Most tests build reports from synthetic numbers (fast); one judges a
real ``fast_retrain`` result.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import scvi_unlearn as su
from scvi_unlearn.attack import EquivalenceReport, ReferencePowerWarning
from scvi_unlearn.attack._equivalence import GROUPS
from scvi_unlearn.attack._equivalence_report import is_exact
from scvi_unlearn.attack._power import forget_power, null_scale, power_summary
from scvi_unlearn.attack._utility import prediction_interval, utility_checks
from scvi_unlearn.attack._zscores import NullTest, decide, loo_null_z, null_test

#: five retrains' mean same-type held-out ELBO: interval about [-543.6, -524.4], mean -534
SAME_REFS = np.array([-530.0, -532.0, -534.0, -536.0, -538.0])
OTHER_REFS = np.array([-800.0, -801.0, -802.0, -803.0, -804.0])
TYPE_REFS = np.array([-700.0, -701.0, -702.0, -703.0, -704.0])


def _utility(same=-534.0, other=-802.0, per_type=None):
    return utility_checks(
        {"same_type": (same, SAME_REFS), "other_types": (other, OTHER_REFS)},
        per_type if per_type is not None else {"B cells": (30, -702.0, TYPE_REFS)},
        alpha=0.05,
        tolerance=0.02,
        same_type_margin=su.attack.SAME_TYPE_MARGIN,
        min_cells=su.attack.MIN_TYPE_CELLS,
    )


def _report(decision, statistic, utility, *, exact, contrast=0.1, power=None):
    """An EquivalenceReport from synthetic numbers (decision and z given, not computed)."""
    test = NullTest(statistic, np.array([0.4, -0.4, 0.2, -0.2]), 0.35, statistic / 0.35, 0.01, 4)
    member = NullTest(contrast, np.array([0.3, -0.3, 0.1, -0.1]), 0.25, contrast / 0.25, 0.6, 3)
    agg = pd.DataFrame(
        {"mean_z": statistic, "mean_z2": 1.0, "frac_beyond": 0.05, "q90_abs_z": 1.6},
        index=list(GROUPS),
    )
    return EquivalenceReport(
        decision=decision,
        statistic=statistic,
        p_value=0.01 if decision in ("remembers", "over-forgets") else 0.5,
        interval=(statistic - 0.75, statistic + 0.75),
        margin=2.0,
        alpha=0.05,
        test=test,
        spread_test=test,
        membership_test=member,
        shift_tests={"same_type": member, "other_types": member},
        aggregates=agg,
        null_aggregates=pd.DataFrame(),
        per_cell=pd.DataFrame(),
        null_z={},
        utility=utility,
        protocol={"n_references": 5, "power": power or {}},
        exact=exact,
    )


# -- exact candidates -----------------------------------------------------------------------
def test_exact_candidate_that_reads_remembers_passes_on_utility():
    rep = _report("remembers", 2.01, _utility(), exact=True)
    assert rep.exact and rep.decision == "remembers" and rep.utility_ok and rep.passed
    verdict = rep.verdict()
    assert verdict.startswith("PASS (exact by construction): utility: same-type")
    assert "against the original recipe's retrains: forget mean z +2.01" in verdict
    assert "(a recipe difference, not memory)" in verdict
    assert "FAIL" not in verdict and "FAIL" not in repr(rep)
    row = rep.to_frame().iloc[0]
    assert row["eq_exact"] and row["eq_passed"] and row["eq_decision"] == "remembers"
    # the same numbers for an approximate method: it remembers, and that is a failure
    approx = _report("remembers", 2.01, _utility(), exact=False)
    assert not approx.passed and approx.verdict().startswith("FAIL: remembers")
    assert not approx.to_frame().iloc[0]["eq_exact"]


def test_exact_candidate_fails_below_the_same_type_interval_by_more_than_the_margin():
    lo, hi = prediction_interval(SAME_REFS)
    floor = lo - 0.005 * abs(SAME_REFS.mean())
    assert (lo, hi) == pytest.approx(
        SAME_REFS.mean()
        + np.array([-1, 1]) * stats.t.ppf(0.975, 4) * SAME_REFS.std(ddof=1) * np.sqrt(1.2)
    )
    bad = _report("equivalent", 0.1, _utility(same=floor - 0.5), exact=True)
    assert bad.utility["same_type_floor"] == pytest.approx(floor)
    assert not bad.utility["same_type_ok"] and not bad.utility_ok and not bad.passed
    verdict = bad.verdict()
    assert verdict.startswith("FAIL (exact by construction)")
    assert "margin 0.5% of |mean|" in verdict and "below the retrains' 95% interval" in verdict
    # below the interval by less than the margin: not a failure, and said so
    near = _report("over-forgets", -2.5, _utility(same=floor + 0.5), exact=True)
    assert near.utility["same_type_elbo"] < lo and near.passed
    assert "within the margin of the retrains' 95% interval" in near.verdict()
    assert "(a recipe difference, not memory)" in near.verdict()


def test_explicit_exact_and_the_record_decide_who_is_exact():
    def model(method):
        return types.SimpleNamespace(unlearn_record_={"method": method})

    assert is_exact(model("fast_retrain")) and is_exact(model("retrain"))
    assert is_exact(model("dp_sgd"))
    assert not is_exact(model("scrub")) and not is_exact(model("finetune"))
    assert not is_exact(types.SimpleNamespace())  # no record: an original is not exact
    assert not is_exact(types.SimpleNamespace(unlearn_record_=None))
    assert {"retrain", "fast_retrain", "dp_sgd"} <= su.unlearn.FROM_SCRATCH


# -- approximate candidates and the margins -------------------------------------------------
def test_above_interval_fit_is_reported_next_to_the_contrast_not_failed():
    rep = _report("equivalent", 0.2, _utility(same=-515.0), exact=False, contrast=0.4)
    assert rep.utility["same_type_above"] and rep.utility["same_type_ok"]
    assert rep.utility_ok and rep.passed
    verdict = rep.verdict()
    assert "membership contrast +0.40 (p=0.6), and it fits unseen cells of the type better " in (
        verdict
    )
    assert "above the retrains' 95% interval" in verdict
    assert rep.to_frame().iloc[0]["eq_same_type_above"]
    inside = _report("equivalent", 0.2, _utility(), exact=False)
    assert not inside.utility["same_type_above"] and "better than the retrains" not in (
        inside.verdict()
    )


def test_every_verdict_states_the_margins():
    for exact in (True, False):
        verdict = _report("equivalent", 0.0, _utility(), exact=exact).verdict()
        assert "margin +/-2" in verdict  # the z margin
        assert "margin 0.5% of |mean|" in verdict  # same type
        assert "(retrains' mean - 2%)" in verdict  # other types pooled
        assert "margin 2% below each type's 95% interval" in verdict  # per type


def test_other_types_pooled_keep_the_two_percent_floor():
    floor = OTHER_REFS.mean() * 1.02
    ok = _utility(other=floor + 0.1)
    bad = _utility(other=floor - 0.1)
    assert ok["other_types_floor"] == pytest.approx(floor) and ok["other_types_ok"]
    assert not bad["other_types_ok"]
    assert not _report("equivalent", 0.0, bad, exact=True).passed


def test_a_failing_type_is_named_and_small_types_are_not_judged():
    lo, _ = prediction_interval(TYPE_REFS)
    type_floor = lo - 0.02 * abs(TYPE_REFS.mean())
    per_type = {
        "B cells": (30, type_floor - 1.0, TYPE_REFS),  # below its floor: fails
        "Dendritic": (12, -650.0, TYPE_REFS),  # above its interval: fine
        "Tiny": (su.attack.MIN_TYPE_CELLS - 1, -2000.0, TYPE_REFS),  # too few cells to judge
    }
    u = _utility(per_type=per_type)
    table = u["per_type"].set_index("type")
    assert table.loc["B cells", "floor"] == pytest.approx(type_floor)
    assert list(table["judged"]) == [True, True, False]
    assert table.loc["B cells", "ok"] is np.False_ or not table.loc["B cells", "ok"]
    assert bool(table.loc["Dendritic", "ok"]) and pd.isna(table.loc["Tiny", "ok"])
    assert u["per_type_ok"] is False
    rep = _report("remembers", 3.0, u, exact=True)
    assert rep.failing_types == ["B cells"] and not rep.utility_ok and not rep.passed
    verdict = rep.verdict()
    assert "FAILING B cells" in verdict and "Tiny" not in verdict and "Dendritic" not in verdict
    assert "2 other types with >= 10 held-out cells" in verdict
    assert rep.to_frame().iloc[0]["eq_failing_types"] == "B cells"
    # just above the floor passes
    fine = _utility(per_type={"B cells": (30, type_floor + 0.1, TYPE_REFS)})
    assert fine["per_type_ok"] is True
    assert _utility(per_type={})["per_type_ok"] is None


# -- how many references --------------------------------------------------------------------
def test_references_needed_follows_the_measured_power_study():
    assert su.attack.references_needed(40) == 5 and su.attack.references_needed(22) == 5
    assert su.attack.references_needed(10) == 8 and su.attack.references_needed(11) == 8
    # the mouse 11-cell whole cluster: +/-2.2 with 5 references is a null spread of about 1.03
    s = 2.2 / stats.t.ppf(0.95, 4)
    assert su.attack.references_needed(11, scale=s) is None
    assert su.attack.equivalence_power(s, 5) == 0.0 and su.attack.equivalence_power(s, 8) < 0.3
    # a tight null: the size rule is the floor
    assert su.attack.references_needed(40, scale=0.2) == 5
    assert su.attack.references_needed(11, scale=0.2) == 8
    # power grows with K and falls with the spread
    powers = [su.attack.equivalence_power(0.6, k) for k in (3, 5, 8, 12)]
    assert powers == sorted(powers) and 0 < powers[0] < powers[-1] < 1
    assert su.attack.equivalence_power(0.4, 5) > su.attack.equivalence_power(0.8, 5)
    needed = su.attack.references_needed(40, scale=0.6)
    assert (
        su.attack.equivalence_power(0.6, needed)
        >= 0.8
        > su.attack.equivalence_power(0.6, needed - 1)
    )
    with pytest.raises(ValueError, match="n_forget"):
        su.attack.references_needed(0)
    with pytest.raises(ValueError, match="power"):
        su.attack.references_needed(10, power=1.5)


def test_power_summary_matches_the_decision_interval():
    """The half-width the guidance predicts is the decision's own interval half-width."""
    rng = np.random.default_rng(0)
    scores = rng.normal(-600, 5, size=(5, 20)) + rng.normal(0, 2, size=(5, 1))
    s = null_scale(scores)
    means = np.array([z.mean() for z in loo_null_z(scores)])
    test = null_test(0.3, means, n_constraints=1)
    _, (lo, hi) = decide(test, 2.0)
    summary = power_summary(s, 5, 20)
    assert s == pytest.approx(test.scale)
    assert summary["half_width"] == pytest.approx((hi - lo) / 2)
    assert summary["n_references"] == 5 and summary["margin"] == 2.0


class _Scores:
    """A stand-in ScoreCache holding simulated forget-cell scores of the references."""

    def __init__(self, scores):
        self._scores = scores

    def scores(self, models, group, names, statistic):
        return self._scores[: len(models)]


def _simulated(k, n, shift_sd, seed):
    """``k`` retrains' scores of ``n`` cells: cell effect + a shared model shift + noise."""
    rng = np.random.default_rng(seed)
    base = np.linspace(-700, -600, n)
    return base + rng.normal(0, shift_sd, size=(k, 1)) + rng.normal(0, 3.0, size=(k, n))


def test_reference_power_warning_fires_for_few_references_and_small_disagreeing_sets():
    # 3 references that disagree about a small whole cluster (a shared shift per retrain)
    small = _simulated(3, 8, shift_sd=4.0, seed=1)
    with pytest.warns(ReferencePowerWarning, match="references") as record:
        summary = forget_power([object()] * 3, np.arange(8), _Scores(small))
    assert summary["power"] < 0.8 and summary["n_references"] == 3
    assert "+/-" in str(record[0].message) and "margin of +/-2" in str(record[0].message)
    # many cells, 8 references that agree: no warning
    large = _simulated(8, 200, shift_sd=0.0, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferencePowerWarning)
        summary = forget_power([object()] * 8, np.arange(200), _Scores(large))
    assert summary["power"] >= 0.8 and summary["references_needed"] == 5


# -- end to end: a real exact result ----------------------------------------------------------
def _judge_fast_retrain(model, forget_names, pbmc, target):
    from scvi_unlearn._seeding import isolated_seed

    with isolated_seed(0):
        new = model.unlearn(
            forget_names, method="fast_retrain", seed=0, max_epochs=6, enable_progress_bar=False
        )
    assert set(target.power) >= {"null_scale", "half_width", "power", "references_needed"}
    assert target.power["n_references"] == 3 and "per-cell test" in repr(target)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferencePowerWarning)  # the target already warned
        eq = target.equivalence(new)
    assert eq.exact is True and new.unlearn_record_["method"] == "fast_retrain"
    assert eq.passed == eq.utility_ok
    assert eq.verdict().startswith(("PASS (exact", "FAIL (exact"))
    assert "exact by construction" in eq.verdict()
    table = eq.utility["per_type"]
    assert {"type", "n_cells", "elbo", "low", "high", "floor", "judged", "ok"} <= set(table)
    assert "CD56+ NK" not in set(table["type"])  # the forget cells' type is judged as same type
    assert table["judged"].any()
    assert table.loc[table["judged"], "n_cells"].min() >= su.attack.MIN_TYPE_CELLS
    assert eq.to_frame().iloc[0]["eq_exact"]
    # the original has no record: not exact; exact=False overrides the record
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReferencePowerWarning)
        orig = target.equivalence(model)
        forced = target.equivalence(new, exact=False)
    assert orig.exact is False and not orig.to_frame().iloc[0]["eq_exact"]
    assert forced.exact is False and forced.statistic == eq.statistic
    assert forced.passed == (forced.decision == "equivalent" and forced.utility_ok)


def test_fast_retrain_is_judged_as_exact(trained_model, forget_names, pbmc):
    """Cheap references (5-epoch retrains through ``unlearn``): the judging code path is the
    same as with ``model.retrain_target`` (the slow test below)."""
    refs = [
        trained_model.unlearn(
            forget_names, method="retrain", seed=s, max_epochs=5, enable_progress_bar=False
        )
        for s in (0, 1, 2)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReferencePowerWarning)
        target = su.attack.retrain_target(refs, forget_names, adata=pbmc, attack="threshold")
    _judge_fast_retrain(trained_model, forget_names, pbmc, target)
    assert is_exact(refs[0])  # a reference retrain is exact too (its record says "retrain")


@pytest.mark.slow
def test_fast_retrain_is_judged_as_exact_by_the_model_retrain_target(
    trained_model, forget_names, pbmc
):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReferencePowerWarning)
        target = trained_model.retrain_target(
            forget_names, adata=pbmc, seeds=(0, 1, 2), attack="threshold"
        )
    _judge_fast_retrain(trained_model, forget_names, pbmc, target)
