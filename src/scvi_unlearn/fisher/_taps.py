"""The taps route of the per-sample Fisher: per-example squared gradients without vmap.

:class:`_Taps` computes, from one ordinary backward pass, the per-example squared gradients of
the parameters of ``nn.Linear``, eval-mode ``nn.BatchNorm1d`` and affine ``nn.LayerNorm``
layers and of broadcast ("expandable") parameters; :func:`_verified` checks them against
autograd's batch gradient.  Used by :func:`~scvi_unlearn.fisher.squared_gradient_mean`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F


class _Taps:
    """Per-example squared gradients from one ordinary backward pass, without vmap.

    Three kinds of parameters are *tapped*:

    * ``nn.Linear`` (:math:`y = W a + b`), applied ``C`` times per example (e.g. once per
      posterior draw): example :math:`i`'s gradient is
      :math:`\\nabla_W \\ell_i = \\sum_c g_{ic} a_{ic}^\\top` with :math:`g_{ic}` the
      gradient of the loss with respect to the layer output, so its elementwise square summed
      over examples is :math:`\\sum_{c, c'} (g_c \\odot g_{c'})^\\top (a_c \\odot a_{c'})`:
      ``C^2`` products of (examples x out) and (examples x in) matrices, never materialising
      the (examples x out x in) per-example gradients (the trick behind Opacus' ghost norms
      and BackPACK's diagonal second moments);
    * eval-mode ``nn.BatchNorm1d`` (running statistics) and affine ``nn.LayerNorm``
      (:math:`y = \\hat a \\odot w + b`): :math:`\\nabla_w \\ell_i = \\sum_c g_{ic}
      \\odot \\hat a_{ic}`, :math:`\\nabla_b \\ell_i = \\sum_c g_{ic}`;
    * parameters declared ``expandable`` (used only through broadcasting against the example
      dimension, like scVI's gene dispersion ``px_r``): they are replaced by an (examples x
      shape) copy, whose gradient rows are the per-example gradients.

    Output gradients come from zero-valued probes added to each layer output, differentiated
    in one ordinary backward pass of the summed loss (examples are independent, so the
    gradient of the sum with respect to example ``i``'s output is that of :math:`\\ell_i`).
    A layer called on anything but an (examples x features) input is flagged irregular and
    left to the vmap route; so is any tapped parameter whose summed per-example gradient does
    not match autograd's batch gradient on the first mini-batch (see :func:`_verified`).
    """

    def __init__(self, layers: dict[str, nn.Module], expandable: tuple[str, ...]):
        self.layers = layers
        self.expandable = expandable
        self.records: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.irregular: set[str] = set()
        self._n = 0
        self._active = False
        self._summed: dict[str, torch.Tensor] = {}
        self._handles = []

    def __enter__(self):
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name):
        def hook(layer, args, output):
            if not self._active:
                return None
            a = args[0] if args else None
            if a is None or a.dim() != 2 or a.shape[0] != self._n:
                self.irregular.add(name)
                return None
            if isinstance(layer, nn.Linear):
                feature = a.detach()
            elif isinstance(layer, nn.BatchNorm1d):
                feature = (a.detach() - layer.running_mean) / torch.sqrt(
                    layer.running_var + layer.eps
                )
            else:  # nn.LayerNorm
                feature = F.layer_norm(a.detach(), layer.normalized_shape, eps=layer.eps)
            probe = torch.zeros_like(output, requires_grad=True)
            self.records.setdefault(name, []).append((feature, probe))
            return output + probe

        return hook

    def run(self, bound, params, buffers, inputs, n, summed=False) -> dict[str, torch.Tensor]:
        """Squared-gradient sums (float64) of every tapped parameter on one mini-batch.

        With ``summed=True`` also keeps the summed per-example gradients (for
        :func:`_verified`).  Products are formed in the module's dtype (one matrix product per
        layer, over the stacked pairs of calls) and accumulated in float64.
        """
        self.records, self._n, self._summed = {}, n, {}
        expanded = {}
        for k in self.expandable:
            expanded[k] = torch.zeros((n, *params[k].shape), requires_grad=True)
        call_params = dict(params)
        for k, probe in expanded.items():
            call_params[k] = params[k].expand(n, *params[k].shape) + probe
        self._active = True
        try:
            with torch.enable_grad():
                loss = functional_call(bound, (call_params, buffers), (inputs,)).sum()
        finally:
            self._active = False
        probes = [p for recs in self.records.values() for _, p in recs] + list(expanded.values())
        if not probes:
            return {}
        with torch.enable_grad():
            grads = list(torch.autograd.grad(loss, probes, allow_unused=True))
        out: dict[str, torch.Tensor] = {}
        for name, recs in self.records.items():
            feats = [f for f, _ in recs]
            outs = []
            for _, p in recs:
                g = grads.pop(0)
                outs.append(torch.zeros_like(p) if g is None else g.detach())
            if name in self.irregular:
                continue
            layer = self.layers[name]
            bias_grad = torch.stack(outs).sum(0).double()  # per-example bias gradients
            if isinstance(layer, nn.Linear):
                if len(recs) == 1:
                    u, v = outs[0] * outs[0], feats[0] * feats[0]
                else:  # sum over ordered pairs of calls = diagonal + 2 x upper triangle
                    us, vs = [], []
                    for c in range(len(recs)):
                        for d in range(c, len(recs)):
                            us.append(outs[c] * outs[d] * (1.0 if c == d else 2.0))
                            vs.append(feats[c] * feats[d])
                    u, v = torch.cat(us), torch.cat(vs)
                out[f"{name}.weight"] = (u.T @ v).double()
                if summed:
                    self._summed[f"{name}.weight"] = sum(
                        g.double().T @ f.double() for g, f in zip(outs, feats)
                    )
            else:
                w_grad = sum(g.double() * f.double() for g, f in zip(outs, feats))
                out[f"{name}.weight"] = (w_grad * w_grad).sum(0)
                if summed:
                    self._summed[f"{name}.weight"] = w_grad.sum(0)
            out[f"{name}.bias"] = (bias_grad * bias_grad).sum(0)
            if summed:
                self._summed[f"{name}.bias"] = bias_grad.sum(0)
        for k, g in zip(expanded, grads):
            g = torch.zeros(expanded[k].shape) if g is None else g
            g = g.double()
            out[k] = (g * g).sum(0)
            if summed:
                self._summed[k] = g.sum(0)
        return out

    def summed_gradients(self) -> dict[str, torch.Tensor]:
        """Sum over examples of the per-example gradients of the last :meth:`run`."""
        return self._summed


def _verified(candidates: set[str], taps: _Taps, batch_grads) -> set[str]:
    """The tapped parameters whose summed per-example gradient equals autograd's.

    A parameter used outside its layer's ``forward`` (weight tying, direct use by the parent
    module) would be tapped incompletely; it is caught here and left to the vmap route.
    """
    ok = set()
    summed = taps.summed_gradients()
    for pname in candidates:
        if pname not in summed:
            continue
        ref = batch_grads[pname].double()
        scale = float(ref.abs().max())
        if torch.allclose(summed[pname], ref, rtol=1e-3, atol=1e-5 * scale + 1e-12):
            ok.add(pname)
    return ok
