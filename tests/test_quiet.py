"""Internal fits are quiet: ``unlearn()`` prints none of Lightning's per-fit notes, keeps the
package's own warnings, and leaves the logging levels and warning filters as it found them."""

from __future__ import annotations

import logging
import warnings

import pytest

from scvi_unlearn._quiet import _LOGGERS, internal_fit
from scvi_unlearn.unlearn import UnlearningWarning

QUIET = {"enable_progress_bar": False}


def _lightning_records(caplog):
    return [r for r in caplog.records if r.name.startswith("lightning")]


def test_unlearn_prints_no_lightning_notes(trained_model, forget_names, caplog):
    levels = [logging.getLogger(name).level for name in _LOGGERS]
    filters = list(warnings.filters)
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained_model.unlearn(forget_names, method="finetune", max_epochs=1, seed=0, **QUIET)
    assert _lightning_records(caplog) == []
    notes = [
        w for w in caught if "logging interval" in str(w.message) or "LeafSpec" in str(w.message)
    ]
    assert notes == []
    assert [logging.getLogger(name).level for name in _LOGGERS] == levels
    assert warnings.filters == filters


def test_a_users_own_fit_is_left_alone(caplog):
    """Outside the context Lightning's notes come through (the control of the test above)."""
    with caplog.at_level(logging.INFO):
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
        with internal_fit():
            logging.getLogger("lightning.pytorch.utilities.rank_zero").info("hidden")
    assert [r.getMessage() for r in _lightning_records(caplog)] == ["GPU available: False"]


def test_the_packages_warnings_stay_visible(trained_model, forget_names):
    """A degraded result still warns inside the quiet request."""
    with pytest.warns(UnlearningWarning):
        # one epoch of a fresh model fits the retain cells far worse than the original
        trained_model.unlearn(
            forget_names, method="fast_retrain", max_epochs=1, match_fit=False, seed=0, **QUIET
        )
