"""Held-out ELBO and reconstruction NLL of a set of cells, with standard errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from scvi_unlearn._evaluation import evaluation_adata
from scvi_unlearn.metrics._elbo import per_cell_elbo


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    se = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else np.nan
    return float(values.mean()), float(se)


def summarize_elbo(per_cell: pd.DataFrame) -> pd.Series:
    """Means and standard errors over cells of a :func:`per_cell_elbo` table.

    Returns a Series with ``n_cells``, ``elbo_mean``, ``elbo_se``, ``reconstruction_nll_mean``,
    ``reconstruction_nll_se``, ``kl_z_mean`` and ``kl_l_mean``; standard errors are
    ``std(ddof=1) / sqrt(n_cells)`` across cells (NaN for one cell).
    """
    elbo_mean, elbo_se = _mean_se(per_cell["elbo"].to_numpy())
    rec_mean, rec_se = _mean_se(per_cell["reconstruction"].to_numpy())
    return pd.Series(
        {
            "n_cells": float(len(per_cell)),
            "elbo_mean": elbo_mean,
            "elbo_se": elbo_se,
            "reconstruction_nll_mean": rec_mean,
            "reconstruction_nll_se": rec_se,
            "kl_z_mean": float(per_cell["kl_z"].mean()),
            "kl_l_mean": float(per_cell["kl_l"].mean()),
        }
    )


def heldout_elbo(
    model,
    adata: AnnData | None = None,
    *,
    n_draws: int = 8,
    seed: int = 0,
    batch_size: int = 256,
) -> pd.Series:
    """Mean per-cell ELBO and reconstruction NLL of a set of cells, with standard errors.

    Each cell's ELBO ``E_q[log p(x | z, l)] - KL(q(z | x) || p(z)) - KL(q(l | x) || p(l))``
    (summed over genes, natural-log units; the library KL is 0 with the observed library size)
    and its reconstruction negative log-likelihood ``-E_q[log p(x | z, l)]`` are estimated with
    ``n_draws`` posterior draws of ``z`` under a fixed ``seed``, with the module in eval mode
    (:func:`~scvi_unlearn.metrics.per_cell_elbo`), then averaged over cells.  Evaluated on cells
    the model never trained on, this is the held-out ELBO of :cite:p:`Lopez18`; higher is
    better.

    Parameters
    ----------
    model
        A trained scvi-tools model (:class:`scvi_unlearn.SCVI` or :class:`scvi.model.SCVI`).
    adata
        Cells to evaluate, e.g. held-out cells (need not be the model's own; not mutated);
        default the model's AnnData.
    n_draws
        Posterior draws of ``z`` averaged per cell.
    seed
        Seed of the draws; the global RNG is left untouched.
    batch_size
        Cells per forward pass.

    Returns
    -------
    Series with ``n_cells``, ``elbo_mean``, ``elbo_se``, ``reconstruction_nll_mean``,
    ``reconstruction_nll_se``, ``kl_z_mean``, ``kl_l_mean``.  Standard errors are across cells
    (``std(ddof=1) / sqrt(n_cells)``); the Monte Carlo error of the draws is not included.
    """
    with evaluation_adata(model, adata) as ad:
        table = per_cell_elbo(model, ad, n_draws=n_draws, seed=seed, batch_size=batch_size)
    return summarize_elbo(table)
