"""Quiet internal fits: Lightning's per-fit notes, for trainings the user did not call.

``model.unlearn()``, the reference retrains of an audit, and the originals that
``su.benchmark.run`` and the toy simulations train each run one or more Lightning fits inside a
single call; each fit would print Lightning's notes (the accelerators found, a tip,
"``Trainer.fit`` stopped", a logging interval longer than a short epoch, a deprecation inside
Lightning itself) as if the user had started it.  :func:`internal_fit` silences exactly those
notes for the duration of the call and restores the logging levels and warning filters after;
every other warning, including the package's own (e.g. :class:`UnlearningWarning`), stays
visible.  A training the user starts (``model.train()``) is left as scvi-tools makes it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

#: loggers of Lightning's informational notes (accelerators found, tips, why a fit stopped)
_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero")
#: Lightning's per-fit warnings that say nothing about the request (regular expressions)
_NOTES = (
    r".*is smaller than the logging interval",
    r".*does not have many workers",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated",
    # the plans of the approximate methods hold the original as a frozen teacher in eval mode
    r".*module\(s\) in eval mode at the start of training",
)


@contextlib.contextmanager
def internal_fit():
    """Silence Lightning's per-fit notes (info logs and :data:`_NOTES` warnings) inside."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for message in _NOTES:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
