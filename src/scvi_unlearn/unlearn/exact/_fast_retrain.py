"""``fast_retrain``: exact unlearning with a compute-efficient training schedule.

An exact retrain never sees a forget cell, so it is private by construction; what makes it
expensive is scvi-tools' default recipe (Adam at lr 1e-3, KL warm-up over 400 epochs, 400
epochs up to 20k cells), which is far from compute-optimal on small and medium data.  This method
trains a fresh model of the same architecture on the retain cells only, with a short schedule:
KL weight 1 from the first step (no warm-up), a high constant Adam learning rate, the weights
averaged over the last few epochs (:mod:`~scvi_unlearn.unlearn.core._averaging`), stopped when the
new model fits unseen retain cells as well as the original does
(:mod:`~scvi_unlearn.unlearn.core._fit_match`), at most a budget proportional to the original's
epochs."""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

from scvi.train import TrainingPlan
from torch.optim.lr_scheduler import CosineAnnealingLR

from scvi_unlearn.unlearn.core._arguments import int_argument, number_argument
from scvi_unlearn.unlearn.core._averaging import ExponentialAveraging, check_average_epochs
from scvi_unlearn.unlearn.core._devices import split_over_processes
from scvi_unlearn.unlearn.core._fit_match import fit_match_callback, plateau_callback
from scvi_unlearn.unlearn.core._guard import MIN_CHECK_CELLS
from scvi_unlearn.unlearn.core._registry import register


class CosineTrainingPlan(TrainingPlan):
    """scvi-tools' :class:`~scvi.train.TrainingPlan` with the learning rate decayed to 0 by a
    cosine over ``total_epochs`` (Loshchilov & Hutter, "SGDR", ICLR 2017)."""

    def __init__(self, module, *, total_epochs: int, **kwargs):
        super().__init__(module, **kwargs)
        self.total_epochs = int(total_epochs)

    def configure_optimizers(self):
        config = super().configure_optimizers()
        config["lr_scheduler"] = {
            "scheduler": CosineAnnealingLR(config["optimizer"], T_max=max(1, self.total_epochs)),
            "interval": "epoch",
        }
        return config


def fast_budget(
    original_epochs: int,
    epoch_fraction: float,
    min_epochs: int,
    *,
    at_most_original: bool = False,
) -> int:
    """Epochs of a fast retrain: ``ceil(epoch_fraction * original_epochs)``, at least
    ``min_epochs`` -- and, with ``at_most_original``, at most ``original_epochs``."""
    epochs = max(int(min_epochs), int(math.ceil(epoch_fraction * original_epochs)))
    return min(epochs, int(original_epochs)) if at_most_original else epochs


