"""``scrub``: SCRUB (teacher-student unlearning) adapted to a VAE."""

from __future__ import annotations

from typing import Any

import torch

from scvi_unlearn.unlearn.core._losses import (
    capped,
    evaluation_mode,
    expression_kl,
    posterior_and_scale,
    posterior_kl,
)
from scvi_unlearn.unlearn.core._plan import UnlearningTrainingPlan
from scvi_unlearn.unlearn.core._registry import register


class ScrubPlan(UnlearningTrainingPlan):
    """Alternating SCRUB max-steps (forget) and min-steps (retain), manual optimisation.

    The divergence between teacher ``T`` (original) and student ``S`` on a cell ``x`` is
    ``D(x) = KL(q_T(z|x) || q_S(z|x)) + decoder_weight * KL(rho_T(x) || rho_S(x))``, where
    ``rho`` is the decoder's normalized expression at the posterior mean.  A max-step minimises
    ``-mean_forget min(D, divergence_cap)``; a min-step minimises
    ``mean_retain(nELBO_S) + alpha * mean_retain(D)``.
    """

    def __init__(
        self,
        module,
        teacher,
        *,
        alpha: float,
        decoder_weight: float,
        divergence_cap: float,
        max_step_epochs: int,
        **kwargs,
    ):
        super().__init__(module, **kwargs)
        self.teacher = teacher
        self.alpha = float(alpha)
        self.decoder_weight = float(decoder_weight)
        self.divergence_cap = float(divergence_cap)
        self.max_step_epochs = int(max_step_epochs)
        self.automatic_optimization = False

    def divergence(self, tensors, *, student_eval: bool) -> torch.Tensor:
        """Per-cell teacher-to-student divergence ``D(x)`` (gradients through the student)."""
        with torch.no_grad(), evaluation_mode(self.teacher):
            qz_t, rho_t = posterior_and_scale(self.teacher, tensors)
        if student_eval:
            with evaluation_mode(self.module):
                qz_s, rho_s = posterior_and_scale(self.module, tensors)
        else:
            qz_s, rho_s = posterior_and_scale(self.module, tensors)
        d = posterior_kl(qz_t, qz_s)
        if self.decoder_weight:
            d = d + self.decoder_weight * expression_kl(rho_t, rho_s)
        return d

    def training_step(self, batch, batch_idx):
        """A max-step on the forget batch (first ``max_step_epochs`` epochs), then a min-step."""
        retain, forget = self.split_batch(batch)
        opt = self.optimizers()
        terms: dict[str, float] = {}
        do_max = forget is not None and self.current_epoch < self.max_step_epochs
        if do_max:
            d_f = self.divergence(forget, student_eval=True)
            max_loss = -capped(d_f, self.divergence_cap).mean()
            opt.zero_grad()
            self.manual_backward(max_loss)
            opt.step()
            terms["forget_divergence"] = float(d_f.detach().mean())
        retain_out = self.retain_elbo(retain)
        l_r = retain_out.nelbo.mean()
        d_r = self.divergence(retain, student_eval=False).mean() if self.alpha else l_r * 0
        min_loss = l_r + self.alpha * d_r
        opt.zero_grad()
        self.manual_backward(min_loss)
        opt.step()
        terms.update({"retain_nelbo": float(l_r.detach()), "retain_divergence": float(d_r)})
        self.record_step(min_loss, terms)
        n_cells = int(retain["X"].shape[0])
        self.log("train_loss", min_loss.detach(), on_epoch=True, prog_bar=True, batch_size=n_cells)
        self.compute_and_log_metrics(retain_out.loss_output, self.train_metrics, "train")


