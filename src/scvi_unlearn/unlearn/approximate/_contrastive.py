"""``contrastive``: forget posteriors pulled toward the prior, retain posteriors anchored."""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import Normal

from scvi_unlearn.unlearn.core._losses import evaluation_mode, posterior_kl
from scvi_unlearn.unlearn.core._plan import UnlearningTrainingPlan
from scvi_unlearn.unlearn.core._registry import register


def _prior_kl(module, tensors) -> torch.Tensor:
    """Per-cell KL(q(z|x) || N(0, I)) of ``module`` (its encoder only)."""
    qz = _posterior(module, tensors)
    prior = Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))
    return posterior_kl(qz, prior)


def _posterior(module, tensors) -> Normal:
    return module.inference(**module._get_inference_input(tensors))["qz"]


class ContrastivePlan(UnlearningTrainingPlan):
    """Pull forget posteriors toward the prior (bounded), anchor retain posteriors to the teacher.

    Loss of the contrastive phase::

        forget_weight * mean_forget relu(KL(q_S(z|x) || p(z))
                                         - (1 - shrink) * KL(q_T(z|x) || p(z)))
        + anchor_weight * mean_retain KL(q_T(z|x) || q_S(z|x))

    After ``contrastive_epochs`` epochs, the remaining epochs fine-tune the retain ELBO.
    """

    def __init__(
        self,
        module,
        teacher,
        *,
        forget_weight: float,
        anchor_weight: float,
        shrink: float,
        contrastive_epochs: int,
        **kwargs,
    ):
        super().__init__(module, **kwargs)
        self.teacher = teacher
        self.forget_weight = float(forget_weight)
        self.anchor_weight = float(anchor_weight)
        self.shrink = float(shrink)
        self.contrastive_epochs = int(contrastive_epochs)

    def unlearning_loss(self, retain, forget):
        if forget is None or self.current_epoch >= self.contrastive_epochs:
            out = self.retain_elbo(retain)
            loss = out.nelbo.mean()
            return loss, {"retain_nelbo": float(loss.detach())}, out.loss_output
        with evaluation_mode(self.module):
            kl_f = _prior_kl(self.module, forget)
        with torch.no_grad(), evaluation_mode(self.teacher):
            kl_f_teacher = _prior_kl(self.teacher, forget)
            q_r_teacher = _posterior(self.teacher, retain)
        target = (1.0 - self.shrink) * kl_f_teacher
        l_f = torch.relu(kl_f - target).mean()
        anchor = posterior_kl(q_r_teacher, _posterior(self.module, retain)).mean()
        loss = self.forget_weight * l_f + self.anchor_weight * anchor
        terms = {
            "forget_prior_kl": float(kl_f.detach().mean()),
            "forget_prior_kl_original": float(kl_f_teacher.mean()),
            "retain_anchor_kl": float(anchor.detach()),
        }
        return loss, terms, None


@register(
    "contrastive",
    guarantee="none: a copy of the original whose forget posteriors are pulled toward the prior",
    reference="contrastive unlearning (Lee et al. 2024, arXiv:2401.10458), VAE version",
    status="research baseline",
    measured=(
        "0/54: pbmc68k's six forget sets x originals of 60 / 200 / 400 epochs x 3 seeds (0 / "
        "0 / 0 of 18); equivalent 9, remembers 6, over-forgets 29; median 0.04x a retrain "
        "(benchmarks/RESULTS.md, approximate_matrix)"
    ),
    benchmark=True,
)
def contrastive(
    task,
    *,
    max_epochs: int = 10,
    shrink: float = 0.75,
    forget_weight: float = 1.0,
    anchor_weight: float = 1.0,
    finetune_epochs: int = 3,
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
    """Move the forget cells' posteriors toward the prior while anchoring the retain posteriors.

    A latent-space method in the spirit of contrastive unlearning (Lee et al. 2024,
    "Contrastive Unlearning: A Contrastive Approach to Machine Unlearning", arXiv:2401.10458),
    adapted to a VAE: a memorised cell has an informative, far-from-prior posterior; a cell the
    model never saw is encoded less confidently.  The *negative* pull acts on the forget cells:
    their ``KL(q(z|x) || p(z))`` is driven down to ``(1 - shrink)`` times its value under the
    original (hinge: no gradient below the target, so the posteriors are not collapsed onto the
    prior, which would itself single the cells out).  The *positive* anchor keeps the retain
    cells' posteriors equal to the original's (``KL(q_orig || q_new)``).  Both terms touch only
    the encoder; the decoder is unchanged unless ``finetune_epochs > 0`` adds a retain fine-tune
    of the whole model (fixed KL weight).  Forget cells are passed in eval mode.

    Parameters
    ----------
    task
        The :class:`~scvi_unlearn.unlearn.UnlearningTask`.
    max_epochs
        Epochs of the contrastive phase (passes over the retain cells; forget cells cycled).
    shrink
        Fraction of each forget cell's prior KL to remove, in ``[0, 1]``.
    forget_weight, anchor_weight
        Weights of the forget pull and of the retain anchor.
    finetune_epochs
        Epochs of retain ELBO fine-tuning after the contrastive phase.
    lr, weight_decay
        Adam learning rate and weight decay.
    kl_weight
        Fixed KL weight of the fine-tune ELBO.
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
    -687.5. ``max_epochs=10, shrink=0.75, finetune_epochs=3``: forget ELBO -686.8 (80% of the way
    to retrain), other held-out -1.38%.  Without the fine-tune, ``shrink=0.5`` moved 80% but cost
    -2.44% on the other cells; ``shrink=0.25`` 31% (-1.25%).

    It passes both membership attacks on the 22 NK cells on all three seeds, but not the
    per-cell equivalence verdict: it erases the NK region (the unseen NK cells' held-out ELBO
    falls below the retrains' interval) and over-forgets larger or smaller forget sets (mean z
    -9.3 on 90 monocytes, -5.4 on 9 CD34+ cells; docs/reproduction.md).  It was the default
    method until that verdict existed; ``fast_retrain`` is now.

    **These defaults do not hold across settings** (``python -m benchmarks run defaults --config
    across``, docs/unlearning.md, "Defaults across training lengths and forget sets": pbmc68k
    originals of 60 / 200 / 400 epochs x 9 forget sets, a simulated dataset): the held-out ELBO of
    the other cell types fell by more than 2% in 16 of 28 settings (worst -6.4%; mostly large types
    and random sets). ``unlearn``'s retain-ELBO check (2%, with its 95% margin) flags all 16;
    ``unlearn`` stops there with an ``UnlearningError`` by default (``on_degradation="auto"``).
    """
    if not 0.0 <= shrink <= 1.0:
        raise ValueError(f"shrink must be in [0, 1], got {shrink}.")
    if forget_weight < 0 or anchor_weight < 0:
        raise ValueError("forget_weight and anchor_weight must be >= 0.")
    if max_epochs < 0 or finetune_epochs < 0 or max_epochs + finetune_epochs < 1:
        raise ValueError("max_epochs and finetune_epochs must be >= 0 with a positive sum.")
    model = task.new_model(copy_weights=True)
    plan = ContrastivePlan(
        model.module,
        task.teacher_module,
        forget_weight=forget_weight,
        anchor_weight=anchor_weight,
        shrink=shrink,
        contrastive_epochs=max_epochs,
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
