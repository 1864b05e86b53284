"""The ``fisher_speed`` experiment: the per-sample diagonal Fisher estimator against a per-cell
backward loop.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment

# ---------------------------------------------------------------------------- Fisher speed

#: the architectures timed by ``fisher_speed``
ARCHITECTURES = {
    "batchnorm (default)": {},
    "layernorm": {"use_batch_norm": "none", "use_layer_norm": "both"},
}


@dataclasses.dataclass
class FisherSpeedParams(Common):
    """Parameters of the ``fisher_speed`` experiment.

    Builds scVI models on the offline PBMC data (700 cells x 765 genes; the first ``cells``
    cells, cycled if more are asked for) with the default architecture (BatchNorm, zinb) and
    with LayerNorm (``use_batch_norm="none", use_layer_norm="both"``), trains each for
    ``epochs`` epochs, and times on the same cells and the same posterior noise:

    * ``loop``: one ordinary forward + backward per cell (the reference of the tests);
    * ``fast``: :func:`scvi_unlearn.fisher.fisher_of_cells` (default route: Linear layers by
      activation x output-gradient products, the other parameters by ``torch.func.vmap``);
    * ``vmap``: the same with every parameter by ``torch.func.vmap`` (materialised per-cell
      gradients).

    Reported: the wall time of each (the minimum over ``repeats`` runs, the usual guard
    against other processes' noise), the speed-up of ``fast`` and ``vmap`` over the loop, and
    the largest relative difference to the loop (max |a - b| / max |b| per tensor).  All three
    run in one process, one after the other, with ``threads`` torch threads: a fair ratio on a
    shared machine.

    Attributes
    ----------
    cells
        Cells whose Fisher is computed.
    draws
        Posterior draws per cell.
    batch_size
        Minibatch size of ``fast`` and ``vmap``.
    epochs
        Training epochs of each model.
    repeats
        Runs of each estimator (the fastest counts).
    """

    cells: int = 512
    draws: int = 1
    batch_size: int = 128
    epochs: int = 10
    repeats: int = 3


def loop_fisher(model, adata, indices, n_draws, seed):
    """One ordinary forward + backward per cell; tensors prepared up front (not timed apart)."""
    import torch
    from scvi import REGISTRY_KEYS

    from scvi_unlearn.fisher import draw_noise, vae_cell_loss

    module = model.module
    module.eval()
    noise = draw_noise(len(indices), module.n_latent, n_draws, seed)
    loader = model._make_data_loader(adata=adata, indices=indices, batch_size=1, shuffle=False)
    params = dict(module.named_parameters())
    sums = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in params.items()}
    keys = (REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.LABELS_KEY)
    for i, tensors in enumerate(loader):
        inputs = {k: tensors[k] for k in keys}
        inputs["_eps_z"] = noise["_eps_z"][i : i + 1]
        inputs["_eps_l"] = noise["_eps_l"][i : i + 1]
        loss = vae_cell_loss(module, inputs).sum()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for k, g in zip(params, grads):
            if g is not None:
                sums[k] += g.double() ** 2
    return {k: v / len(indices) for k, v in sums.items() if k in _used(model)}


def fast_fisher(model, indices, n_draws, batch_size):
    from scvi_unlearn.fisher import fisher_of_cells

    return fisher_of_cells(model, indices=indices, n_draws=n_draws, batch_size=batch_size).values


def vmap_fisher(model, adata, indices, n_draws, batch_size):
    from scvi_unlearn.fisher import draw_noise, vae_cell_loss
    from scvi_unlearn.fisher._per_sample import squared_gradient_mean
    from scvi_unlearn.fisher._vae_fisher import _batches

    noise = draw_noise(len(indices), model.module.n_latent, n_draws, 0)
    batches = _batches(model, adata, indices, batch_size, noise)
    return squared_gradient_mean(model.module, vae_cell_loss, batches, route="vmap").values


def _used(model):
    from scvi_unlearn.fisher import fisher_of_cells

    return set(fisher_of_cells(model, indices=np.arange(2)).values)


def max_rel(a, b):
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30)) for k in b)


@experiment("fisher_speed", FisherSpeedParams)
def fisher_speed(args: FisherSpeedParams) -> pd.DataFrame:
    """Speed of the per-sample diagonal Fisher estimator relative to a per-cell backward loop."""
    import torch

    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed
    from scvi_unlearn.fisher import fisher_of_cells

    adata = su.data.pbmc68k()
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    indices = np.arange(args.cells) % adata.n_obs
    print(
        f"cells={args.cells} genes={adata.n_vars} draws={args.draws} "
        f"batch_size={args.batch_size} threads={args.threads} torch={torch.__version__}"
    )

    def timed(fn):
        best, value = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            value = fn()
            best = min(best, time.perf_counter() - t0)
        return best, value

    rows = []
    for name, kwargs in ARCHITECTURES.items():
        with isolated_seed(0):
            model = su.SCVI(adata, n_latent=10, **kwargs)
            model.train(max_epochs=args.epochs, enable_progress_bar=False)
        fisher_of_cells(model, indices=indices[:8])  # warm-up (first-call overheads)
        t_loop, ref = timed(partial(loop_fisher, model, adata, indices, args.draws, 0))
        t_fast, fast = timed(
            partial(fast_fisher, model, indices, n_draws=args.draws, batch_size=args.batch_size)
        )
        t_vmap, vm = timed(
            partial(vmap_fisher, model, adata, indices, args.draws, args.batch_size)
        )
        rows.append(
            {
                "architecture": name,
                "loop s": f"{t_loop:.2f}",
                "fast s": f"{t_fast:.2f}",
                "vmap s": f"{t_vmap:.2f}",
                "fast x": f"{t_loop / t_fast:.1f}",
                "vmap x": f"{t_loop / t_vmap:.1f}",
                "fast err": f"{max_rel(fast, ref):.1e}",
                "vmap err": f"{max_rel(vm, ref):.1e}",
            }
        )
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)
