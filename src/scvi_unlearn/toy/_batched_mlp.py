"""Many independent small MLP classifiers trained at once (stacked weights, batched matmuls).

The repetitions of the two-Gaussian experiment are independent models; stacking their weights
along a leading axis and summing their losses trains all of them in one set of matrix products.
Because Adam is element-wise and the summed loss has block-separate gradients, this is exactly
``n_models`` independent Adam runs (up to floating-point summation order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

#: layer widths of the seed notebook's ``NormalClassifier`` after the input layer
NOTEBOOK_HIDDEN = (64, 32)


def init_batched_mlp(
    n_features: int,
    n_classes: int,
    seeds: Sequence[int],
    hidden: Sequence[int] = NOTEBOOK_HIDDEN,
) -> list[torch.Tensor]:
    """Initialise ``len(seeds)`` MLPs exactly as :class:`torch.nn.Linear` does, one seed each.

    ``nn.Linear`` draws weight and bias from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (Kaiming
    uniform with ``a=sqrt(5)``); each model draws from its own :class:`torch.Generator`.

    Returns
    -------
    list of torch.Tensor
        ``[W1, b1, W2, b2, ...]`` with ``W`` of shape ``(n_models, fan_in, fan_out)`` and ``b`` of
        shape ``(n_models, 1, fan_out)``, float32, ``requires_grad=False``.
    """
    if len(seeds) == 0:
        raise ValueError("seeds must name at least one model.")
    dims = [n_features, *hidden, n_classes]
    per_model: list[list[torch.Tensor]] = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        tensors = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            bound = 1.0 / fan_in**0.5
            w = (torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) * bound
            b = (torch.rand(fan_out, generator=gen) * 2 - 1) * bound
            tensors += [w.T.contiguous(), b.unsqueeze(0)]
        per_model.append(tensors)
    return [torch.stack(group) for group in zip(*per_model)]


def batched_mlp_forward(params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits of every model: ``x`` is ``(n, d)`` (shared) or ``(n_models, n, d)``."""
    h = x
    n_layers = len(params) // 2
    for i in range(n_layers):
        h = torch.matmul(h, params[2 * i]) + params[2 * i + 1]
        if i < n_layers - 1:
            h = torch.relu(h)
    return h


def per_model_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each model: logits ``(m, n, k)``, labels ``(n,)`` or ``(m, n)``."""
    m, n, k = logits.shape
    y = y.expand(m, n)
    return (
        F.cross_entropy(logits.reshape(m * n, k), y.reshape(-1), reduction="none")
        .view(m, n)
        .mean(1)
    )


def train_batched_mlp(
    params: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float = 0.01,
    penalty: Callable[[Sequence[torch.Tensor]], torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Full-batch Adam on per-model cross-entropy (+ an optional per-model penalty).

    Parameters
    ----------
    params
        Stacked parameters from :func:`init_batched_mlp`; not modified (copies are trained).
    x, y
        Training inputs ``(n, d)`` or ``(n_models, n, d)`` and integer labels ``(n,)`` or
        ``(n_models, n)``.
    epochs
        Number of full-batch steps (the notebook's "epochs").
    lr
        Adam learning rate (the notebook's 0.01); other Adam settings are PyTorch's defaults.
    penalty
        Optional function of the parameters returning one value per model, added to each model's
        loss (e.g. ``lambda * I(Y_hat; Z)``).

    Returns
    -------
    list of torch.Tensor
        The trained parameters (detached).
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0; got {epochs}.")
    trained = [p.detach().clone().requires_grad_(True) for p in params]
    opt = torch.optim.Adam(trained, lr=lr)
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        loss = per_model_cross_entropy(batched_mlp_forward(trained, x), y)
        if penalty is not None:
            loss = loss + penalty(trained)
        loss.sum().backward()
        opt.step()
    return [p.detach() for p in trained]