@register(
    "scrub",
    guarantee="none: a copy of the original pushed away from itself on the forget cells",
    reference="SCRUB (Kurmanji et al. 2023, Towards Unbounded Machine Unlearning, NeurIPS)",
    status="research baseline",
    measured=(
        "5/54: pbmc68k's six forget sets x originals of 60 / 200 / 400 epochs x 3 seeds (1 / "
        "3 / 1 of 18); equivalent 9, remembers 22, over-forgets 11; median 0.08x a retrain "
        "(benchmarks/RESULTS.md, approximate_matrix)"
    ),
    benchmark=True,
)
def scrub(
    task,
    *,
    max_epochs: int = 10,
    max_step_epochs: int = 5,
    alpha: float = 1.0,
    decoder_weight: float = 1.0,
    divergence_cap: float = 20.0,
    lr: float = 3e-3,
    weight_decay: float = 1e-6,
    kl_weight: float = 1.0,
    batch_size: int = 128,
    forget_batch_size: int | None = None,
    retain_sample: int | str | None = None,
    accelerator: str = "auto",
    devices: Any = "auto",
    enable_progress_bar: bool = True,
    **trainer_kwargs,
):
    """SCRUB for a VAE: a student pushed away from the teacher on forget, kept close on retain.

    Follows Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning" (NeurIPS).  The teacher
    is a frozen copy of the original model, the student a trainable copy.  SCRUB alternates
    *max-steps*, which maximise the teacher-student divergence on the forget cells, and
    *min-steps*, which minimise the task loss plus the divergence on the retain cells; the max
    steps stop after ``max_step_epochs`` epochs and the min steps continue, as in the paper.
    The paper runs one epoch of max-steps over the forget set per epoch of min-steps; with a
    forget set of a few dozen cells that is a single max-step per epoch, far too weak
    (measured: 15% of the way to retrain, docs/unlearning.md), so here every training step of
    the first ``max_step_epochs`` epochs does a max-step on a (cycled) forget minibatch followed
    by a min-step on a retain minibatch.
    For a VAE the "output distribution" is the posterior ``q(z|x)`` and the decoder's output, so
    the divergence is ``KL(q_T(z|x) || q_S(z|x)) + decoder_weight * KL(rho_T || rho_S)`` (rho:
    normalized expression at the posterior mean) and the task loss is the negative ELBO
    (fixed KL weight).  The paper's max-step is unbounded; here each forget cell's divergence
    is capped at ``divergence_cap`` nats (no gradient beyond it), so the max-steps cannot
    diverge.  Forget cells are passed in eval mode (BatchNorm running statistics, no dropout).

    Parameters
    ----------
    task
        The :class:`~scvi_unlearn.unlearn.UnlearningTask`.
    max_epochs
        Total epochs (passes over the retain cells with min-steps).
    max_step_epochs
        Epochs (the first ones) that also run max-steps on the forget cells.
    alpha
        Weight of the teacher-student divergence in the min-steps (retain).
    decoder_weight
        Weight of the decoder-output divergence inside ``D``.
    divergence_cap
        Per-cell cap (nats) of the forget divergence maximised by the max-steps.
    lr, weight_decay
        Adam learning rate and weight decay (one optimizer for both kinds of step).
    kl_weight
        Fixed KL weight of the retain ELBO.
    batch_size, forget_batch_size
        Retain / forget cells per minibatch (``forget_batch_size`` default: ``batch_size``).
    retain_sample
        Retain training cells per epoch: ``None`` (default) a fresh random sample of
        10 x the forget cells, at least 2,048 and at most 16,384 (every retain cell on smaller
        data), so the cost grows with the forget set and not with the dataset; ``"all"`` or an
        int to override (:func:`~scvi_unlearn.unlearn.retain_sample_size`).
    accelerator, devices, enable_progress_bar, **trainer_kwargs
        As in :meth:`scvi.model.SCVI.train`.

    Notes
    -----
    Defaults (measured) on the offline PBMC data (700 cells; members of a stratified 70/30 split;
    default ``su.SCVI`` trained 400 epochs; forget = the 22 "CD56+ NK" members), measured with
    ``python -m benchmarks run defaults --config unlearn_grid`` (docs/unlearning.md).  Forget-cell
    ELBO: original -596.3, retrain (3 seeds) -709.9; held-out ELBO of the other types: original
    -687.5. ``max_epochs=10, max_step_epochs=5, divergence_cap=20, lr=3e-3``: forget ELBO -673.5
    (68% of the way to retrain), other held-out -0.68%.  With ``lr=1e-3`` the cap 5 / 20 / 50 moved
    15% / 26% / 36%; ``divergence_cap=50, lr=3e-3`` 71%.

    **These defaults do not hold across settings** (``python -m benchmarks run defaults --config
    across``, docs/unlearning.md, "Defaults across training lengths and forget sets": pbmc68k
    originals of 60 / 200 / 400 epochs x 9 forget sets, a simulated dataset): the held-out ELBO of
    the other cell types fell by more than 2% in 6 of 28 settings (worst -8.2%; Dendritic (168
    cells), CD14+ Monocyte and random 60-member sets).  ``unlearn``'s retain-ELBO check (2%)
    flagged 6 of them; ``unlearn`` stops there with an ``UnlearningError`` by default
    (``on_degradation="auto"``).
    """
    if not 0 <= max_step_epochs <= max_epochs:
        raise ValueError(
            f"max_step_epochs must be in [0, max_epochs={max_epochs}], got {max_step_epochs}."
        )
    for name, value in (
        ("alpha", alpha),
        ("decoder_weight", decoder_weight),
        ("divergence_cap", divergence_cap),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}.")
    model = task.new_model(copy_weights=True)
    plan = ScrubPlan(
        model.module,
        task.teacher_module,
        alpha=alpha,
        decoder_weight=decoder_weight,
        divergence_cap=divergence_cap,
        max_step_epochs=max_step_epochs,
        lr=lr,
        weight_decay=weight_decay,
        kl_weight=kl_weight,
        step_log=task.log,
    )
    task.fit(
        model,
        plan,
        task.datamodule(
            batch_size,
            with_forget=True,
            forget_batch_size=forget_batch_size,
            retain_sample=retain_sample,
        ),
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        enable_progress_bar=enable_progress_bar,
        **trainer_kwargs,
    )
    return model
