"""The per-cell loss that Opacus trains: :class:`PerCellELBO` and :class:`PerCellCriterion`.

:class:`PerCellELBO` wraps a scVI :class:`~scvi.module.VAE` into a tensor-input module returning
one negative ELBO per cell (with the gene dispersion re-expressed as an ``nn.Linear``), as
DP-SGD's per-cell clipping needs; :class:`PerCellCriterion` reduces those losses for Opacus.
Used by the training loop of :mod:`scvi_unlearn.unlearn.private._dp_training`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from scvi import REGISTRY_KEYS
from scvi.module._constants import MODULE_KEYS
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from scvi_unlearn.unlearn.private._dp_split import split_at_loss_inputs


class PerCellELBO(nn.Module):
    """Tensor-input wrapper of a scVI :class:`~scvi.module.VAE` returning per-cell losses.

    ``forward(*tensors)`` takes the registry tensors of a minibatch (in the order of ``keys``;
    every tensor has the cells along its first dimension) and returns the negative ELBO of each
    cell, ``reconstruction NLL + kl_weight * KL(q(z|x) || p(z)) + KL(q(l|x) || p(l))``: one loss
    per cell, as DP-SGD's per-example clipping needs.

    The VAE's dispersion ``px_r`` (``dispersion`` ``"gene"``, ``"gene-batch"`` or
    ``"gene-label"``) is a parameter of the VAE module itself, which Opacus cannot differentiate
    per cell.  It is moved into :attr:`dispersion`, an ``nn.Linear(k, n_genes, bias=False)``
    with weight ``px_r`` (reshaped to ``(n_genes, k)``) applied to a column of ones
    (``"gene"``, ``k = 1``) or to the one-hot batch / label of the cell, which gives every cell
    exactly the row of ``px_r`` that scVI would use.  The VAE's own ``px_r`` is frozen and
    replaced by this per-cell value during the forward pass (:func:`torch.func.functional_call`);
    :meth:`write_back` copies the trained value into it.

    Parameters
    ----------
    vae
        The scVI module (modified: its ``px_r`` is frozen until :meth:`write_back`).
    keys
        Registry keys of the positional inputs of :meth:`forward`.
    kl_weight
        Weight of the KL divergence of ``z`` (1: the ELBO).
    """

    def __init__(self, vae: nn.Module, keys: Sequence[str], kl_weight: float = 1.0):
        super().__init__()
        self.vae = vae
        self.keys = tuple(keys)
        self.kl_weight = float(kl_weight)
        #: compute the loss on leaf copies of the loss inputs (``_dp_split``); the
        #: ``(original, leaf)`` pairs of the last forward pass are in :attr:`pairs`
        self.split_likelihood = False
        self.pairs: list | None = None
        self.mode = getattr(vae, "dispersion", "gene-cell")
        px_r = getattr(vae, "px_r", None)
        if self.mode in ("gene", "gene-batch", "gene-label") and isinstance(px_r, nn.Parameter):
            n_genes = px_r.shape[0]
            k = 1 if px_r.dim() == 1 else px_r.shape[1]
            self.dispersion: nn.Linear | None = nn.Linear(k, n_genes, bias=False)
            with torch.no_grad():
                self.dispersion.weight.copy_(px_r.detach().reshape(n_genes, k))
            px_r.requires_grad_(False)
        else:
            self.dispersion = None

    def _dispersion_input(self, tensors: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        weight = self.dispersion.weight
        if self.mode == "gene":
            return torch.ones(n, 1, dtype=weight.dtype, device=weight.device)
        key = REGISTRY_KEYS.BATCH_KEY if self.mode == "gene-batch" else REGISTRY_KEYS.LABELS_KEY
        index = tensors[key].reshape(n, -1)[:, 0].long()
        return F.one_hot(index, weight.shape[1]).to(weight.dtype)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Negative ELBO of each cell (shape ``(n_cells,)``)."""
        tensors = dict(zip(self.keys, inputs))
        n = int(inputs[0].shape[0])
        if self.dispersion is None:
            inference, generative = self.vae(tensors, compute_loss=False)
        else:
            px_r = self.dispersion(self._dispersion_input(tensors, n))  # (n, genes)
            mode = self.vae.dispersion
            self.vae.dispersion = "gene"  # generative() then uses px_r as given, per cell
            try:
                inference, generative = functional_call(
                    self.vae, {"px_r": px_r}, (tensors,), {"compute_loss": False}, strict=False
                )
            finally:
                self.vae.dispersion = mode
        self.pairs = None
        if self.split_likelihood:
            split = split_at_loss_inputs(inference, generative, n)
            if split is not None:
                inference, generative, self.pairs = split
        losses = self.vae.loss(tensors, inference, generative, kl_weight=self.kl_weight)
        rec = losses.reconstruction_loss["reconstruction_loss"]
        kl_z = losses.kl_local[MODULE_KEYS.KL_Z_KEY]
        kl_l = losses.kl_local[MODULE_KEYS.KL_L_KEY]
        return rec + self.kl_weight * kl_z + kl_l

    def write_back(self) -> None:
        """Copy the trained dispersion into the VAE's ``px_r`` and unfreeze it."""
        if self.dispersion is None:
            return
        px_r = self.vae.px_r
        with torch.no_grad():
            px_r.copy_(self.dispersion.weight.detach().reshape(px_r.shape))
        px_r.requires_grad_(True)


class PerCellCriterion(nn.Module):
    """The criterion handed to Opacus: reduces :class:`PerCellELBO`'s per-cell losses.

    Opacus' ghost clipping sets ``reduction = "none"`` to obtain the per-cell losses (it then
    runs a second backward pass on the clipped sum); otherwise the mean or sum is returned.
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, per_cell: torch.Tensor, target: Any = None) -> torch.Tensor:
        if self.reduction == "none":
            return per_cell
        if self.reduction == "sum":
            return per_cell.sum()
        return per_cell.mean()
