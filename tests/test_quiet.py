"""Internal fits are quiet: ``unlearn()`` prints none of Lightning's per-fit notes, keeps the
package's own warnings, and leaves the logging levels and warning filters as it found them."""

from __future__ import annotations

import logging
import warnings

import pytest

from scvi_unlearn._quiet import _LOGGERS, internal_fit
from scvi_unlearn.unlearn import UnlearningWarning

QUIET = {"enable_progress_bar": False}


class _Collect(logging.Handler):
    """Every record that reaches Lightning's loggers (attached to each: a logger that does not
    propagate, or a level another test left on the root, cannot hide one)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self._records: list[logging.LogRecord] = []

    def emit(self, record):
        # a propagated record reaches the parents' handler too: count each record once
        if not any(seen is record for seen in self._records):
            self._records.append(record)
            self.messages.append(record.getMessage())


@pytest.fixture
def lightning_messages():
    collect = _Collect()
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(collect)
        logger.setLevel(logging.INFO)
    yield collect.messages
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(collect)
        logger.setLevel(level)


def test_unlearn_prints_no_lightning_notes(trained_model, forget_names, lightning_messages):
    levels = [logging.getLogger(name).level for name in _LOGGERS]
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained_model.unlearn(forget_names, method="finetune", max_epochs=1, seed=0, **QUIET)
    assert lightning_messages == []
    notes = [
        w for w in caught if "logging interval" in str(w.message) or "LeafSpec" in str(w.message)
    ]
    assert notes == []
    assert [logging.getLogger(name).level for name in _LOGGERS] == levels
    assert warnings.filters == filters


def test_a_users_own_fit_is_left_alone(lightning_messages):
    """Outside the context Lightning's notes come through (the control of the test above)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
    with internal_fit():
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("hidden")
    assert lightning_messages == ["GPU available: False"]


def test_the_packages_warnings_stay_visible(trained_model, forget_names):
    """A degraded result still warns inside the quiet request."""
    with pytest.warns(UnlearningWarning):
        # one epoch of a fresh model fits the retain cells far worse than the original
        trained_model.unlearn(
            forget_names, method="fast_retrain", max_epochs=1, match_fit=False, seed=0, **QUIET
        )
