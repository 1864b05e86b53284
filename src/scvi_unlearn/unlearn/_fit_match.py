"""Fit-matched stopping: train a fresh model until it fits unseen retain cells as the original.

An exact retrain is judged against retrains that replay the original's recipe, and that recipe
sets how well a model fits cells it never trained on: scvi-tools' default (400 epochs up to 20k
cells) over-fits its training cells, so its held-out ELBO is well below what a short, fast
schedule reaches.  A forget cell is a cell the retrains never trained on, so a fast retrain
that generalises *better* than they do fits it better, and the per-cell test reads that as
"remembers" (``docs/fast_unlearning.md``).  :class:`FitMatchStopping` stops the fast schedule at
the first epoch whose mean ELBO on the retain validation cells (unseen by both models, the
cells of the post-unlearning retain check) reaches the original's on the same cells.
"""

from __future__ import annotations

import numpy as np
from lightning.pytorch.callbacks import Callback

from scvi_unlearn.unlearn._guard import mean_elbo, original_validation_scores


class FitMatchStopping(Callback):
    """Stop training after the first epoch whose mean ELBO on ``cells`` reaches ``target``.

    The ELBO is :func:`~scvi_unlearn.unlearn._guard.mean_elbo` (4 posterior draws, seeded, eval
    mode, the caller's random state restored), so evaluating it does not change the training.

    Parameters
    ----------
    manager
        The AnnData manager that ``cells`` index.
    cells
        Positions of the cells scored after every training epoch.
    target
        Mean ELBO (higher is better) at which training stops.
    averaging
        An :class:`~scvi_unlearn.unlearn._averaging.ExponentialAveraging` of the same training:
        its averaged module (what training returns) is scored instead of the current weights.

    Attributes
    ----------
    trace
        The mean ELBO after each epoch.
    stopped_epoch
        Epochs trained when the target was reached, ``None`` if it was not.
    """

    def __init__(self, manager, cells: np.ndarray, target: float, averaging=None):
        self.manager = manager
        self.cells = np.asarray(cells, dtype=int)
        self.target = float(target)
        self.averaging = averaging
        self.trace: list[float] = []
        self.stopped_epoch: int | None = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        module = pl_module.module if self.averaging is None else self.averaging.module
        value = mean_elbo(module, self.manager, self.cells)
        self.trace.append(value)
        if self.stopped_epoch is None and value >= self.target:
            self.stopped_epoch = len(self.trace)
            trainer.should_stop = True


def fit_match_callback(task, averaging=None) -> FitMatchStopping | None:
    """A :class:`FitMatchStopping` whose target is the original's mean ELBO on the retain
    validation cells of ``task`` (scoring ``averaging``'s module when given); ``None`` without
    a validation split."""
    scored = original_validation_scores(task)
    if scored is None:
        return None
    cells, scores = scored
    return FitMatchStopping(task.adata_manager, cells, float(scores.mean()), averaging)
