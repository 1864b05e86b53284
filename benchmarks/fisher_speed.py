"""Speed of the per-sample diagonal Fisher estimator relative to a per-cell backward loop.

Run:  python benchmarks/fisher_speed.py [--cells 512] [--draws 1] [--threads 1] [--repeats 3]

Builds scVI models on the offline PBMC data (700 cells x 765 genes; the first ``--cells``
cells, cycled if more are asked for) with the default architecture (BatchNorm, zinb) and with
LayerNorm (``use_batch_norm="none", use_layer_norm="both"``), trains each for a few epochs,
and times on the same cells and the same posterior noise:

* ``loop``: one ordinary forward + backward per cell (the reference of the tests);
* ``fast``: :func:`scvi_unlearn.fisher.fisher_of_cells` (default route: Linear layers by
  activation x output-gradient products, the other parameters by ``torch.func.vmap``);
* ``vmap``: the same with every parameter by ``torch.func.vmap`` (materialised per-cell
  gradients).

It prints the wall time of each (the minimum over ``--repeats`` runs, the usual guard against
other processes' noise), the speed-up of ``fast`` and ``vmap`` over the loop, and the
largest relative difference to the loop (max |a - b| / max |b| per tensor).  All three run in
one process, one after the other, with ``torch.set_num_threads(--threads)``: a fair ratio on a
shared machine (with several busy processes on 2 cores, 2 intra-op threads oversubscribe).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch

import scvi_unlearn as su
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.fisher import draw_noise, fisher_of_cells, vae_cell_loss
from scvi_unlearn.fisher._per_sample import squared_gradient_mean
from scvi_unlearn.fisher._vae_fisher import _batches

ARCHITECTURES = {
    "batchnorm (default)": {},
    "layernorm": {"use_batch_norm": "none", "use_layer_norm": "both"},
}


def loop_fisher(model, adata, indices, n_draws, seed):
    """One ordinary forward + backward per cell; tensors prepared up front (not timed apart)."""
    from scvi import REGISTRY_KEYS

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
    return fisher_of_cells(model, indices=indices, n_draws=n_draws, batch_size=batch_size).values


def vmap_fisher(model, adata, indices, n_draws, batch_size):
    noise = draw_noise(len(indices), model.module.n_latent, n_draws, 0)
    batches = _batches(model, adata, indices, batch_size, noise)
    return squared_gradient_mean(model.module, vae_cell_loss, batches, route="vmap").values


def _used(model):
    return set(fisher_of_cells(model, indices=np.arange(2)).values)


def max_rel(a, b):
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30)) for k in b)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=512)
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    adata = su.data.pbmc68k()
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    indices = np.arange(args.cells) % adata.n_obs
    print(
        f"cells={args.cells} genes={adata.n_vars} draws={args.draws} "
        f"batch_size={args.batch_size} threads={args.threads} torch={torch.__version__}"
    )
    print(
        f"{'architecture':<22}{'loop s':>9}{'fast s':>9}{'vmap s':>9}"
        f"{'fast x':>9}{'vmap x':>9}{'fast err':>11}{'vmap err':>11}"
    )
    for name, kwargs in ARCHITECTURES.items():
        with isolated_seed(0):
            model = su.SCVI(adata, n_latent=10, **kwargs)
            model.train(max_epochs=args.epochs, enable_progress_bar=False)
        fisher_of_cells(model, indices=indices[:8])  # warm-up (first-call overheads)

        def timed(fn):
            best, value = float("inf"), None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                value = fn()
                best = min(best, time.perf_counter() - t0)
            return best, value

        t_loop, ref = timed(partial(loop_fisher, model, adata, indices, args.draws, 0))
        t_fast, fast = timed(
            partial(fast_fisher, model, indices, n_draws=args.draws, batch_size=args.batch_size)
        )
        t_vmap, vm = timed(
            partial(vmap_fisher, model, adata, indices, args.draws, args.batch_size)
        )
        print(
            f"{name:<22}{t_loop:>9.2f}{t_fast:>9.2f}{t_vmap:>9.2f}"
            f"{t_loop / t_fast:>9.1f}{t_loop / t_vmap:>9.1f}"
            f"{max_rel(fast, ref):>11.1e}{max_rel(vm, ref):>11.1e}"
        )


if __name__ == "__main__":
    main()
