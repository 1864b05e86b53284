"""Per-cell membership-attack features under a model, reproducible and vectorised over cells.

Every feature is computed in mini-batches of cells (no per-cell Python loop), with the module in
eval mode, and every random draw happens under
:func:`~scvi_unlearn._seeding.isolated_seed` (fixed seed, caller's global RNG restored), so the
same model, cells and seed always give the same table (DESIGN section 8, bug 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from sklearn.neighbors import NearestNeighbors

from scvi_unlearn._evaluation import eval_mode
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.attack._evaluation_data import (
    as_obs_names,
    registered_copy,
    training_obs_names,
)
from scvi_unlearn.metrics import per_cell_elbo

#: scalar features (one column each), in table order.
SUMMARY_FEATURES = (
    "reconstruction",
    "kl_z",
    "kl_l",
    "elbo",
    "qz_mean_norm",
    "qz_var_norm",
    "qz_logvar_mean",
    "train_knn_distance",
)


def feature_columns(features: pd.DataFrame, feature_set: str = "full") -> list[str]:
    """Columns of an :func:`attack_features` table making up ``feature_set``.

    ``"summary"``: the scalar features of :data:`SUMMARY_FEATURES`; ``"full"``: those plus the
    posterior mean and log-variance of every latent dimension (``qz_mean_*``, ``qz_logvar_*``).
    """
    summary = [c for c in SUMMARY_FEATURES if c in features.columns]
    if feature_set == "summary":
        return summary
    if feature_set == "full":
        latent = [c for c in features.columns if c.startswith(("qz_mean_", "qz_logvar_"))]
        latent = [c for c in latent if c not in SUMMARY_FEATURES]
        return summary + latent
    raise ValueError(f"feature_set must be 'summary' or 'full', got {feature_set!r}.")


def posterior_parameters(
    model, adata: AnnData, indices: np.ndarray | None = None, batch_size: int = 256, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``q(z | x)`` for cells of a registered ``adata`` (batched).

    Both are deterministic functions of the cell; the ``z`` the encoder samples on the way is
    discarded (drawn under ``isolated_seed(seed)`` so the global RNG is untouched).  For
    ``latent_distribution="ln"`` they are the parameters of the Gaussian before the softmax.
    """
    if indices is None:
        indices = np.arange(adata.n_obs)
    loader = model._make_data_loader(
        adata=adata, indices=np.asarray(indices, dtype=int), batch_size=batch_size, shuffle=False
    )
    module = model.module
    loc, var = [], []
    with eval_mode(module), torch.inference_mode(), isolated_seed(seed):
        for tensors in loader:
            out = module.inference(**module._get_inference_input(tensors))
            qz = out["qz"]
            loc.append(qz.loc.double().cpu().numpy())
            var.append(qz.scale.double().pow(2).cpu().numpy())
    return np.concatenate(loc), np.concatenate(var)


