"""Fit-matched stopping: train a fresh model until it fits unseen retain cells as the original.

An exact retrain is judged against retrains that replay the original's recipe, and that recipe
sets how well a model fits cells it never trained on: scvi-tools' default (400 epochs up to 20k
cells) over-fits its training cells, so its held-out ELBO is well below what a short, fast
schedule reaches.  A forget cell is a cell the retrains never trained on, so a fast retrain
that generalises *better* than they do fits it better, and the per-cell test reads that as
"remembers" (``docs/fast_unlearning.md``).  :class:`FitMatchStopping` stops the fast schedule at
the first check whose mean ELBO on the retain validation cells (unseen by both models, the
cells of the post-unlearning retain check) reaches the original's on the same cells.  On large
data an epoch is hundreds of steps, so the fit is checked several times an epoch (at most every
``check_steps`` steps) and training may stop mid-epoch.
"""

from __future__ import annotations

import math

import numpy as np
from lightning.pytorch.callbacks import Callback

from scvi_unlearn.unlearn.core._averaging import steps_per_epoch
from scvi_unlearn.unlearn.core._guard import _CHECK_DRAWS as CHECK_DRAWS
from scvi_unlearn.unlearn.core._guard import (
    cell_elbos,
    original_validation_scores,
    validation_cells,
)


