"""``gradient_ascent``: NegGrad+ with a bounded forget term."""

from __future__ import annotations

from typing import Any

import torch

from scvi_unlearn.unlearn.core._losses import capped, evaluation_mode, forward_per_cell
from scvi_unlearn.unlearn.core._plan import UnlearningTrainingPlan
from scvi_unlearn.unlearn.core._registry import register


class NegGradPlusPlan(UnlearningTrainingPlan):
    """``beta * L_retain - (1 - beta) * mean_i min(L_forget_i, (1 + margin) * L_teacher_i)``.

    ``L`` is the per-cell negative ELBO; ``L_teacher_i`` is the original model's on the same
    forget cell (same minibatch).  Once a forget cell's loss exceeds its cap the term has no
    gradient, so the ascent cannot diverge.  After ``ascent_epochs`` epochs only the retain
    term is trained (optional retain fine-tune).
    """

    def __init__(
        self,
        module,
        teacher,
        *,
        beta: float,
        forget_margin: float,
        ascent_epochs: int,
        **kwargs,
    ):
        super().__init__(module, **kwargs)
        self.teacher = teacher
        self.beta = float(beta)
        self.forget_margin = float(forget_margin)
        self.ascent_epochs = int(ascent_epochs)

    def unlearning_loss(self, retain, forget):
        retain_out = self.retain_elbo(retain)
        l_r = retain_out.nelbo.mean()
        if forget is None or self.current_epoch >= self.ascent_epochs:
            return l_r, {"retain_nelbo": float(l_r.detach())}, retain_out.loss_output
        with evaluation_mode(self.module):
            f_out = forward_per_cell(self.module, forget, self.fixed_kl_weight)
        with torch.no_grad(), evaluation_mode(self.teacher):
            t_nelbo = forward_per_cell(self.teacher, forget, self.fixed_kl_weight).nelbo
        cap = t_nelbo + self.forget_margin * t_nelbo.abs()
        l_f = capped(f_out.nelbo, cap).mean()
        loss = self.beta * l_r - (1.0 - self.beta) * l_f
        terms = {
            "retain_nelbo": float(l_r.detach()),
            "forget_nelbo": float(f_out.nelbo.detach().mean()),
            "forget_nelbo_original": float(t_nelbo.mean()),
            "forget_at_cap": float((f_out.nelbo.detach() >= cap).float().mean()),
        }
        return loss, terms, retain_out.loss_output


@register(
    "gradient_ascent",
    guarantee="none: bounded gradient ascent on the forget cells from a copy of the original",
    reference="NegGrad+ (Kurmanji et al. 2023, Towards Unbounded Machine Unlearning, NeurIPS)",
    status="research baseline",
    measured=(
        "2/54: pbmc68k's six forget sets x originals of 60 / 200 / 400 epochs x 3 seeds (0 / "
        "2 / 0 of 18); equivalent 8, remembers 7, over-forgets 35; median 0.09x a retrain "
        "(benchmarks/RESULTS.md, approximate_matrix)"
    ),
    benchmark=True,
)
def gradient_ascent(
    task,
    *,
    max_epochs: int = 10,
    beta: float = 0.9,
    forget_margin: float = 0.075,
    finetune_epochs: int = 0,
    lr: float = 1e-3,
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
    """NegGrad+: descend on the retain ELBO while ascending on a bounded forget ELBO.

    Follows the NegGrad+ baseline of Kurmanji et al. 2023, "Towards Unbounded Machine
    Unlearning" (NeurIPS): each step minimises ``beta * L_retain - (1 - beta) * L_forget`` on a
    retain and a forget minibatch, with ``L`` the mean per-cell negative ELBO.  Plain gradient
    ascent on a likelihood is unbounded (the loss of a forget cell can be driven to infinity by
    a degenerate decoder), so the forget term is bounded per cell: each forget cell contributes
    ``min(L_i, (1 + forget_margin) * L_i^orig)``, where ``L_i^orig`` is the original model's
    loss on that cell; beyond the cap the cell gives no gradient.  The margin is the target
    excess loss of a cell the model should not have memorised (held-out cells of the forgotten
    type have a few percent higher loss than the memorised training cells; docs/unlearning.md).
    Forget cells are passed in eval mode (BatchNorm running statistics, no dropout) so that the
    forget cells never enter the BatchNorm buffers.

    ``beta=0`` with ``finetune_epochs > 0`` is the "pure gradient ascent, then retain
    fine-tune" variant.

    Parameters
    ----------
    task
        The :class:`~scvi_unlearn.unlearn.UnlearningTask`.
    max_epochs
        Epochs of the NegGrad+ phase (one epoch = one pass over the retain training cells; the
        forget cells are cycled so that every step has a forget minibatch).
    beta
        Weight of the retain term, in ``[0, 1]``; ``1 - beta`` weighs the forget term.
    forget_margin
        Relative cap of the forget loss above the original model's (``>= 0``).
    finetune_epochs
        Extra epochs of retain-only fine-tuning after the NegGrad+ phase.
    lr, weight_decay
        Adam learning rate and weight decay.
    kl_weight
        Fixed KL weight in every ELBO term (no warm-up).
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
    -687.5. ``max_epochs=10, beta=0.9, forget_margin=0.075``: forget ELBO -699.4 (91% of the way to
    retrain), other held-out -1.56%.  ``beta=0.5`` overshot (155%, -3.06%); ``forget_margin=0.05``
    moved 59% (-0.96%); ``0.1`` overshot (128%, -1.97%).

    **These defaults do not hold across settings** (``python -m benchmarks run defaults --config
    across``, docs/unlearning.md, "Defaults across training lengths and forget sets": pbmc68k
    originals of 60 / 200 / 400 epochs x 9 forget sets, a simulated dataset): the held-out ELBO of
    the other cell types fell by more than 2% in 20 of 28 settings (worst -8.0%; random sets (-5%
    to -8%) and most cell types). ``unlearn``'s retain-ELBO check (2%) flagged 20 of them;
    ``unlearn`` stops there with an ``UnlearningError`` by default (``on_degradation="auto"``).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}.")
    if forget_margin < 0:
        raise ValueError(f"forget_margin must be >= 0, got {forget_margin}.")
    if max_epochs < 0 or finetune_epochs < 0 or max_epochs + finetune_epochs < 1:
        raise ValueError("max_epochs and finetune_epochs must be >= 0 with a positive sum.")
    model = task.new_model(copy_weights=True)
    plan = NegGradPlusPlan(
        model.module,
        task.teacher_module,
        beta=beta,
        forget_margin=forget_margin,
        ascent_epochs=max_epochs,
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
        max_epochs=max_epochs + finetune_epochs,
        accelerator=accelerator,
        devices=devices,
        enable_progress_bar=enable_progress_bar,
        **trainer_kwargs,
    )
    return model