@register(
    "fast_retrain",
    from_scratch=True,
    guarantee=(
        "exact: a fresh model on the retain cells only with a fast schedule; depends on "
        "the retain cells, the seed and (match_fit=True, the default) one number of the "
        "original, its retain validation ELBO, which only picks the stop step (at most "
        "log2(max steps) bits); strict=True: the retain cells and the seed only"
    ),
    reference="retrain from scratch (Bourtoule et al. 2021), with a compute-efficient schedule",
    measured=(
        "judged as exact (utility): 54/54 runs, pbmc68k's six forget sets x originals of 60 / "
        "200 / 400 epochs x 3 seeds, 11-40 epochs; 6/6 on 5,000 simulated cells, 0.012-0.015x "
        "the original's training; 5/6 on 20,000 at 0.018-0.021x and 5/6 on 100,000 at "
        "0.009-0.011x (each miss: one seed fits the rarest type 2.5-2.8% below the retrains; "
        "strict=True 6/6 at 0.036x and 0.027-0.031x) (benchmarks/RESULTS.md, stop_rules, "
        "simulated_matrix)"
    ),
    benchmark=True,
)
def fast_retrain(
    task,
    *,
    epoch_fraction: float = 0.15,
    min_epochs: int = 30,
    max_epochs: int | None = None,
    lr: float = 1.2e-2,
    schedule: str = "constant",
    batch_size: int = 128,
    kl_warmup: bool = False,
    kl_weight: float | str = 1.0,
    match_fit: bool = True,
    match_tail: float = 0.1,
    strict: bool = False,
    patience: int = 10,
    min_delta: float = 1e-3,
    average_epochs: float | None = 3.0,
    max_average_steps: int | None = 60,
    check_steps: int | None = 20,
    accelerator: str = "auto",
    devices: Any = "auto",
    enable_progress_bar: bool = True,
    **trainer_kwargs,
):
    """Exact unlearning: a fresh model on the retain cells with a short, fast schedule.

    Same architecture (``init_params_``), same registry and the same train / validation roles
    of the retain cells as the original (:func:`~scvi_unlearn.unlearn.retrain`), but instead of
    replaying the recorded recipe it trains with KL weight 1 from the start (or warmed up over
    the budget, ``kl_warmup``) and Adam at a high, constant (or cosine-decayed) learning rate,
    until it fits the retain validation cells as the original does (``match_fit``), its weights
    averaged over the last few epochs (``average_epochs``).  No forget
    cell is ever seen and no weight is copied: exact by construction (the "retrain from
    scratch" of Bourtoule et al. 2021, with a compute-efficient schedule).

    **What the result depends on**: the retain cells, the seed and, with ``match_fit``, one
    number read from the original -- its mean ELBO on the retain validation cells -- which only
    chooses the stop step.  That channel carries at most ``log2(max steps)`` bits about the
    whole original training set, forget cells included.  Tested in ``tests/test_exactness.py``:
    two originals trained on data that differ only in the forget cells' counts give
    bit-identical weights under a fixed stop (``match_fit=False``), with fit matching each equals
    the other's fixed-budget run at its stop step, and no forget cell is read during the request.

    Parameters
    ----------
    task
        The :class:`~scvi_unlearn.unlearn.UnlearningTask`.
    epoch_fraction, min_epochs
        Budget: ``min(E, max(min_epochs, ceil(epoch_fraction * E)))`` epochs over the retain
        training cells, with ``E`` the original's recorded epochs; with ``match_fit`` a cap.  A
        fraction of the original's own budget, so it follows scvi-tools' epoch heuristic (fewer
        epochs at scale), at least ``min_epochs`` (4 minibatches an epoch on pbmc68k's 469 retain
        cells need 20-30 epochs to reach the original's fit) and never more epochs than the
        original trained (scvi-tools trains 8 epochs at 1M cells; ``docs/fast_unlearning.md``).
    max_epochs
        Fixed number of epochs (a cap with ``match_fit``) instead of the budget rule.
    lr
        Adam learning rate at the start of the schedule.
    schedule
        ``"constant"`` or ``"cosine"`` (decay to 0 over the budget; measured worse at this
        budget, see Notes).
    batch_size
        Retain cells per minibatch.
    kl_warmup
        ``False`` (default): KL weight 1 from the first step.  ``True``: the KL weight rises
        linearly from 0 to 1 over the whole budget, as scvi-tools' default recipe warms it up
        over 400 epochs (a compressed copy of the original's schedule).  Not the default: on
        5,000 simulated cells (``python -m benchmarks run verdict --config scale_warmup``,
        docs/fast_unlearning.md) it brings the fit closer to default-recipe retrains (other
        types +0.6% to +0.8% better than theirs instead of +1.3% to +1.7%) but passes the
        per-cell verdict in 1 of 6 runs at 60 epochs (the full budget without it: 0 of 6).
    kl_weight
        Weight of the KL term during training (a number in (0, 1]; the warm-up's end with
        ``kl_warmup``), or ``"original"``: the weight of the original's last epoch, from its
        recorded warm-up (:func:`original_kl_weight`; scvi-tools warms it up over 400 epochs,
        so a 200-epoch original ends at 0.50 and its retrains too).  Default 1: the ELBO the
        per-cell test scores.  ``"original"`` is not the default: fit-matched on pbmc68k
        (``python -m benchmarks run verdict --config kl_original``, 6 forget
        sets, seeds 0-2) it passes 13/18 vs 10/18 on the 200-epoch original (CD34+ 3/3 vs 2/3)
        but 4/18 vs 5/18 on the 60-epoch one, and costs 10-40% more (it needs more epochs to
        reach the original's fit).
    match_fit
        ``True`` (default): after every epoch (several times an epoch on large data,
        ``check_steps``), score the retain validation cells (unseen by the original and by this
        model; the cells, 4 seeded posterior draws and sample of the post-unlearning retain check)
        and stop at the first check whose mean ELBO reaches the original's on the same cells; the
        epochs trained (a fraction when it stopped mid-epoch) and optimizer steps are recorded as
        ``unlearn_record_["budget"]["epochs"]`` and ``["steps"]``.  Without a validation split
        (``train(train_size=1)``) it warns and trains the budget.  ``False``: always train the
        budget.  What the new model takes from the original is this one number, its mean ELBO on
        retain cells, which decides when training stops.
    match_tail
        With ``match_fit``, a fraction in [0, 1): the ``match_tail`` of the retain validation
        cells the original fits worst must also be fit, on average, as the original fits them
        before training stops (0: the mean only).  Still one stop step taken from the original
        (the same channel).  Matched on the mean alone, the fast model can fit the abundant
        types better and the rarest ones worse than the original's recipe does.  Default 0.1,
        measured (``python -m benchmarks run verdict --config stop_rules``, with
        ``--set original_epochs=60`` / ``400``; judged as exact, seeds 0-2): pbmc68k's six forget
        sets x originals of 60 / 200 / 400 epochs, 54/54 passed against 52/54 for the mean only
        (the two failures: random 50, the held-out cells of the two rarest types, which none of
        the 50 belongs to, 2.2% and 3.0% below the retrains; 1.5% and 1.2% with the tail), 53/54
        with 0.25 and 52/54 with 0.5, at 6-19% more epochs than the mean only; 5,000 simulated
        cells, random 50 and the 134 NK cells, 6/6, the same stop as the mean only.  Simulated
        20,000 and 100,000 cells (``python -m benchmarks run verdict --config simulated_matrix
        --set cells=...``, 3 retrains a set): 5/6 at 0.018-0.021x and 5/6 at 0.009-0.011x the
        original's training, and 0, 0.25 and 0.5 fail the same run (one seed fits the rarest
        other type 2.5% and 2.8% below the retrains; the tail rules stop within a check of each
        other there); ``strict`` passes 6/6.
    strict
        ``True``: read nothing from the original's fit -- stop at the plateau of the new
        model's own mean ELBO on the same retain validation cells, checked as fit matching
        checks (:class:`~scvi_unlearn.unlearn.core._fit_match.PlateauStopping`), or at the
        budget; ``match_fit`` is then ignored.  The result depends on the retain cells and the
        seed only (and the original's recorded epoch count, which sets the budget).  Judged as
        exact it passed every run measured -- pbmc68k 54/54 at up to 2.9x the default's epochs,
        simulated 20,000 cells 6/6 at 0.036x the original's training, 100,000 cells 6/6 at
        0.027-0.031x -- including the rare-type run the default misses at each size
        (``match_tail``).  Not the default: at 100,000 cells it costs 2.8x the default and
        misses the 0.02x goal.  Use it when every rare type must keep the retrains' fit.
    patience, min_delta
        Strict mode's plateau: stop after ``patience`` checks in which the best mean ELBO did not
        improve by more than ``min_delta`` of its magnitude.  Default 10 checks, 0.1%: the fast
        schedule's validation fit has an early plateau before a second descent (pbmc68k, 200-epoch
        original, 6 forget sets x seeds 0-2: it lasts up to 8 checks, from about the 4th to the
        14th epoch); 3 checks stopped there in 9 of 18 runs, 7-11 epochs in, 5.8-11.1% below the
        retrains' held-out fit, while every run that trained 28 epochs or more passed (``python -m
        benchmarks run verdict --config exact_matrix``; docs/fast_unlearning.md).
    average_epochs
        Time constant, in epochs, of an exponential moving average of the weights (Polyak
        averaging, :class:`~scvi_unlearn.unlearn.core._averaging.ExponentialAveraging`), updated
        after every step; fit matching scores the average and the average is returned (the losses
        in ``history_`` are those of the current weights).  ``None``: the last weights.  Default 3:
        at a high constant learning rate the weights jitter, so the epoch where the fit is matched
        overshoots the original's fit and varies from seed to seed more than default-recipe
        retrains do.  Measured (seeds 0-2, passed, averaged vs not): 10,000 simulated cells, random
        50, 3/3 vs 1/3 (same-type held-out check 3/3 vs 1/3; 10 vs 8 epochs); pbmc68k, 6 forget
        sets, originals of 200 epochs 11/18 vs 10/18, of 60 epochs 5/18 vs 5/18, of 400 epochs
        11/18 vs 11/18; 5,000 cells, random 50 and 134 NK, 2/6 vs 3/6; 32/63 vs 30/63 overall
        (``python -m benchmarks run verdict --config averaging``, ``--config scale_fit_variants``;
        docs/fast_unlearning.md, "Averaging the weights").
    max_average_steps
        Upper bound of the average's time constant, in optimizer steps (``None``: none).  The
        jitter it removes comes from the steps (learning rate, batch size), not from how many
        steps an epoch takes: on large data 3 epochs are thousands of steps and the average lags
        the weights by epochs.  Default 60 (with ``check_steps=20``), chosen by measurement
        (``python -m benchmarks run verdict --config scale_fit_variants``, the variant "averaged
        over 60 steps, checked every 20", seeds 0-2, passed against the 3-epoch average
        checked once an epoch): 5,000 simulated cells, random 50, 3/3 vs 2/3 (9-9.5 vs 10-11
        epochs), the 134 NK cells 0/3 vs 0/3; 10,000 cells, random 50, 3/3 vs 3/3 (6.7-7 vs 10
        epochs); 20,000 cells, random 50, 3/3 vs 3/3 (5.7-6 vs 10 epochs, 0.026-0.029x vs
        0.044-0.046x a retrain), the 622 NK cells 0/3 vs 0/3 (mean z +1.5 to +1.8 vs +2.5 to
        +2.9).  pbmc68k (4 steps an epoch) is unchanged: 3 epochs are 12 steps.
    check_steps
        With ``match_fit``, most optimizer steps between two fit checks: the fit is checked
        ``ceil(steps_per_epoch / interval)`` times an epoch, evenly, the last at its end, and
        training may stop mid-epoch; the interval is ``check_steps`` but at least ``cells x 4
        draws / batch_size`` steps, so that checking costs at most about a third of the training
        (:func:`~scvi_unlearn.unlearn.core._fit_match.check_interval`; 64 steps for the 2,048 cells
        scored on large data).  ``None``: once an epoch.  Default 20 (measured with
        ``max_average_steps``, above; on pbmc68k, once an epoch).  At 100,000 simulated cells
        (492 steps an epoch, the original 114 epochs) the defaults stop after 1.1 epochs
        (0.011-0.018x the original's wall time, on a loaded machine) where a 3-epoch average
        checked once an epoch stopped after 8 (0.086-0.104x); at 300,000 cells after 0.26 of
        the original's 38 epochs (0.010-0.011x; ``python -m benchmarks run scaling --config
        fit_match_100k``, ``--config fit_match_300k``).  Judged as exact at 100,000 cells:
        see ``match_tail``; no verdict at 300,000.
    accelerator, devices, enable_progress_bar, **trainer_kwargs
        As in :meth:`scvi.model.SCVI.train` (e.g. ``strategy`` for several devices).

    Notes
    -----
    **Why stop at the original's fit** (``python -m benchmarks run verdict --config fit_match``,
    ``--config scale_fit_match``, commands and tables in docs/results_fast_retrain.md "Fit-matched
    stopping").  The retrains a forget cell is judged against replay the original's recipe, which
    over-fits its training cells: on 5,000 simulated cells its held-out ELBO is 36 nats below its
    training ELBO, while 60 fast epochs leave a gap of 9 and fit unseen cells -- forget cells among
    them -- 1.6% better, which the per-cell test reads as "remembers". Stopping when the unseen
    retain cells are fit as the original fits them removes that gap.
    Passed (equivalent and both held-out checks), fit-matched vs the full budget, seeds 0-2:
    pbmc68k, 5 forget sets (3 tuned on, 2 held back), original of 200 epochs 7/15 vs 8/15
    (other types' held-out ELBO within 0.5% of the retrains' in 12/15 runs vs 3/15); of 400
    epochs 12/15 vs 7/15 at about half the cost; of 60 epochs (cap 30, the floor chosen there:
    a 10-epoch cap never reached the fit) 5/15 vs 0/15; 5,000 simulated cells 3/6 vs 0/6 at
    0.027x a default retrain instead of 0.16x (the random set 3/3; the 134 NK cells, a whole
    cell type the retrains never see, still "remembers": the fast schedule fits an unseen type
    better than the default recipe even at matched held-out fit: the retrains memorise their
    training cells, a train / held-out gap of 30-73 nats on pbmc68k against 9-17 at the stop,
    and no stopping epoch or KL weight tried matches every setting,
    ``python -m benchmarks run trajectory --config unseen_type``); 10,000 cells, random 50:
    equivalent 3/3 (full budget 1/3) at 0.027x, same-type check failed 3/3.  On the
    ``docs/reproduction.md`` sets it passes CD56+ NK and CD14+ Monocyte 3/3 but the 9 CD34+
    cells 1/3 (the full budget: 3/3 each).

    The schedule (``python -m benchmarks run verdict --config fast_retrain``, table in
    ``docs/results_fast_retrain.md``; before fit matching): pbmc68k, the 200-epoch model of
    ``docs/reproduction.md``, seeds 0-2 per schedule, judged by the per-cell equivalence test
    against 5 default-recipe retrains.  ``0.15 x 200 = 30`` epochs at lr 1.2e-2, constant:
    equivalent on CD56+ NK (22 cells), CD14+ Monocyte (90) and a random set of 50 in all 9 runs
    (mean z -0.5 to +1.0), held-out ELBO within -1.2% to +1.0% of the retrains'; all checks
    passed in 6 of 6 runs on the two cell types and 1 of 3 on the random set.  20 epochs
    over-forget CD14+ Monocyte (mean z -1.3 to -1.4, significant) and lose 1.8-3.3% held-out
    ELBO on the random set.  Cosine decay over 20 epochs is worse still (mean z -0.9 to -3.4),
    and shorter or faster schedules (15 epochs at 1.5e-2, 12 at 2e-2, batch 256 at 2e-2) are
    unstable (mean z down to -22, held-out ELBO -2% to -22%).
    """
    check_fast_schedule(schedule, lr, epoch_fraction)
    max_epochs = fast_epochs(task, epoch_fraction, min_epochs, max_epochs, at_most_original=True)
    model = task.new_model(copy_weights=False)
    train_fast(
        task,
        model,
        max_epochs=max_epochs,
        lr=lr,
        schedule=schedule,
        batch_size=batch_size,
        kl_warmup=kl_warmup,
        kl_weight=resolve_kl_weight(task, kl_weight),
        match_fit=match_fit,
        match_tail=match_tail,
        strict=strict,
        patience=patience,
        min_delta=min_delta,
        average_epochs=average_epochs,
        max_average_steps=max_average_steps,
        check_steps=check_steps,
        accelerator=accelerator,
        devices=devices,
        enable_progress_bar=enable_progress_bar,
        **trainer_kwargs,
    )
    return model


