"""Ghost clipping with one backward pass through scVI's likelihood instead of two.

Opacus' ghost clipping (Li et al. 2022, "Large Language Models Can Be Strong Differentially
Private Learners", ICLR; Bu et al. 2023, "Differentially Private Optimization on Large Model at
Small Cost", ICML) runs two backward passes over the whole graph: one with hooks that compute
every cell's gradient norm, one of the clipped loss ``sum_i c_i loss_i``.  In scVI most of the
backward time is the likelihood's (ZINB ``lgamma`` / ``digamma`` over cells x genes), which has
no parameter.  :func:`split_at_loss_inputs` cuts the graph at the tensors the loss reads (the
parameters of ``q(z|x)``, ``q(l|x)`` and ``p(x|z)``: one row per cell), so that

1. the likelihood and KL terms are differentiated once, down to those tensors
   (:func:`clipped_backward`);
2. the networks are differentiated twice from there, as in ghost clipping: with Opacus' hooks
   (the per-cell norms), then without, from the same row gradients scaled by each cell's
   clipping coefficient ``c_i``.

Because cell ``i``'s loss depends only on row ``i`` of every cut tensor (no BatchNorm, which
DP-SGD refuses anyway), scaling row ``i`` of the cut gradient by ``c_i`` is exactly the gradient
of ``sum_i c_i loss_i``: the same clipped sum as Opacus' second pass, and the same norms
(``tests/test_dp_sgd.py`` compares both with Opacus' own two passes).  Whether the cut is
complete (no parameter reaches the loss around it) is checked once per run on a probe batch by
:func:`split_is_complete`; otherwise training falls back to Opacus' two passes.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


def _detach_distribution(dist: Any, n: int, pairs: list) -> Any | None:
    """A shallow copy of ``dist`` whose differentiable tensor attributes are fresh leaves
    (appending ``(original, leaf)`` to ``pairs``); ``None`` if one is not per-cell."""
    out = copy.copy(dist)
    for name, value in vars(dist).items():
        if torch.is_tensor(value) and value.requires_grad:
            if value.dim() == 0 or value.shape[0] != n:
                return None
            leaf = value.detach().requires_grad_(True)
            setattr(out, name, leaf)
            pairs.append((value, leaf))
    return out


def split_at_loss_inputs(
    inference_outputs: dict, generative_outputs: dict, n: int
) -> tuple[dict, dict, list] | None:
    """Replace the differentiable tensors of the outputs' distributions by leaves.

    Parameters
    ----------
    inference_outputs, generative_outputs
        The outputs of the scVI module's ``inference`` and ``generative`` steps.
    n
        Number of cells (the first dimension of every cut tensor).

    Returns
    -------
    ``(inference_outputs, generative_outputs, pairs)`` with the distributions replaced by
    copies on leaves and ``pairs`` the ``(original, leaf)`` tensors; ``None`` when a
    differentiable tensor of a distribution is not one row per cell (no cut is possible).
    """
    pairs: list = []
    new = []
    for outputs in (inference_outputs, generative_outputs):
        copied = dict(outputs)
        for key, value in outputs.items():
            if isinstance(value, torch.distributions.Distribution):
                dist = _detach_distribution(value, n, pairs)
                if dist is None:
                    return None
                copied[key] = dist
        new.append(copied)
    return new[0], new[1], pairs


def split_is_complete(loss: torch.Tensor, params: list[torch.Tensor]) -> bool:
    """True when no parameter reaches ``loss`` except through the cut (leaf) tensors."""
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return all(g is None for g in grads)


def clipped_backward(dp_module, optimizer, per_cell: torch.Tensor, pairs: list, reduction: str):
    """Ghost clipping's two network passes from one likelihood pass; sets ``p.grad`` to the
    clipped sum ``sum_i c_i grad loss_i``, as Opacus' ``DPTensorFastGradientClipping.backward``.

    Parameters
    ----------
    dp_module
        Opacus' ``GradSampleModuleFastGradientClipping`` around the per-cell wrapper.
    optimizer
        Opacus' ``DPOptimizerFastGradientClipping``.
    per_cell
        Per-cell losses computed from the leaves of ``pairs``.
    pairs
        ``(original, leaf)`` tensors of :func:`split_at_loss_inputs`.
    reduction
        ``"mean"`` or ``"sum"``: the loss reduction Opacus was set up with.
    """
    originals = [o for o, _ in pairs]
    leaves = [leaf for _, leaf in pairs]
    reduced = per_cell.mean() if reduction == "mean" else per_cell.sum()
    row_grads = torch.autograd.grad(reduced, leaves, allow_unused=True)
    row_grads = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, row_grads)]
    # pass 1 (hooks on): per-cell gradient norms of the reduced loss, as Opacus' first pass
    torch.autograd.backward(originals, row_grads, retain_graph=True)
    optimizer.zero_grad()
    coeff = dp_module.get_clipping_coef().to(per_cell.device)
    # pass 2 (hooks off): gradient of sum_i c_i loss_i = row i of the cut gradient of loss_i
    # times c_i (the reduced loss' row gradients carry 1 / n under "mean")
    scale = coeff * (per_cell.shape[0] if reduction == "mean" else 1.0)
    scaled = [g * scale.reshape(-1, *([1] * (g.dim() - 1))).to(g.dtype) for g in row_grads]
    dp_module.disable_hooks()
    try:
        torch.autograd.backward(originals, scaled)
    finally:
        dp_module.enable_hooks()
