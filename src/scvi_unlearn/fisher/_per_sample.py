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

By default the parameters of linear and normalisation layers skip vmap: their per-example
squared gradients come from one ordinary backward pass (:mod:`scvi_unlearn.fisher._taps`); the
context managers that make scvi-tools' forward pass batchable by vmap are in
:mod:`scvi_unlearn.fisher._vmap_compat`.

Parameters that receive no gradient from the loss (not on the computational path, e.g. scVI's
``px_r_decoder`` when ``dispersion="gene"``) are found by an ordinary autograd pass
(``allow_unused``) and excluded; they are reported in :attr:`DiagonalFisher.excluded`, never
counted as zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from scvi_unlearn._evaluation import eval_mode
from scvi_unlearn.fisher._taps import _Taps, _verified
from scvi_unlearn.fisher._vmap_compat import _no_distribution_validation, _vmap_compatible_one_hot

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
    meta
        Bookkeeping: ``"vmap_parameters"`` (parameters computed by the vmap route rather
        than the taps), ``"obs_names"`` of the cells when computed for a model.
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


#: Examples of the first mini-batch used to classify parameters (used / tapped / vmap).
_PROBE_SIZE = 16


def _batch_gradients(
    bound: _Bound, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], inputs
) -> dict[str, torch.Tensor | None]:
    """Ordinary autograd gradient of the summed loss (``None``: not on the computational path)."""
    probe = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        loss = functional_call(bound, (probe, buffers), (inputs,)).sum()
        grads = torch.autograd.grad(loss, list(probe.values()), allow_unused=True)
    return dict(zip(probe, grads))


def squared_gradient_mean(
    module: nn.Module,
    loss_fn: PerExampleLoss,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    n_draws: int = 1,
    seed: int | None = None,
    route: str = "auto",
    expandable: tuple[str, ...] = (),
) -> DiagonalFisher:
    """Mean over examples of the squared per-example gradient of ``loss_fn``, per parameter.

    Parameters
    ----------
    module
        The network.  It is evaluated in eval mode (no dropout; BatchNorm with its running
        statistics, hence a fixed affine map per example) and left exactly as it was: its
        parameters are never written and its ``requires_grad`` flags, ``.grad`` and training
        mode are unchanged afterwards.
    loss_fn
        ``loss_fn(module, inputs) -> Tensor (n,)``: one loss per example; every tensor of
        ``inputs`` has a leading example dimension.  It must treat examples independently
        (true in eval mode for scVI and MLPs) and draw no random numbers that matter: noise
        is passed in ``inputs``.
    batches
        Mini-batches of inputs (mappings of tensors with the same leading dimension).
    n_draws, seed
        Recorded in the result (the noise itself lives in ``inputs``).
    route
        ``"auto"`` (default): parameters of ``nn.Linear``, eval-mode ``nn.BatchNorm1d``,
        affine ``nn.LayerNorm`` layers and the ``expandable`` parameters by the taps of
        :class:`_Taps` (one ordinary backward per mini-batch, nothing of size examples x
        parameters materialised); any other parameter by :func:`torch.func.vmap` of
        :func:`torch.func.grad`.  ``"vmap"``: everything by vmap (materialises examples x
        parameters per mini-batch; slower, same values).
    expandable
        Names (as in ``module.named_parameters()``) of parameters that the loss uses only by
        broadcasting against the example dimension (e.g. scVI's ``px_r`` with
        ``dispersion="gene"``); they are tapped by an (examples x shape) expansion.

    Returns
    -------
    :class:`DiagonalFisher` with float64 CPU tensors.
    """
    if route not in ("auto", "vmap"):
        raise ValueError(f"route must be 'auto' or 'vmap', got {route!r}.")
    bound = _Bound(module, loss_fn)
    params = {f"m.{k}": v.detach() for k, v in module.named_parameters()}
    buffers = {f"m.{k}": v.detach() for k, v in module.named_buffers()}
    unknown = [k for k in expandable if f"m.{k}" not in params]
    if unknown:
        raise KeyError(f"expandable parameters not in the module: {unknown}")
    layers = {}
    if route == "auto":
        for name, layer in module.named_modules():
            if type(layer) is nn.Linear or (
                type(layer) is nn.LayerNorm and layer.elementwise_affine
            ):
                layers[f"m.{name}"] = layer
            elif type(layer) is nn.BatchNorm1d and layer.affine:
                if layer.running_mean is None:
                    raise ValueError(
                        f"BatchNorm layer {name!r} keeps no running statistics: in eval mode "
                        "it normalises with batch statistics, so per-example losses are not "
                        "defined."
                    )
                layers[f"m.{name}"] = layer
    taps = _Taps(layers, tuple(f"m.{k}" for k in expandable) if route == "auto" else ())

    def single_loss(p, const, example):
        # vmap hands one example without its leading dimension; give it back a batch of one
        batched = {k: v.unsqueeze(0) for k, v in example.items()}
        return functional_call(bound, ({**const, **p}, buffers), (batched,)).sum()

    per_example_grad = vmap(grad(single_loss), in_dims=(None, None, 0), randomness="same")

    sums: dict[str, torch.Tensor] = {}
    used: set[str] | None = None
    tapped: set[str] = set()
    rest: list[str] = []
    n = 0
    with (
        eval_mode(module),
        _no_distribution_validation(),
        _vmap_compatible_one_hot(),
        torch.random.fork_rng(devices=[]),  # a module may draw (and discard) global noise
        taps,
    ):
        for inputs in batches:
            inputs = {k: v for k, v in inputs.items() if v is not None}
            n_batch = next(iter(inputs.values())).shape[0]
            if used is None:
                # classify the parameters on a small probe slice of the first mini-batch
                n_probe = min(n_batch, _PROBE_SIZE)
                probe = {k: v[:n_probe] for k, v in inputs.items()}
                probe_taps = (
                    taps.run(bound, params, buffers, probe, n_probe, summed=True)
                    if route == "auto"
                    else {}
                )
                batch_grads = _batch_gradients(bound, params, buffers, probe)
                used = {k for k, g in batch_grads.items() if g is not None}
                if not used:
                    raise ValueError(
                        "No parameter of the module receives a gradient from the loss."
                    )
                sums = {
                    k: torch.zeros(params[k].shape, dtype=torch.float64)
                    for k in params
                    if k in used
                }
                candidates = {
                    k
                    for k in probe_taps
                    if k in used and k.rsplit(".", 1)[0] not in taps.irregular
                }
                tapped = _verified(candidates, taps, batch_grads)
                rest = [k for k in params if k in used and k not in tapped]
            tap_sums = taps.run(bound, params, buffers, inputs, n_batch) if tapped else {}
            for k in tapped:
                if k not in tap_sums:
                    raise RuntimeError(
                        f"Parameter {k[2:]!r} was tapped on the first mini-batch but not on a "
                        "later one (input shapes changed?); use route='vmap'."
                    )
                sums[k] += tap_sums[k]
            if rest:
                active = {k: params[k] for k in rest}
                const = {k: v for k, v in params.items() if k not in active}
                with torch.no_grad():
                    grads = per_example_grad(active, const, inputs)
                for k, g in grads.items():
                    sums[k] += g.detach().pow(2).sum(0).double().cpu()
            n += n_batch
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
        values=values,
        excluded=excluded,
        n_examples=n,
        n_draws=n_draws,
        seed=seed,
        meta={"vmap_parameters": tuple(k[2:] for k in rest)},
    )