#: the :class:`~scvi.train.TrainingPlan` arguments that set its KL weight schedule
_KL_ARGUMENTS = ("n_epochs_kl_warmup", "n_steps_kl_warmup", "max_kl_weight", "min_kl_weight")


def original_kl_weight(recipe: dict | None) -> float:
    """The KL weight of the original's last training epoch, from its recorded recipe.

    scvi-tools' :class:`~scvi.train.TrainingPlan` warms it up linearly from ``min_kl_weight``
    (0) to ``max_kl_weight`` (1) over ``n_epochs_kl_warmup`` (400) epochs, so a 200-epoch
    original ends at 0.4975, a 400-epoch one at 0.9975.  The recipe's ``plan_kwargs`` are
    completed with the plan's own defaults and the weight is scvi-tools' own warm-up function
    at the last epoch.  A warm-up over ``n_steps_kl_warmup`` steps instead raises a
    ``ValueError`` (the steps an epoch took are not recorded).
    """
    from scvi.train._trainingplans import _compute_kl_weight

    recipe = recipe or {}
    given = recipe.get("plan_kwargs") or {}
    defaults = inspect.signature(TrainingPlan).parameters
    plan = {k: given.get(k, defaults[k].default) for k in _KL_ARGUMENTS}
    if not plan["n_epochs_kl_warmup"] and plan["n_steps_kl_warmup"]:
        raise ValueError(
            "kl_weight='original' needs an epoch-based KL warm-up; the original warmed up "
            "over n_steps_kl_warmup steps: pass kl_weight as a number."
        )
    epochs = recipe.get("max_epochs")
    if epochs is None:  # not recorded: taken as past any warm-up
        return float(plan["max_kl_weight"])
    return float(_compute_kl_weight(int(epochs) - 1, 0, **plan))


