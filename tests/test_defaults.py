"""Defaults that hold beyond their tuning setting (issue #12, item 5): the retain-ELBO check's
2% tolerance, its cells, and ``fisher``'s noise scale calibrated from the model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import scvi_unlearn as su

QUIET = {"enable_progress_bar": False}


def _noise_entry(model) -> dict:
    return [e for e in model.unlearn_record_["log"] if "noise_rms" in e][-1]


def test_retain_tolerance_is_the_utility_goal():
    assert su.unlearn.RETAIN_TOLERANCE == 0.02


def test_fisher_with_a_huge_alpha_is_caught(trained_model, forget_names):
    """The reported failure: fisher's noise wrecks the model; by default unlearn stops it."""
    with pytest.raises(su.unlearn.UnlearningError, match="worse than the original"):
        trained_model.unlearn(forget_names, method="fisher", alpha=1e-3)
    with pytest.warns(su.unlearn.UnlearningWarning, match="worse than the original"):
        new = trained_model.unlearn(
            forget_names, method="fisher", alpha=1e-3, on_degradation="warn"
        )
    checks = new.unlearn_record_["checks"]
    assert checks["passed"] is False and checks["relative_drop"] > 0.02
    assert checks["independent"] is True  # measured on the retain validation cells


def test_a_drop_between_2_and_5_percent_is_caught(trained_model, forget_names):
    """The former 5% tolerance let such drops through silently."""
    with pytest.warns(su.unlearn.UnlearningWarning, match="tolerance 2%"):
        new = trained_model.unlearn(
            forget_names, method="fisher", noise_budget=0.04, seed=0, on_degradation="warn"
        )
    drop = new.unlearn_record_["checks"]["relative_drop"]
    assert 0.02 < drop < 0.05, drop
    assert new.unlearn_record_["checks"]["passed"] is False
    with pytest.raises(su.unlearn.UnlearningError, match="worse than the original"):
        trained_model.unlearn(
            forget_names, method="fisher", noise_budget=0.04, seed=0
        )  # the default for a method that edits the original


def test_check_stops_unless_the_drop_is_within_tolerance_with_confidence(
    trained_model, forget_names
):
    """The decision uses the one-sided 95% bound of the drop (paired per-cell standard error),
    not the point drop: a run whose point drop is inside the tolerance but whose bound is not
    is stopped, and the record holds both."""
    new = trained_model.unlearn(
        forget_names, method="fisher", noise_budget=0.01, seed=0, on_degradation="warn"
    )
    c = new.unlearn_record_["checks"]
    assert c["relative_drop_se"] > 0 and c["n_cells"] >= su.unlearn.MIN_CHECK_CELLS
    bound = c["relative_drop"] + su.unlearn.CHECK_Z * c["relative_drop_se"]
    assert c["relative_drop_upper"] == pytest.approx(bound)
    # a tolerance between the point drop and the bound: not confidently within it
    tolerance = c["relative_drop"] + 0.5 * (bound - c["relative_drop"])
    assert tolerance > 0
    with pytest.raises(su.unlearn.UnlearningError, match="one-sided 95% bound"):
        trained_model.unlearn(
            forget_names, method="fisher", noise_budget=0.01, seed=0, retain_tolerance=tolerance
        )
    ok = trained_model.unlearn(
        forget_names, method="fisher", noise_budget=0.01, seed=0, retain_tolerance=1.01 * bound
    )
    assert ok.unlearn_record_["checks"]["passed"] is True


def test_retain_confidence_sets_the_bound(trained_model, forget_names):
    """``retain_confidence`` is the level of the one-sided bound: 0.5 is the point drop, a
    higher level a wider bound; the level is recorded and bad values fail before any work."""
    kw = {"method": "fisher", "noise_budget": 0.01, "seed": 0, "on_degradation": "warn"}
    checks = {
        c: trained_model.unlearn(forget_names, retain_confidence=c, **kw).unlearn_record_["checks"]
        for c in (0.5, 0.95, 0.99)
    }
    assert checks[0.5]["relative_drop_upper"] == pytest.approx(checks[0.5]["relative_drop"])
    assert checks[0.95]["confidence"] == 0.95
    assert checks[0.95]["relative_drop_upper"] == pytest.approx(
        checks[0.95]["relative_drop"] + su.unlearn.CHECK_Z * checks[0.95]["relative_drop_se"]
    )
    assert (
        checks[0.5]["relative_drop_upper"]
        < checks[0.95]["relative_drop_upper"]
        < checks[0.99]["relative_drop_upper"]
    )
    assert su.unlearn.CHECK_Z == pytest.approx(1.645, abs=1e-3)
    # a tolerance between the 95% and the 99% bound: passes at 95%, stopped at 99%
    tolerance = 0.5 * (checks[0.95]["relative_drop_upper"] + checks[0.99]["relative_drop_upper"])
    kw.pop("on_degradation")
    trained_model.unlearn(forget_names, retain_tolerance=tolerance, **kw)
    with pytest.raises(su.unlearn.UnlearningError, match="one-sided 99% bound"):
        trained_model.unlearn(
            forget_names, retain_tolerance=tolerance, retain_confidence=0.99, **kw
        )
    for bad in (0.4, 1.0, float("nan"), "0.9", True):
        with pytest.raises(ValueError, match="retain_confidence"):
            trained_model.unlearn(forget_names, retain_confidence=bad, **kw)


