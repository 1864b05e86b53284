"""Differentiable estimates of I(Y_hat; Z) between a classifier's output and a membership label.

Two estimators are provided:

* :func:`notebook_mutual_information` is the formula of the second seed (the two-Gaussian
  notebook, ``compute_mutual_information_direct``), implemented exactly, with its quirks
  documented. It is what the seed's "MI-regularized unlearning" arm optimised.
* :func:`plugin_mutual_information` is the plug-in (empirical) mutual information between the
  soft prediction and the membership label, which is what the name promises.
"""

from __future__ import annotations

import torch

#: clamp applied to the softmax probabilities, as in the notebook
_PROB_CLAMP = 1e-10


def _check_inputs(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    if logits.ndim < 2:
        raise ValueError(
            f"logits must have shape (..., n_samples, n_classes); got shape {tuple(logits.shape)}."
        )
    z = torch.as_tensor(z, device=logits.device)
    if z.ndim != 1 or z.shape[0] != logits.shape[-2]:
        raise ValueError(
            f"z must be a 1-d membership vector with one entry per sample "
            f"({logits.shape[-2]}); got shape {tuple(z.shape)}."
        )
    if not torch.all((z == 0) | (z == 1)):
        raise ValueError("z must contain only 0 and 1 (membership indicator).")
    return z.to(logits.dtype)


def notebook_mutual_information(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The seed notebook's "I(Y_hat; Z)" (``compute_mutual_information_direct``), exactly.

    With :math:`p_i = \\mathrm{softmax}(\\text{logits}_i)` clamped to :math:`[10^{-10},
    1 - 10^{-10}]` and :math:`\\pi = \\bar z` (the fraction of samples with :math:`Z=1`),

    .. math::

        a_i = p_{i1}\\,\\pi,\\quad b_i = p_{i0}\\,(1-\\pi),\\quad m_i = a_i + b_i,\\qquad
        \\widehat{I} = \\frac1N \\sum_i \\Big[
        a_i \\log\\big(\\tfrac{a_i}{m_i \\pi} + 10^{-10}\\big)
        + b_i \\log\\big(\\tfrac{b_i}{m_i (1-\\pi)} + 10^{-10}\\big)\\Big].

    Quirks (why this is *not* a mutual information):

    * the per-sample labels ``z`` enter only through their mean :math:`\\pi`: the value is the
      same whichever samples are members, so it cannot measure membership at all;
    * class index and membership are conflated: ``P(Y_hat=1)`` is paired with ``Z=1`` and
      ``P(Y_hat=0)`` with ``Z=0``; the "joint" is a product :math:`p_{ik}\\,P(Z=k)`, never an
      average of predictions within a membership group;
    * it is the mean of per-sample terms rather than a sum over the cells of a joint table, and
      the ``1e-10`` sits inside the logarithm after the ratio.

    For :math:`\\pi = 1/2` the formula reduces to :math:`\\tfrac12\\,(\\log 2 -
    \\overline{H(p_i)})`, half the mean *negative entropy* of the predictions (plus a constant):
    penalising it is a confidence penalty that pushes every prediction towards 1/2. That is
    the mechanism by which the notebook's "unlearning" lowered the probability of x's class.

    Parameters
    ----------
    logits
        ``(..., n_samples, 2)`` classifier logits (leading dimensions are batched models).
    z
        ``(n_samples,)`` 0/1 membership labels.

    Returns
    -------
    torch.Tensor
        Shape ``logits.shape[:-2]`` (a scalar for one model).
    """
    z = _check_inputs(logits, z)
    if logits.shape[-1] != 2:
        raise ValueError(
            f"the notebook formula is defined for 2 classes; got {logits.shape[-1]} classes."
        )
    p = torch.softmax(logits, dim=-1).clamp(_PROB_CLAMP, 1.0 - _PROB_CLAMP)
    pi = z.mean()
    a = p[..., 1] * pi
    b = p[..., 0] * (1 - pi)
    m = a + b
    terms = a * torch.log(a / (m * pi) + _PROB_CLAMP) + b * torch.log(
        b / (m * (1 - pi)) + _PROB_CLAMP
    )
    return terms.mean(dim=-1)


def plugin_mutual_information(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Plug-in mutual information between the soft prediction and the membership label.

    The empirical joint distribution of (predicted class, membership) is built from the soft
    predictions :math:`p_i = \\mathrm{softmax}(\\text{logits}_i)`:

    .. math::

        P(\\hat y = k, Z = z) = \\frac1N \\sum_{i: z_i = z} p_{ik},\\qquad
        \\widehat{I}(\\hat Y; Z) = \\sum_{k, z} P(k, z)
        \\log \\frac{P(k, z)}{P(\\hat y = k)\\,P(Z = z)},

    i.e. the mutual information of the joint law of a uniformly drawn sample's membership and a
    class drawn from the model's predictive distribution for it. It is zero exactly when the
    mean prediction is the same in both membership groups, is bounded by
    :math:`\\min(H(Z), H(\\hat Y))`, and is differentiable in the logits (0 log 0 = 0).

    Parameters
    ----------
    logits
        ``(..., n_samples, n_classes)`` logits (leading dimensions are batched models).
    z
        ``(n_samples,)`` 0/1 membership labels; both groups must be non-empty.

    Returns
    -------
    torch.Tensor
        Shape ``logits.shape[:-2]``, in nats.
    """
    z = _check_inputs(logits, z)
    n = z.shape[0]
    n1 = z.sum()
    if n1 == 0 or n1 == n:
        raise ValueError("z must contain both members (1) and non-members (0).")
    p = torch.softmax(logits, dim=-1)
    groups = torch.stack([1 - z, z], dim=-1)  # (n, 2)
    joint = torch.einsum("...nk,nz->...kz", p, groups) / n  # (..., n_classes, 2)
    p_y = joint.sum(dim=-1, keepdim=True)
    p_z = (groups.sum(dim=0) / n).reshape(*([1] * (joint.ndim - 1)), 2)
    ratio = joint / (p_y * p_z)
    terms = torch.where(joint > 0, joint * torch.log(ratio.clamp_min(1e-30)), 0.0)
    return terms.sum(dim=(-2, -1))