def resolve_kl_weight(task, kl_weight) -> float:
    """``kl_weight`` as a number: ``"original"`` is :func:`original_kl_weight` of the task's
    original; a number must be in (0, 1]."""
    if isinstance(kl_weight, str):
        if kl_weight != "original":
            raise ValueError(f"kl_weight must be a number or 'original', got {kl_weight!r}.")
        return original_kl_weight(getattr(task.original, "train_recipe_", None))
    weight = number_argument("kl_weight", kl_weight, positive=True)
    if weight > 1:
        raise ValueError(f"kl_weight must be in (0, 1], got {kl_weight!r}.")
    return weight


def check_fast_schedule(schedule: str, lr: float, epoch_fraction: float) -> None:
    """Validate the hyper-parameters of :func:`train_fast` and of the budget rule."""
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}.")
    if not 0 < epoch_fraction <= 1:
        raise ValueError(f"epoch_fraction must be in (0, 1], got {epoch_fraction}.")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}.")


def fast_epochs(
    task,
    epoch_fraction: float,
    min_epochs: int,
    max_epochs: int | None,
    *,
    at_most_original: bool = False,
) -> int:
    """``max_epochs``, or :func:`fast_budget` of the original's recorded epochs when ``None``."""
    recipe = getattr(task.original, "train_recipe_", None) or {}
    if max_epochs is None:
        if recipe.get("max_epochs") is None:
            raise ValueError(
                "The original's epoch count is not recorded (train it with "
                "scvi_unlearn.SCVI.train) : pass max_epochs."
            )
        max_epochs = fast_budget(
            int(recipe["max_epochs"]),
            epoch_fraction,
            min_epochs,
            at_most_original=at_most_original,
        )
    if int(max_epochs) < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
    return int(max_epochs)