def _training_latents(
    model, fallback: AnnData | None, batch_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means of the model's own training cells and their names."""
    names = training_obs_names(model)
    if model.adata is not None and model.adata.obs_names.get_indexer(names).min() >= 0:
        idx = model.adata.obs_names.get_indexer(names)
        loc, _ = posterior_parameters(model, model.adata, idx, batch_size, seed)
        return loc, names
    if fallback is None or fallback.obs_names.get_indexer(names).min() < 0:
        raise ValueError(
            "The model's training cells are not all in model.adata; pass the full dataset "
            "(adata=...) so that the distance to the model's training latents can be computed, "
            "or set n_neighbors=0 to drop that feature."
        )
    with registered_copy(model, fallback, names, "training") as sub:
        loc, _ = posterior_parameters(model, sub, None, batch_size, seed)
    return loc, names


def knn_distance(
    queries: np.ndarray,
    query_names: np.ndarray,
    reference: np.ndarray,
    reference_names: np.ndarray,
    n_neighbors: int,
) -> np.ndarray:
    """Mean Euclidean distance of each query to its ``n_neighbors`` nearest reference points.

    A query that is itself among the reference points (same ``obs_name``) is not its own
    neighbour: its own entry is skipped.
    """
    if reference.shape[0] < n_neighbors + 1:
        raise ValueError(
            f"n_neighbors={n_neighbors} needs more than {n_neighbors} training cells, "
            f"the model has {reference.shape[0]}."
        )
    nn = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(reference)
    dist, ind = nn.kneighbors(queries)
    is_self = reference_names[ind] == query_names[:, None]
    # keep the first n_neighbors entries that are not the query itself
    keep = np.cumsum(~is_self, axis=1) <= n_neighbors
    keep &= ~is_self
    return (dist * keep).sum(axis=1) / n_neighbors


def attack_features(
    model,
    adata: AnnData,
    cells: Sequence[str] | np.ndarray | None = None,
    *,
    n_draws: int = 8,
    seed: int = 0,
    n_neighbors: int = 5,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Per-cell membership-attack features of ``cells`` under ``model``.

    Parameters
    ----------
    model
        A trained scvi-tools model whose module is a :class:`scvi.module.VAE` (e.g.
        :class:`scvi_unlearn.SCVI`).
    adata
        AnnData holding the cells; it does not need to be registered with the model (the
        registry is transferred to a private copy; ``adata`` itself is never modified).  When
        the model's training cells are not all in ``model.adata``, ``adata`` must hold them
        too (for ``train_knn_distance``).
    cells
        ``obs_names`` of the cells to featurize; default all cells of ``adata``.
    n_draws
        Posterior draws of ``z`` averaged for the ELBO terms (see
        :func:`~scvi_unlearn.metrics.per_cell_elbo`).
    seed
        Seed of those draws; the caller's global RNG is left untouched.
    n_neighbors
        ``k`` of ``train_knn_distance``; ``0`` drops that feature.
    batch_size
        Cells per forward pass.

    Returns
    -------
    DataFrame indexed by ``obs_names`` (in the order of ``cells``) with columns

    * ``reconstruction``, ``kl_z``, ``kl_l``, ``elbo``: per-cell ELBO terms averaged over
      ``n_draws`` posterior draws (reconstruction is the negative log-likelihood of the
      counts under the model's likelihood, with the cell's library size);
    * ``qz_mean_norm``, ``qz_var_norm``: Euclidean norms of the posterior mean and variance;
      ``qz_logvar_mean``: mean log-variance over latent dimensions;
    * ``train_knn_distance``: mean distance of the cell's posterior mean to the posterior
      means of its ``n_neighbors`` nearest cells among the model's *own* training cells
      (``model.trained_obs_names``), the cell itself excluded;
    * ``qz_mean_0 ...``, ``qz_logvar_0 ...``: posterior mean and log-variance per dimension.
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}.")
    if n_neighbors < 0:
        raise ValueError(f"n_neighbors must be >= 0, got {n_neighbors}.")
    names = (
        np.asarray(adata.obs_names, dtype=str) if cells is None else as_obs_names(cells, "cells")
    )
    with registered_copy(model, adata, names, "evaluated") as sub:
        elbo = per_cell_elbo(model, sub, n_draws=n_draws, seed=seed, batch_size=batch_size)
        loc, var = posterior_parameters(model, sub, None, batch_size, seed)
    out = elbo.copy()
    out.index = names
    out["qz_mean_norm"] = np.linalg.norm(loc, axis=1)
    out["qz_var_norm"] = np.linalg.norm(var, axis=1)
    logvar = np.log(var)
    out["qz_logvar_mean"] = logvar.mean(axis=1)
    if n_neighbors:
        train_loc, train_names = _training_latents(model, adata, batch_size, seed)
        out["train_knn_distance"] = knn_distance(loc, names, train_loc, train_names, n_neighbors)
    d = loc.shape[1]
    latent = pd.DataFrame(
        np.hstack([loc, logvar]),
        index=names,
        columns=[f"qz_mean_{i}" for i in range(d)] + [f"qz_logvar_{i}" for i in range(d)],
    )
    return pd.concat([out, latent], axis=1)