class FitMatchStopping(Callback):
    """Stop training at the first check whose mean ELBO on ``cells`` reaches ``target`` (and,
    with ``tail``, whose mean ELBO on the tail cells reaches the tail's target).

    The fit is checked after every epoch or, when an epoch has more than ``check_steps``
    optimizer steps, ``ceil(steps_per_epoch / check_steps)`` times an epoch, evenly spaced, the
    last at the epoch's end.

    The ELBO is :func:`~scvi_unlearn.unlearn.core._guard.cell_elbos` (4 posterior draws, seeded,
    eval mode, the caller's random state restored), so evaluating it does not change the
    training.

    Parameters
    ----------
    manager
        The AnnData manager that ``cells`` index.
    cells
        Positions of the cells scored after every training epoch.
    target
        Mean ELBO (higher is better) at which training stops.
    averaging
        An :class:`~scvi_unlearn.unlearn.core._averaging.ExponentialAveraging` of the same
        training: its averaged module (what training returns) is scored instead of the current
        weights.
    check_steps
        Most optimizer steps between two checks (``None``: once an epoch).
    tail
        ``(positions, target)``: positions in ``cells`` of a subset whose mean ELBO must also
        reach ``target`` (:func:`fit_match_callback`'s lower tail); ``None``: the mean only.

    Attributes
    ----------
    trace
        The mean ELBO at each check.
    tail_trace
        The tail cells' mean ELBO at each check (empty without ``tail``).
    steps
        Optimizer steps trained (until the target was reached, or all of them).
    steps_per_epoch
        Training batches an epoch (``None`` before training starts).
    stopped_step
        Steps trained when the target was reached, ``None`` if it was not.
    """

    def __init__(
        self,
        manager,
        cells: np.ndarray,
        target: float,
        averaging=None,
        check_steps=None,
        tail: tuple[np.ndarray, float] | None = None,
    ):
        self.manager = manager
        self.cells = np.asarray(cells, dtype=int)
        self.target = float(target)
        self.averaging = averaging
        self.check_steps = check_steps
        self.tail = None if tail is None else (np.asarray(tail[0], dtype=int), float(tail[1]))
        self.trace: list[float] = []
        self.tail_trace: list[float] = []
        self.steps = 0
        self.steps_per_epoch: int | None = None
        self.stopped_step: int | None = None
        self._checked_batches: frozenset[int] = frozenset()

    @property
    def epochs(self) -> float:
        """Epochs trained (a fraction when training stopped mid-epoch; 0 before it starts)."""
        return self.steps / self.steps_per_epoch if self.steps_per_epoch else 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.steps_per_epoch = steps_per_epoch(trainer, "match_fit", "place the fit checks")
        n = 1 if self.check_steps is None else math.ceil(self.steps_per_epoch / self.check_steps)
        # batch positions (1-based) after which the fit is checked; the last is the epoch's end
        self._checked_batches = frozenset(
            math.ceil(k * self.steps_per_epoch / n) for k in range(1, n + 1)
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.stopped_step is not None:
            return
        self.steps += 1
        if batch_idx + 1 not in self._checked_batches:
            return
        module = pl_module.module if self.averaging is None else self.averaging.module
        scores = cell_elbos(module, self.manager, self.cells)
        value = float(scores.mean())
        self.trace.append(value)
        if self.tail is not None:
            self.tail_trace.append(float(scores[self.tail[0]].mean()))
        reached = self.reached(value)
        if trainer.world_size > 1:
            # BatchNorm statistics differ between DDP processes, so their scores may too: all
            # stop on rank 0's decision (a process stopping alone would leave the others waiting)
            reached = bool(trainer.strategy.broadcast(reached, src=0))
        if reached:
            self.stopped_step = self.steps
            trainer.should_stop = True

    def reached(self, value: float) -> bool:
        """Whether training stops after a check that scored ``value`` (its :attr:`trace` already
        holds it, :attr:`tail_trace` the tail's): the original's fit is reached, on all the
        cells and on the tail."""
        if self.tail is not None and self.tail_trace[-1] < self.tail[1]:
            return False
        return value >= self.target


class PlateauStopping(FitMatchStopping):
    """Stop training when the new model's own fit of ``cells`` stops improving (strict mode).

    The checks are :class:`FitMatchStopping`'s, but nothing is read from the original: training
    stops at the first check after which the best mean ELBO so far has not improved by more than
    ``min_delta`` (relative to its magnitude) for ``patience`` checks -- the retain validation
    cells' own plateau, the early stopping of Prechelt (1998, "Early Stopping -- But When?") --
    or at the budget.  The result then depends on the retain cells and the seed only.

    Parameters
    ----------
    manager, cells, averaging, check_steps
        As :class:`FitMatchStopping`.
    patience
        Checks without improvement before stopping (>= 1).
    min_delta
        Smallest relative improvement of the best mean ELBO that counts (>= 0).
    """

    def __init__(
        self, manager, cells, averaging=None, check_steps=None, patience=10, min_delta=1e-3
    ):
        super().__init__(manager, cells, np.nan, averaging, check_steps)
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best = -np.inf
        self._since_best = 0

    def reached(self, value: float) -> bool:
        if value > self.best + self.min_delta * abs(self.best if np.isfinite(self.best) else 0):
            self.best, self._since_best = value, 0
            return False
        self._since_best += 1
        return self._since_best >= self.patience


def fit_match_callback(
    task, averaging=None, check_steps=None, batch_size: int = 128, tail: float = 0.0
) -> FitMatchStopping | None:
    """A :class:`FitMatchStopping` whose target is the original's mean ELBO on the retain
    validation cells of ``task`` (scoring ``averaging``'s module when given); ``None`` without
    a validation split.

    With ``tail`` in (0, 1), the fraction ``tail`` of these cells that the original fits worst
    (at least one cell) must also reach the original's mean ELBO on them: a model matched on
    the mean alone can fit the abundant cells better and the rare ones worse than the original
    (``fast_retrain``'s ``match_tail``).

    The checks are at most ``check_steps`` steps apart but at least ``cells x draws /
    batch_size``: a check passes each scored cell forward ``draws`` (4) times, a training step
    passes ``batch_size`` cells forward and backward (about 3 forward passes), so checking
    costs at most about a third of the training between checks (2,048 cells: 64 steps at the
    default batch of 128).
    """
    scored = original_validation_scores(task)
    if scored is None:
        return None
    cells, scores = scored
    check_steps = check_interval(check_steps, cells.size, batch_size)
    target = float(scores.mean())
    return FitMatchStopping(
        task.adata_manager, cells, target, averaging, check_steps, lower_tail(scores, tail)
    )


def lower_tail(scores: np.ndarray, fraction: float) -> tuple[np.ndarray, float] | None:
    """``(positions, mean)`` of the ``ceil(fraction * n)`` lowest ``scores`` (ties by
    position), ``None`` when ``fraction`` is 0."""
    if not 0 <= fraction < 1:
        raise ValueError(f"the tail fraction must be in [0, 1), got {fraction!r}.")
    if fraction == 0:
        return None
    n = max(1, math.ceil(fraction * scores.size))
    positions = np.argsort(scores, kind="stable")[:n]
    return positions, float(scores[positions].mean())


def plateau_callback(
    task,
    averaging=None,
    check_steps=None,
    batch_size: int = 128,
    patience: int = 10,
    min_delta: float = 1e-3,
) -> PlateauStopping | None:
    """A :class:`PlateauStopping` on the retain validation cells of ``task`` (the cells fit
    matching scores, checked as often), reading nothing from the original; ``None`` without a
    validation split."""
    cells = validation_cells(task)
    if cells is None:
        return None
    check_steps = check_interval(check_steps, cells.size, batch_size)
    return PlateauStopping(task.adata_manager, cells, averaging, check_steps, patience, min_delta)


def check_interval(check_steps: int | None, n_cells: int, batch_size: int) -> int | None:
    """``check_steps``, raised to ``ceil(n_cells * draws / batch_size)`` (see
    :func:`fit_match_callback`); ``None`` stays ``None`` (once an epoch)."""
    if check_steps is None:
        return None
    return max(int(check_steps), math.ceil(n_cells * CHECK_DRAWS / batch_size))