def train_fast(
    task,
    model,
    *,
    max_epochs: int,
    lr: float = 1.2e-2,
    schedule: str = "constant",
    batch_size: int = 128,
    kl_warmup: bool = False,
    kl_weight: float = 1.0,
    match_fit: bool = False,
    match_tail: float = 0.0,
    strict: bool = False,
    patience: int = 10,
    min_delta: float = 1e-3,
    average_epochs: float | None = None,
    max_average_steps: int | None = None,
    check_steps: int | None = None,
    accelerator: str = "auto",
    devices: Any = "auto",
    enable_progress_bar: bool = True,
    **trainer_kwargs,
) -> None:
    """Train ``model`` in place with ``fast_retrain``'s schedule: the training of
    ``fast_retrain`` (from a fresh initialisation) and of ``rewind`` (from a checkpoint).

    The retain cells of ``task``, in their original train / validation roles
    (:meth:`UnlearningTask.train_data`: a data splitter, or a retain stream for a model trained
    out of core), ``max_epochs``
    epochs of ``batch_size`` cells, KL weight 1 from the first step (or warmed up from 0 over
    the ``max_epochs`` with ``kl_warmup``), Adam at ``lr``, constant or cosine-decayed
    (``schedule``), no early stopping except, with ``match_fit``, a
    :class:`~scvi_unlearn.unlearn.core._fit_match.FitMatchStopping` at the original's retain
    validation ELBO (with ``strict``, a
    :class:`~scvi_unlearn.unlearn.core._fit_match.PlateauStopping` at the plateau of the
    model's own), checked at most every ``check_steps`` steps (the epochs and steps trained
    recorded as ``task.budget["epochs"]`` and ``["steps"]``), with ``average_epochs`` an
    :class:`~scvi_unlearn.unlearn.core._averaging.ExponentialAveraging` whose time constant is at
    most ``max_average_steps`` steps.  Afterwards the
    model keeps the original's recipe (:meth:`UnlearningTask.retain_recipe`) and its per-epoch
    losses are appended to ``task.log``.
    """
    step_batch, _ = split_over_processes(
        batch_size, trainer_kwargs, task.budget, accelerator=accelerator, devices=devices
    )
    data = task.train_data(step_batch)
    for name, flag in (("kl_warmup", kl_warmup), ("match_fit", match_fit), ("strict", strict)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}.")
    if max_average_steps is not None:
        max_average_steps = int_argument("max_average_steps", max_average_steps, 1)
    if check_steps is not None:
        check_steps = int_argument("check_steps", check_steps, 1)
    callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
    averaging = None
    if (average := check_average_epochs(average_epochs)) is not None:
        averaging = ExponentialAveraging(average, max_average_steps)
        callbacks.append(averaging)
    stopper = None
    if strict:
        patience = int_argument("patience", patience, 1)
        min_delta = number_argument("min_delta", min_delta)  # >= 0
        stopper = plateau_callback(task, averaging, check_steps, batch_size, patience, min_delta)
    elif match_fit:
        match_tail = number_argument("match_tail", match_tail)  # >= 0
        stopper = fit_match_callback(task, averaging, check_steps, batch_size, match_tail)
    if (match_fit or strict) and stopper is None:
        warnings.warn(
            f"{'strict' if strict else 'match_fit'}: the original has fewer than "
            f"{MIN_CHECK_CELLS} retain validation cells (trained with train_size=1?), so there "
            f"is no unseen fit to {'check' if strict else 'match'}; training the full budget of "
            f"{max_epochs} epochs.",
            UserWarning,
            stacklevel=3,
        )
    elif stopper is not None:
        callbacks.append(stopper)
    plan_kwargs: dict[str, Any] = {
        "lr": lr,
        "n_epochs_kl_warmup": max_epochs if kl_warmup else None,
        "n_steps_kl_warmup": None,
        "max_kl_weight": kl_weight,
    }
    if schedule == "cosine":
        model._training_plan_cls = CosineTrainingPlan
        plan_kwargs["total_epochs"] = max_epochs
    model.train(
        max_epochs=max_epochs,
        plan_kwargs=plan_kwargs,
        accelerator=accelerator,
        devices=devices,
        enable_progress_bar=enable_progress_bar,
        early_stopping=False,
        callbacks=callbacks,
        **data,
        **trainer_kwargs,
    )
    if stopper is not None:  # trained before the fit was matched (or the budget)
        epochs = round(stopper.epochs, 2)
        task.budget["epochs"] = int(epochs) if epochs.is_integer() else epochs
        task.budget["steps"] = stopper.steps
    model.__dict__.pop("_training_plan_cls", None)  # back to the class's own plan
    # keep the original's recipe (as retrain does): a later exact retrain of this model, or a
    # later fast retrain's budget, follows the original training, not this short schedule
    model.train_recipe_ = task.retain_recipe()
    task.log_history(model)
