"""Exponential moving average of the weights during a fast retrain (Polyak averaging).

A high constant learning rate makes the weights jitter from step to step, so where a short
schedule stops -- and how well the model then fits cells it never trained on -- varies from seed
to seed more than among default-recipe retrains.  Averaging the weights over the last few epochs
(Polyak & Juditsky, SIAM J. Control Optim. 1992; the exponential form of
:class:`torch.optim.swa_utils.AveragedModel`) removes most of that jitter.  The average is a
function of the training trajectory on the retain cells only: an exact retrain stays exact.

The jitter is a property of the optimizer steps (learning rate, batch size), not of how many
steps an epoch takes, so the time constant, set in epochs, is capped in steps: at 100,000
simulated cells an epoch is about 490 steps, and an average over 3 epochs lags the weights by
several epochs.
"""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import Callback
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from scvi_unlearn.unlearn.core._arguments import number_argument


def check_average_epochs(average_epochs) -> float | None:
    """``average_epochs`` as a float (``None``: no averaging); a clear error unless > 0
    (:func:`~scvi_unlearn.unlearn.core._arguments.number_argument`)."""
    if average_epochs is None:
        return None
    return number_argument("average_epochs", average_epochs, positive=True)


def steps_per_epoch(trainer, needed_by: str, why: str) -> int:
    """The trainer's training batches an epoch (after ``drop_last`` and
    ``limit_train_batches``; at least 1), or a ``ValueError`` saying that ``needed_by`` needs a
    dataloader of known length, because the steps an epoch takes ``why``."""
    steps = trainer.num_training_batches
    if not math.isfinite(steps):
        raise ValueError(
            f"{needed_by} needs a training dataloader of known length (the steps an epoch "
            f"takes {why})."
        )
    return max(1, int(steps))


def exponential_average(module, tau: float) -> AveragedModel:
    """A copy of ``module`` (weights and buffers) that
    :meth:`~torch.optim.swa_utils.AveragedModel.update_parameters` moves towards the module's
    current values with the decay ``exp(-1 / tau)``: an exponential moving average with a time
    constant of ``tau`` updates."""
    return AveragedModel(
        module, multi_avg_fn=get_ema_multi_avg_fn(math.exp(-1.0 / tau)), use_buffers=True
    )


class ExponentialAveraging(Callback):
    """Keep an exponential moving average of the scVI module's weights and buffers, updated
    after every optimizer step with the decay ``exp(-1 / tau)``, ``tau = min(average_epochs *
    steps_per_epoch, max_steps)`` (a time constant of ``average_epochs`` epochs, at most
    ``max_steps`` steps; ``steps_per_epoch`` is the trainer's count of training batches, known
    when training starts), and load it into the module when training ends (integer buffers,
    BatchNorm's batch counters, keep their trained values).

    Parameters
    ----------
    average_epochs
        Time constant of the average, in epochs.
    max_steps
        Upper bound of the time constant, in optimizer steps (``None``: none).

    Attributes
    ----------
    module
        The averaged module (``None`` before training starts): what training returns, so what
        :class:`~scvi_unlearn.unlearn.core._fit_match.FitMatchStopping` scores.
    decay
        The per-step decay (``None`` before training starts).
    """

    def __init__(self, average_epochs: float, max_steps: int | None = None):
        self.average_epochs = float(average_epochs)
        self.max_steps = max_steps
        self.decay: float | None = None
        self._averaged: AveragedModel | None = None

    @property
    def module(self):
        return None if self._averaged is None else self._averaged.module

    def on_train_start(self, trainer, pl_module) -> None:
        steps = steps_per_epoch(trainer, "average_epochs", "set the average's time constant")
        tau = self.average_epochs * steps
        if self.max_steps is not None:
            tau = min(tau, float(self.max_steps))
        self.decay = math.exp(-1.0 / tau)
        self._averaged = exponential_average(pl_module.module, tau)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._averaged.update_parameters(pl_module.module)

    def on_train_end(self, trainer, pl_module) -> None:
        current = pl_module.module.state_dict()
        averaged = self._averaged.module.state_dict()
        # floating-point tensors averaged; counters (BatchNorm's num_batches_tracked) as trained
        pl_module.module.load_state_dict(
            {k: v if v.is_floating_point() else current[k] for k, v in averaged.items()}
        )
        self._averaged = None
