"""``langevin``: noisy fine-tuning on the retain cells (Langevin unlearning)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from scvi_unlearn.unlearn.approximate._distill import anneal_factors
from scvi_unlearn.unlearn.approximate._finetune import RetainTrainingPlan, train_on_retain
from scvi_unlearn.unlearn.core._arguments import fraction_argument, int_argument, number_argument
from scvi_unlearn.unlearn.core._budget import retain_sample_size
from scvi_unlearn.unlearn.core._registry import register

#: tag of the noise stream: the noise generator's seed is derived from the request's seed and
#: this tag, so its draws are not those of the global generator seeded with the same seed
_STREAM = 0x4C414E47  # "LANG"


def noise_generator(seed: int) -> torch.Generator:
    """A CPU :class:`torch.Generator` for the noise of the request ``seed``: seeded from
    ``SeedSequence([seed, tag])``, a stream distinct from the global generator's (which the
    request seeds with ``seed`` itself, for shuffling, dropout and posterior draws)."""
    state = np.random.SeedSequence([int(seed), _STREAM]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class LangevinPlan(RetainTrainingPlan):
    """:class:`RetainTrainingPlan` (Adam on the retain ELBO) with Gaussian noise added to every
    trainable parameter after each optimizer step.

    The noise of a step in epoch ``e`` has standard deviation ``noise * lr * factors[e]`` per
    entry, drawn on the CPU from ``generator`` (so a seed gives the same noise on any device,
    and the same noise on every process of a distributed run, keeping the replicas equal).
    Nothing is drawn when the standard deviation is 0: the training is then exactly
    :class:`RetainTrainingPlan`'s.
    """

    def __init__(
        self,
        module,
        *,
        noise: float,
        factors: list[float],
        generator: torch.Generator,
        **kwargs,
    ):
        super().__init__(module, **kwargs)
        self.noise = float(noise)
        self.factors = list(factors)
        self.generator = generator

    def noise_std(self, epoch: int) -> float:
        """Standard deviation per entry of the noise added after a step of ``epoch``."""
        factor = self.factors[min(int(epoch), len(self.factors) - 1)]
        return self.noise * self.lr * factor

    @torch.no_grad()
    def add_noise(self, std: float) -> None:
        """Add ``N(0, std^2)`` to every entry of every trainable parameter of the module."""
        for p in self.module.parameters():
            if p.requires_grad:
                draw = torch.randn(p.shape, generator=self.generator, dtype=torch.float32)
                p.add_(draw.to(device=p.device, dtype=p.dtype), alpha=std)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        """Adam's step, then the noise of this epoch."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        std = self.noise_std(epoch)
        if std > 0:
            self.add_noise(std)
            self.step_log[-1]["noise_std"] = std


