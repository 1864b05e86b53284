"""Shared training plan of the gradient-based unlearning methods.

:class:`UnlearningTrainingPlan` is a :class:`scvi.train.TrainingPlan` whose steps receive a
retain and a forget minibatch (from :class:`~scvi_unlearn.unlearn.RetainForgetDataModule`), whose
KL weight is fixed (no warm-up restarting at zero: the original model has finished its warm-up),
which logs every step's loss terms to a plain list (saved in ``unlearn_record_["log"]``) and
which stops at the first non-finite loss instead of training a broken model.  Subclasses
implement :meth:`UnlearningTrainingPlan.unlearning_loss`.
"""

from __future__ import annotations

from typing import Any

import torch
from scvi.train import TrainingPlan

from scvi_unlearn.unlearn.core._losses import forward_per_cell


class NonFiniteLossError(FloatingPointError):
    """Raised when an unlearning step produces a NaN or infinite loss."""


class UnlearningTrainingPlan(TrainingPlan):
    """Training plan with retain / forget minibatches, fixed KL weight and a per-step log.

    Parameters
    ----------
    module
        The scVI module being unlearned (a copy of the original's).
    lr, weight_decay, eps, optimizer, optimizer_creator
        As in :class:`scvi.train.TrainingPlan`.
    kl_weight
        Fixed weight of KL(q(z|x) || p(z)) in every ELBO term (1 = the trained objective).
    step_log
        List receiving one dict of floats per training step (epoch, step, loss and the terms
        returned by :meth:`unlearning_loss`).
    **kwargs
        Other :class:`scvi.train.TrainingPlan` arguments (KL warm-up arguments are not
        accepted: the weight is fixed).
    """

    def __init__(
        self,
        module,
        *,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        eps: float = 0.01,
        kl_weight: float = 1.0,
        step_log: list[dict[str, float]] | None = None,
        **kwargs,
    ):
        for key in ("n_epochs_kl_warmup", "n_steps_kl_warmup", "max_kl_weight", "min_kl_weight"):
            if key in kwargs:
                raise TypeError(f"{type(self).__name__} uses a fixed kl_weight; got {key}.")
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}.")
        super().__init__(
            module,
            lr=lr,
            weight_decay=weight_decay,
            eps=eps,
            n_epochs_kl_warmup=None,
            n_steps_kl_warmup=None,
            max_kl_weight=kl_weight,
            min_kl_weight=0.0,
            **kwargs,
        )
        self.fixed_kl_weight = float(kl_weight)
        self.step_log = step_log if step_log is not None else []

    # ------------------------------------------------------------------ to implement
    def unlearning_loss(
        self, retain: dict[str, torch.Tensor] | None, forget: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, dict[str, float], Any]:
        """Loss of one step.

        Returns
        -------
        ``(loss, terms, retain_loss_output)``: the scalar to minimise, a dict of floats logged for
        this step, and scVI's ``LossOutput`` on the retain batch (for scvi-tools' ELBO metrics in
        the history) or ``None``.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def retain_elbo(self, retain: dict[str, torch.Tensor]):
        """Per-cell terms of the retain batch, in the module's current (training) mode."""
        return forward_per_cell(self.module, retain, kl_weight=self.fixed_kl_weight)

    @staticmethod
    def split_batch(batch) -> tuple[dict | None, dict | None]:
        """``(retain, forget)`` from a combined batch (a plain batch is retain only)."""
        if isinstance(batch, dict) and "retain" in batch:
            return batch.get("retain"), batch.get("forget")
        return batch, None

    def record_step(self, loss: torch.Tensor, terms: dict[str, float]) -> None:
        """Append this step's loss terms to :attr:`step_log`; stop on a non-finite loss."""
        value = float(loss.detach())
        entry = {"epoch": int(self.current_epoch), "step": int(self.global_step), "loss": value}
        entry.update({k: float(v) for k, v in terms.items()})
        self.step_log.append(entry)
        if not all(torch.isfinite(torch.tensor(v)) for v in entry.values()):
            raise NonFiniteLossError(
                f"Unlearning step {entry['step']} (epoch {entry['epoch']}) produced a non-finite "
                f"loss: {entry}. Lower the learning rate or the forget weight."
            )

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch, batch_idx):
        """One unlearning step on a retain and a forget minibatch."""
        retain, forget = self.split_batch(batch)
        loss, terms, retain_output = self.unlearning_loss(retain, forget)
        n_cells = 0 if retain is None else int(next(iter(retain.values())).shape[0])
        self.record_step(loss, terms)
        self.log(
            "train_loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True,
            batch_size=max(n_cells, 1),
        )  # fmt: skip
        if retain_output is not None:
            self.compute_and_log_metrics(retain_output, self.train_metrics, "train")
        return loss
