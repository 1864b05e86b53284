"""Generic per-sample diagonal empirical Fisher: one vectorised backward per mini-batch.

The engine behind every Fisher in this package (the scVI model and the classifier control use
exactly the same code).  Given a module and a function returning one loss per example, it
computes, for every parameter, the mean over examples of the squared per-example gradient

.. math:: F_\\theta = \\frac{1}{n} \\sum_{i=1}^{n} \\left(\\partial_\\theta \\ell_i\\right)^2 ,

the diagonal of the *empirical* Fisher information matrix
:math:`\\frac{1}{n}\\sum_i \\nabla \\ell_i \\nabla \\ell_i^\\top`
:cite:p:`Kunstner19` as used by Elastic Weight Consolidation, Fisher forgetting
:cite:p:`Golatkar20` and Selective Synaptic Dampening :cite:p:`Foster24`.  Per-example
gradients come from :func:`torch.func.vmap` over :func:`torch.func.grad` of a functional call
of the module, so one mini-batch costs one vectorised backward pass instead of one backward
per example.  The squared gradient of a *batch* loss (what the original study used) is not
this quantity: :math:`(\\sum_i g_i)^2 \\ne \\sum_i g_i^2`.

Parameters that receive no gradient from the loss (not on the computational path, e.g. scVI's
``px_r_decoder`` when ``dispersion="gene"``) are found by an ordinary autograd pass
(``allow_unused``) and excluded; they are reported in :attr:`DiagonalFisher.excluded`, never
counted as zeros.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

#: A per-example loss: ``loss_fn(module, inputs) -> Tensor`` of shape ``(n,)`` for inputs whose
#: tensors all have a leading example dimension ``n``.
PerExampleLoss = Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass
class DiagonalFisher:
    """A per-sample diagonal empirical Fisher and how it was estimated.

    Attributes
    ----------
    values
        Parameter name -> mean over examples of the squared per-example gradient (float64,
        CPU, same shape as the parameter).  Only parameters that receive a gradient.
    excluded
        Names of the parameters that receive no gradient from the loss (absent from
        ``values``).
    n_examples
        Number of examples (cells) averaged.
    n_draws
        Posterior draws of ``z`` per example (1 for a deterministic model).
    seed
        Seed of the draws.
    """

    values: dict[str, torch.Tensor]
    excluded: tuple[str, ...] = ()
    n_examples: int = 0
    n_draws: int = 1
    seed: int | None = None
    meta: dict = field(default_factory=dict)

    def flat(self, names: Iterable[str] | None = None) -> torch.Tensor:
        """Concatenate the values of ``names`` (default all, in order) into one vector."""
        names = list(self.values) if names is None else list(names)
        return torch.cat([self.values[n].reshape(-1) for n in names])

    @property
    def n_parameters(self) -> int:
        """Number of scalar parameters in :attr:`values`."""
        return int(sum(v.numel() for v in self.values.values()))


class _Bound(nn.Module):
    """Holds the module as a child so that :func:`functional_call` can swap its parameters."""

    def __init__(self, module: nn.Module, loss_fn: PerExampleLoss):
        super().__init__()
        self.m = module
        self._loss_fn = loss_fn

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self._loss_fn(self.m, inputs)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout, BatchNorm running statistics), training flags restored after."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


@contextlib.contextmanager
def _no_distribution_validation() -> Iterator[None]:
    """Disable torch.distributions argument checks (data-dependent control flow breaks vmap)."""
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)


def _batchable_one_hot(tensor: torch.Tensor, num_classes: int = -1) -> torch.Tensor:
    """``one_hot`` without the data-dependent range checks that :func:`torch.func.vmap` rejects."""
    if num_classes < 0:
        return _ORIGINAL_ONE_HOT(tensor, num_classes)
    classes = torch.arange(num_classes, device=tensor.device)
    return (tensor.unsqueeze(-1) == classes).long()


_ORIGINAL_ONE_HOT = torch.nn.functional.one_hot


@contextlib.contextmanager
def _vmap_compatible_one_hot() -> Iterator[None]:
    """Swap ``one_hot`` (in torch.nn.functional and scvi modules importing it) while vmapping.

    scvi-tools one-hot encodes batch / label indices (covariate injection, ``gene-batch`` and
    ``gene-label`` dispersion, library-size priors); torch's ``one_hot`` validates the index
    range with data-dependent checks, which vmap cannot batch.  The replacement computes the
    same tensor by comparison.  Everything is restored on exit.
    """
    import sys

    patched = [(torch.nn.functional, "one_hot")]
    for name, mod in list(sys.modules.items()):
        if name.startswith("scvi.") and getattr(mod, "one_hot", None) is _ORIGINAL_ONE_HOT:
            patched.append((mod, "one_hot"))
    for mod, attr in patched:
        setattr(mod, attr, _batchable_one_hot)
    try:
        yield
    finally:
        for mod, attr in patched:
            setattr(mod, attr, _ORIGINAL_ONE_HOT)


def _used_parameters(
    bound: _Bound, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], inputs
) -> set[str]:
    """Names of the parameters on the computational path of the loss (ordinary autograd)."""
    probe = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        loss = functional_call(bound, (probe, buffers), (inputs,)).sum()
        grads = torch.autograd.grad(loss, list(probe.values()), allow_unused=True)
    return {k for k, g in zip(probe, grads) if g is not None}


def squared_gradient_mean(
    module: nn.Module,
    loss_fn: PerExampleLoss,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    n_draws: int = 1,
    seed: int | None = None,
) -> DiagonalFisher:
    """Mean over examples of the squared per-example gradient of ``loss_fn``, per parameter.

    Parameters
    ----------
    module
        The network.  It is evaluated in eval mode (no dropout; BatchNorm with its running
        statistics, hence a fixed affine map per example) and left exactly as it was: its
        parameters are never written and its ``requires_grad`` flags and training mode are
        unchanged afterwards.
    loss_fn
        ``loss_fn(module, inputs) -> Tensor (n,)``: one loss per example; every tensor of
        ``inputs`` has a leading example dimension.  It must treat examples independently
        (true in eval mode for scVI and MLPs) and draw no random numbers that matter: noise
        is passed in ``inputs``.
    batches
        Mini-batches of inputs (mappings of tensors with the same leading dimension).
    n_draws, seed
        Recorded in the result (the noise itself lives in ``inputs``).

    Returns
    -------
    :class:`DiagonalFisher` with float64 CPU tensors.
    """
    bound = _Bound(module, loss_fn)
    params = {f"m.{k}": v.detach() for k, v in module.named_parameters()}
    buffers = {f"m.{k}": v.detach() for k, v in module.named_buffers()}

    def single_loss(p, example):
        # vmap hands one example without its leading dimension; give it back a batch of one
        batched = {k: v.unsqueeze(0) for k, v in example.items()}
        return functional_call(bound, (p, buffers), (batched,)).sum()

    per_example_grad = vmap(grad(single_loss), in_dims=(None, 0), randomness="same")

    sums: dict[str, torch.Tensor] | None = None
    used: set[str] | None = None
    n = 0
    with (
        _eval_mode(module),
        _no_distribution_validation(),
        _vmap_compatible_one_hot(),
        torch.random.fork_rng(devices=[]),  # a module may draw (and discard) global noise
    ):
        for inputs in batches:
            inputs = {k: v for k, v in inputs.items() if v is not None}
            if used is None:
                used = _used_parameters(bound, params, buffers, inputs)
                if not used:
                    raise ValueError(
                        "No parameter of the module receives a gradient from the loss."
                    )
                active = {k: params[k] for k in params if k in used}
                sums = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in active.items()}
            with torch.no_grad():
                grads = per_example_grad(active, inputs)
            for k, g in grads.items():
                sums[k] += g.detach().double().pow(2).sum(0).cpu()
            n += next(iter(inputs.values())).shape[0]
    if n == 0:
        raise ValueError("No examples: the selection of cells is empty.")
    values = {}
    for k, s in sums.items():
        v = s / n
        if not torch.isfinite(v).all():
            raise FloatingPointError(
                f"Non-finite Fisher values for parameter {k[2:]!r} (a cell with zero total "
                "counts, or a diverged model?)."
            )
        values[k[2:]] = v
    excluded = tuple(k[2:] for k in params if k not in used)
    return DiagonalFisher(
        values=values, excluded=excluded, n_examples=n, n_draws=n_draws, seed=seed
    )