def test_fisher_default_noise_is_calibrated_to_the_budget(trained_model, forget_names):
    with warnings.catch_warnings():
        warnings.simplefilter("error", su.unlearn.UnlearningWarning)
        new = trained_model.unlearn(forget_names, method="fisher", seed=0)
    entry = _noise_entry(new)
    assert new.unlearn_record_["hyperparameters"]["alpha"] is None
    assert entry["alpha"] > 0 and entry["noise_rms"] > 0
    assert 0 < entry["calibration_drop"] <= 0.01
    assert new.unlearn_record_["checks"]["passed"] is True
    # a smaller budget gives less noise; an explicit alpha is used as given (no calibration)
    small = trained_model.unlearn(forget_names, method="fisher", seed=0, noise_budget=0.002)
    assert _noise_entry(small)["alpha"] < entry["alpha"]
    fixed = trained_model.unlearn(forget_names, method="fisher", seed=0, alpha=2e-5)
    assert _noise_entry(fixed)["alpha"] == 2e-5 and "calibration_drop" not in _noise_entry(fixed)


def test_fisher_calibrated_alpha_is_reproducible(trained_model, forget_names):
    a = trained_model.unlearn(forget_names, method="fisher", seed=4)
    b = trained_model.unlearn(forget_names, method="fisher", seed=4)
    assert _noise_entry(a)["alpha"] == _noise_entry(b)["alpha"]
    for (k, v), w in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        assert torch.equal(v, w), k


@pytest.mark.parametrize("budget", [0.0, 1.0, -0.1])
def test_fisher_rejects_a_bad_noise_budget(trained_model, forget_names, budget):
    with pytest.raises(ValueError, match="noise_budget"):
        trained_model.unlearn(forget_names, method="fisher", noise_budget=budget)


def test_check_without_validation_cells_says_it_is_not_independent(fresh_train, forget_names):
    from scvi_unlearn._seeding import isolated_seed

    with isolated_seed(0):
        model = su.SCVI(fresh_train, n_latent=5, n_hidden=32)
        model.train(max_epochs=3, train_size=1.0, **QUIET)
    new = model.unlearn(forget_names, method="ssd")
    checks = new.unlearn_record_["checks"]
    assert checks["independent"] is False
    assert checks["retain_cells"] == "retain training cells (no validation split)"
    assert np.isfinite(checks["relative_drop"])


def test_fast_retrain_match_fit_without_validation_cells_trains_its_budget(
    fresh_train, forget_names
):
    """Without a validation split there is no unseen fit to match: a warning that says so,
    and the full budget."""
    from scvi_unlearn._seeding import isolated_seed

    with isolated_seed(0):
        model = su.SCVI(fresh_train, n_latent=5, n_hidden=32)
        model.train(max_epochs=3, train_size=1.0, **QUIET)
    with pytest.warns(UserWarning, match="no unseen fit to match"):
        new = model.unlearn(
            forget_names,
            method="fast_retrain",
            match_fit=True,
            max_epochs=3,
            on_degradation="auto",
            **QUIET,
        )
    assert len(new.history_["elbo_train"]) == 3
    assert "epochs" not in new.unlearn_record_["budget"]


def test_check_cells_score_held_out_cells(trained_model, forget_names, pbmc):
    """``check_cells``: the check scores cells the user holds out instead of the validation
    split; a destroyed model is still stopped."""
    held = pbmc[(pbmc.obs["membership"] == "heldout") & (pbmc.obs["cell_type"] != "CD56+ NK")]
    before = held.copy()
    new = trained_model.unlearn(
        forget_names, method="fisher", seed=0, check_cells=held, on_degradation="warn"
    )
    checks = new.unlearn_record_["checks"]
    assert checks["retain_cells"] == f"check_cells ({held.n_obs} cells, unseen by both)"
    assert checks["independent"] is True and np.isfinite(checks["relative_drop"])
    default = trained_model.unlearn(forget_names, method="fisher", seed=0, on_degradation="warn")
    assert default.unlearn_record_["checks"]["relative_drop"] != checks["relative_drop"]
    with pytest.raises(su.unlearn.UnlearningError, match="check_cells"):
        trained_model.unlearn(forget_names, method="fisher", alpha=1e-3, check_cells=held)
    # the user's cells are not modified (scored on a registered copy)
    assert held.obs_names.equals(before.obs_names) and list(held.obs) == list(before.obs)
    assert (held.layers["counts"] != before.layers["counts"]).nnz == 0


def test_check_cells_bad_input(trained_model, forget_names, pbmc, pbmc_train):
    held = pbmc[pbmc.obs["membership"] == "heldout"]
    with pytest.raises(ValueError, match="check_cells are in the training set"):
        trained_model.unlearn(forget_names, method="ssd", check_cells=pbmc_train)
    with pytest.raises(ValueError, match="at least 16"):
        trained_model.unlearn(forget_names, method="ssd", check_cells=held[:3])
    with pytest.raises(TypeError, match="check_cells must be an AnnData"):
        trained_model.unlearn(forget_names, method="ssd", check_cells=list(held.obs_names))