@register(
    "langevin",
    guarantee=(
        "none: noisy fine-tuning of the original; the paper's guarantee needs assumptions "
        "scVI does not meet"
    ),
    reference=(
        "Langevin unlearning (Chien, Wang, Chen & Li 2024, NeurIPS, arXiv:2401.10371), "
        "without its guarantee"
    ),
    status="research baseline",
    measured=(
        "2/54: pbmc68k's six forget sets x originals of 60 / 200 / 400 epochs x 3 seeds (1 / "
        "1 / 0 of 18); equivalent 18, remembers 24, over-forgets 6; median 0.24x a retrain "
        "(benchmarks/RESULTS.md, approximate_matrix)"
    ),
)
def langevin(
    task,
    *,
    max_epochs: int = 30,
    lr: float = 1e-2,
    noise: float = 1.0,
    anneal_fraction: float = 0.5,
    weight_decay: float = 1e-6,
    kl_weight: float = 1.0,
    batch_size: int = 128,
    retain_sample: int | str | None = None,
    accelerator: str = "auto",
    devices: Any = "auto",
    enable_progress_bar: bool = True,
    **trainer_kwargs,
):
    """Fine-tune a copy of the model on the retain cells with noisy steps (Langevin unlearning).

    Langevin unlearning (Chien, Wang, Chen & Li 2024, "Langevin Unlearning: A New Perspective
    of Noisy Gradient Descent for Machine Unlearning", NeurIPS, arXiv:2401.10371): retraining
    from scratch is itself random, and noisy gradient descent
    ``theta <- theta - eta * step + N(0, sigma^2)`` on the retain loss, started from the
    original, turns the original into a random draw whose spread can cover the retrains'
    distribution while the drift on the retain loss removes what only the forget cells taught.
    The paper's guarantee (an (alpha, epsilon) Renyi-unlearning bound) needs a strongly convex,
    smooth loss, projected full-batch noisy gradient descent and noise throughout the original
    training as well; none of that holds here, so **this is a heuristic adaptation and it is
    approximate**: the per-cell equivalence test is the judge (Notes).

    Adaptation to scVI: ``finetune``'s training (a copy of the original's weights, Adam on the
    retain ELBO with a fixed KL weight, ``retain_sample`` retain cells per epoch;
    :class:`LangevinPlan`) plus, after every optimizer step, Gaussian noise on every trainable
    parameter entry with standard deviation ``noise * lr`` (times the annealing factor).  The
    noise is in units of Adam's typical per-step move (about ``lr`` per entry, whatever the
    gradient's scale): over ``T`` steps the drift moves an entry by up to ``T * lr`` and the
    noise by ``sqrt(T) * noise * lr``, so their ratio does not change with ``lr`` and ``noise``
    needs no retuning when ``lr`` does (a temperature, the paper's ``sigma^2 = 2 eta / beta``,
    would change the ratio with ``eta`` because Adam's steps are not proportional to the
    gradient).  Buffers (BatchNorm's running statistics) get no noise.  The noise is drawn from
    its own :class:`torch.Generator` seeded from the request's seed (:func:`noise_generator`),
    never from the global generator: the same seed gives bit-identical weights, and
    ``noise=0`` gives exactly ``finetune``'s model for the same arguments and seed.

    Parameters
    ----------
    task
        The :class:`~scvi_unlearn.unlearn.UnlearningTask`.
    max_epochs
        Epochs over the retain training cells (or their sample), an int ``>= 1``.
    lr
        Adam learning rate, ``> 0``.
    noise
        Standard deviation of the noise per entry and step, in units of ``lr``, ``>= 0``
        (0: ``finetune``).
    anneal_fraction
        Share of the budget, in ``[0, 1]``, over which the noise falls linearly to 0 (the
        factors of ``distill``'s annealing,
        :func:`~scvi_unlearn.unlearn.approximate._distill.anneal_factors`:
        the last epoch has no noise); 0: constant noise.
    weight_decay
        Adam weight decay, ``>= 0``.
    kl_weight
        Fixed weight of KL(q(z|x) || p(z)), ``>= 0``; 1 is the trained objective.
    batch_size
        Retain cells per minibatch, an int ``>= 1``.
    retain_sample
        Retain training cells per epoch: ``None`` (default) a fresh random sample of 10 x the
        forget cells, at least 2,048 and at most 16,384 (every retain cell on smaller data);
        ``"all"`` or an int to override (:func:`~scvi_unlearn.unlearn.retain_sample_size`).
    accelerator, devices, enable_progress_bar, **trainer_kwargs
        As in :meth:`scvi.model.SCVI.train`.

    Raises
    ------
    ValueError
        On a bad hyper-parameter (before any training).

    Notes
    -----
    The record's log has ``finetune``'s per-step ``retain_nelbo`` and, on steps with noise,
    ``noise_std`` (the standard deviation added after that step).

    Defaults (measured) with ``python -m benchmarks run verdict --config langevin`` and
    ``--config langevin_lr1e-2``: pbmc68k, the 200-epoch original of
    ``docs/reproduction.md``, forget = the 22 "CD56+ NK" and the 90 "CD14+ Monocyte" members, seeds
    0-2, each run judged by the per-cell equivalence test against 5 default-recipe retrains (pass =
    equivalent and both held-out ELBO checks).  **No setting is reliably equivalent; this is a
    negative result.** At ``finetune``'s learning rate (5e-3) the grid noise 0 / 0.1 / 0.3 / 0.5 /
    1 x 20 / 30 epochs x constant / annealed over the last half (18 settings) passed 0 of 6 runs
    everywhere (``finetune`` = noise 0: mean z +2.3 to +3.3 on NK, +3.5 to +4.4 on monocytes at 20
    epochs): noise up to 0.5 barely moves the monocytes (mean z still +2.8 to +4.5), and the noise
    that brings mean z near 0 (1, constant, 20 or 30 epochs) costs 1.8-5.8% of the other types'
    held-out ELBO (11 of 12 runs beyond the 2% tolerance) and fails the same-type check in 9 of 12.
    The noise lowers the fit of the forget cells' whole type rather than their membership: the
    membership contrast (forget vs same-type held-out cells) falls only from +2.7 to +3.5
    (``finetune``) to +1.7 to +3.4 (noise 1, constant).  At lr 1e-2 and 30 epochs (5 settings) the
    defaults (``noise=1, anneal_fraction=0.5``) passed 2 of 6 (NK mean z -3.80 / -0.37 / -1.18,
    monocytes +1.07 / +1.40 / +1.01; the retain-ELBO drop reached 2.65% in one run), the most of
    any setting (noise 0 there: 0 of 6; noise 0.3: 0-1 of 6); they are the defaults only because of
    that.  ``fast_retrain`` passed 6 of 6 at the same cost (0.12-0.16x a default retrain's wall
    time; ``langevin`` 0.12-0.20x at 30 epochs, ``finetune``'s 20 epochs 0.09-0.14x).  On three
    forget sets not used to choose them (a random 50, the 38 "CD8+ Cytotoxic T", 10 of the NK
    cells) the defaults passed 0 of 9 (decision equivalent in 5 of 9, but the same-type check
    failed in 9 of 9; the NK subset over-forgets in 2 of 3; retain-ELBO drop up to 2.2%), noise 0
    with the same arguments 0 of 9, ``fast_retrain`` 2 of 9.

    Calibration (the benchmark's spread ratios: the standard deviation across seeds of the
    forget cells' ELBO over that of the 5 retrains): ``finetune`` alone already has about the
    retrains' per-cell spread (ratio 0.94 on NK, 0.73 on monocytes at 20 epochs, lr 5e-3); the
    missing ingredient is not spread but the bias (forget-cell ELBO about 20 nats above the
    retrains').  Noise 1 annealed over the last half at 20 epochs, lr 5e-3, is the setting
    closest to calibrated on both sets (per-cell ratio 1.20 / 1.09, ratio of the mean 0.85 /
    1.44) and passes 0 of 6 (monocytes remember 3 of 3).  No calibrated setting passed.

    **These defaults do not hold across settings** (``python -m benchmarks run defaults --config
    across --set methods='["langevin"]'``, docs/unlearning.md, "Defaults across training lengths
    and forget sets"): the other types' held-out ELBO fell by more than 2% in 9 of 28 settings
    (worst -7.6%, a random 60-member set on the 400-epoch original); ``unlearn``'s retain check
    stops all 9 with an :class:`~scvi_unlearn.unlearn.UnlearningError` by default, and 10 runs
    within 2% too (held out -0.5% to -1.9%).
    """
    max_epochs = int_argument("max_epochs", max_epochs, 1)
    int_argument("batch_size", batch_size, 1)
    lr = number_argument("lr", lr, positive=True)
    noise = number_argument("noise", noise)
    weight_decay = number_argument("weight_decay", weight_decay)
    kl_weight = number_argument("kl_weight", kl_weight)
    anneal_fraction = fraction_argument("anneal_fraction", anneal_fraction)
    retain_sample_size(task.n_forget, task.train_indices.size, retain_sample)  # validates it

    model = task.new_model(copy_weights=True)
    train_on_retain(
        task,
        model,
        max_epochs=max_epochs,
        lr=lr,
        weight_decay=weight_decay,
        kl_weight=kl_weight,
        batch_size=batch_size,
        retain_sample=retain_sample,
        accelerator=accelerator,
        devices=devices,
        enable_progress_bar=enable_progress_bar,
        plan_class=LangevinPlan,
        plan_kwargs={
            "noise": noise,
            "factors": anneal_factors(max_epochs, anneal_fraction),
            "generator": noise_generator(task.seed),
        },
        **trainer_kwargs,
    )
    return model
