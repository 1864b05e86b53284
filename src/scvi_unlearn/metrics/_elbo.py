"""Per-cell ELBO terms under a model, reproducible: fixed seed, averaged over posterior draws.

scVI's per-cell ELBO is stochastic even in eval mode (``z`` is sampled from ``q(z | x)``).  Every
per-cell quantity in this package (attack features, utility metrics, unlearning checks) goes
through :func:`per_cell_elbo`, which averages ``n_draws`` draws generated under
:func:`~scvi_unlearn._seeding.isolated_seed` (the caller's global RNG is left untouched) with
the module in eval mode (no dropout).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scvi_unlearn._evaluation import eval_mode, evaluation_adata
from scvi_unlearn._seeding import isolated_seed


def per_cell_elbo(
    model,
    adata: AnnData | None = None,
    indices: Sequence[int] | None = None,
    n_draws: int = 8,
    seed: int = 0,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Per-cell reconstruction NLL, KL terms and ELBO, averaged over ``n_draws`` draws of ``z``.

    Parameters
    ----------
    model
        A trained scvi-tools model whose module is a :class:`scvi.module.VAE` (e.g.
        :class:`scvi_unlearn.SCVI`).
    adata
        AnnData to evaluate (registered or registrable with the model; genes in any order);
        default the model's.  It is never modified: cells that are not the model's own
        registered AnnData are evaluated on a private registered copy
        (:func:`scvi_unlearn._evaluation.evaluation_adata`).
    indices
        Positional indices of the cells in ``adata``; default all cells.
    n_draws
        Number of posterior draws averaged per cell.
    seed
        Seed of the draws.  The caller's global RNG state is restored afterwards.
    batch_size
        Cells per forward pass.

    Returns
    -------
    DataFrame indexed by ``obs_names`` with columns ``reconstruction`` (negative log-likelihood,
    positive), ``kl_z``, ``kl_l`` and ``elbo`` (= ``-(reconstruction + kl_z + kl_l)``, higher is
    better).
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}.")
    # a private registered copy unless ``adata`` is the model's own: never mutate the user's
    with evaluation_adata(model, adata) as ad:
        if indices is None:
            indices = np.arange(ad.n_obs)
        indices = np.asarray(indices, dtype=int)
        loader = model._make_data_loader(
            adata=ad, indices=indices, batch_size=batch_size, shuffle=False
        )
        module = model.module
        rec, klz, kll = [], [], []
        with eval_mode(module), torch.inference_mode(), isolated_seed(seed):
            for tensors in loader:
                r = z = ll = 0.0
                for _ in range(n_draws):
                    _, _, losses = module(tensors, loss_kwargs={"kl_weight": 1.0})
                    r = r + losses.reconstruction_loss["reconstruction_loss"].double()
                    z = z + losses.kl_local["kl_divergence_z"].double()
                    ll = ll + losses.kl_local["kl_divergence_l"].double()
                rec.append((r / n_draws).cpu().numpy())
                klz.append((z / n_draws).cpu().numpy())
                kll.append((ll / n_draws).cpu().numpy())
        names = np.asarray(ad.obs_names, dtype=str)[indices]
    out = pd.DataFrame(
        {
            "reconstruction": np.concatenate(rec),
            "kl_z": np.concatenate(klz),
            "kl_l": np.concatenate(kll),
        },
        index=names,
    )
    out["elbo"] = -(out["reconstruction"] + out["kl_z"] + out["kl_l"])
    return out
