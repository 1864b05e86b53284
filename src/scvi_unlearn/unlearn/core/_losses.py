"""Per-cell loss terms shared by the unlearning methods (scVI :class:`~scvi.module.VAE`).

All functions return one value per cell so that methods can bound (clamp / hinge) each cell's
contribution before averaging.  Sign convention: the *negative* ELBO (``nelbo``, lower is better),
as minimised by scVI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from scvi.module._constants import MODULE_KEYS
from torch.distributions import Normal, kl_divergence


@dataclass
class PerCellOutput:
    """Per-cell terms of one forward pass."""

    #: negative ELBO per cell (reconstruction NLL + kl_weight * KL(z) + KL(l))
    nelbo: torch.Tensor
    #: reconstruction negative log-likelihood per cell
    reconstruction: torch.Tensor
    #: KL(q(z | x) || p(z)) per cell
    kl_z: torch.Tensor
    #: KL(q(l | x) || p(l)) per cell (zero with the observed library size)
    kl_l: torch.Tensor
    #: the posterior q(z | x)
    qz: Normal
    #: scVI's loss output, for scvi-tools' metric logging
    loss_output: object


def forward_per_cell(module, tensors: dict, kl_weight: float = 1.0) -> PerCellOutput:
    """Run ``module`` on a minibatch and return the per-cell ELBO terms (with gradients)."""
    inference_outputs, _, losses = module(tensors, loss_kwargs={"kl_weight": kl_weight})
    rec = losses.reconstruction_loss["reconstruction_loss"]
    kl_z = losses.kl_local[MODULE_KEYS.KL_Z_KEY]
    kl_l = losses.kl_local[MODULE_KEYS.KL_L_KEY]
    return PerCellOutput(
        nelbo=rec + kl_weight * kl_z + kl_l,
        reconstruction=rec,
        kl_z=kl_z,
        kl_l=kl_l,
        qz=inference_outputs[MODULE_KEYS.QZ_KEY],
        loss_output=losses,
    )


def posterior_and_likelihood(module, tensors: dict):
    """Posterior ``q(z | x)`` and the decoder's count distribution ``p(x | z)`` at its mean.

    Deterministic given the weights (``z`` = posterior mean), so that divergences between two
    models, or per-cell scores used by a critic, are not blurred by sampling noise.
    """
    inference_inputs = module._get_inference_input(tensors)
    inference_outputs = module.inference(**inference_inputs)
    qz = inference_outputs[MODULE_KEYS.QZ_KEY]
    at_mean = dict(inference_outputs)
    at_mean[MODULE_KEYS.Z_KEY] = qz.loc
    generative_inputs = module._get_generative_input(tensors, at_mean)
    generative_outputs = module.generative(**generative_inputs)
    return qz, generative_outputs[MODULE_KEYS.PX_KEY]


def posterior_and_scale(module, tensors: dict) -> tuple[Normal, torch.Tensor]:
    """Posterior ``q(z | x)`` and the decoder's normalized expression at the posterior mean
    (see :func:`posterior_and_likelihood`)."""
    qz, px = posterior_and_likelihood(module, tensors)
    return qz, px.scale


def posterior_kl(q_from: Normal, q_to: Normal) -> torch.Tensor:
    """Per-cell ``KL(q_from || q_to)`` between diagonal Gaussian posteriors, summed over dims."""
    return kl_divergence(q_from, q_to).sum(-1)


def expression_kl(scale_from: torch.Tensor, scale_to: torch.Tensor) -> torch.Tensor:
    """Per-cell KL between two normalized expression profiles (categorical over genes)."""
    eps = 1e-10
    return (scale_from * ((scale_from + eps).log() - (scale_to + eps).log())).sum(-1)


def capped(values: torch.Tensor, cap: torch.Tensor | float) -> torch.Tensor:
    """``min(values, cap)`` elementwise: no gradient beyond the cap, so ascent cannot diverge."""
    return torch.minimum(values, torch.as_tensor(cap, dtype=values.dtype, device=values.device))


@contextlib.contextmanager
def evaluation_mode(module: torch.nn.Module) -> Iterator[None]:
    """Run a block with ``module`` in eval mode (running BatchNorm statistics, no dropout).

    Forget cells are passed through the model in this mode: gradients still flow, but the
    BatchNorm running statistics are neither updated with forget cells (which would store them
    in the model's buffers) nor replaced by the statistics of a small, homogeneous forget batch.
    The previous train / eval flags of every submodule are restored on exit.
    """
    flags = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag
