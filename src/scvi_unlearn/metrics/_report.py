"""All utility metrics of one model on one set of cells, as one row of a benchmark table."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from scvi_unlearn._evaluation import evaluation_adata
from scvi_unlearn.metrics._elbo import per_cell_elbo
from scvi_unlearn.metrics._evaluation_data import cell_labels
from scvi_unlearn.metrics._heldout import summarize_elbo
from scvi_unlearn.metrics._latent import (
    Clustering,
    _latent_means_registered,
    ari_from_latent,
    knn_jaccard,
    latent_means,
    silhouette_from_latent,
)
from scvi_unlearn.metrics._markers import Markers, _marker_table, _mean_correlation

#: Entries of :func:`utility_report`, in order.
UTILITY_FIELDS = (
    "n_cells",
    "elbo_mean",
    "elbo_se",
    "reconstruction_nll_mean",
    "reconstruction_nll_se",
    "kl_z_mean",
    "kl_l_mean",
    "silhouette",
    "ari",
    "marker_correlation",
    "n_marker_genes",
    "neighborhood_jaccard",
)


def utility_report(
    model,
    adata: AnnData | None = None,
    *,
    labels_key: str | None = "cell_type",
    reference=None,
    markers: Markers | None = None,
    n_markers: int = 5,
    n_draws: int = 8,
    n_neighbors: int = 15,
    clustering: Clustering = "kmeans",
    seed: int = 0,
    batch_size: int = 256,
) -> pd.Series:
    """Every utility metric of ``model`` on the cells of ``adata``, as one table row.

    Computes, on the same cells and with the same ``seed``:

    * :func:`heldout_elbo`: ``n_cells``, ``elbo_mean``, ``elbo_se``,
      ``reconstruction_nll_mean``, ``reconstruction_nll_se``, ``kl_z_mean``, ``kl_l_mean``
      (``n_draws`` posterior draws per cell);
    * :func:`latent_silhouette` (``silhouette``) and :func:`latent_ari` (``ari``) of the
      cell types in ``labels_key``;
    * :func:`marker_correlation` (``marker_correlation``, over ``n_marker_genes`` genes):
      observed vs expected counts with each cell's library size;
    * :func:`neighborhood_preservation` against ``reference`` (``neighborhood_jaccard``).

    Parameters
    ----------
    model
        A trained scvi-tools model (:class:`scvi_unlearn.SCVI` or :class:`scvi.model.SCVI`).
    adata
        Cells to evaluate, e.g. held-out cells (need not be the model's own; never mutated);
        default the model's AnnData.
    labels_key
        Column of ``adata.obs`` with cell types.  ``None`` skips silhouette and ARI (NaN) and
        requires ``markers``.
    reference
        Model whose latent neighbourhoods are the target (typically the retrained model);
        ``None`` gives ``neighborhood_jaccard = NaN``.
    markers
        Marker genes (``{cell_type: genes}`` or a list); default :func:`select_marker_genes`
        with ``n_markers`` per cell type on these cells.  When comparing models, select the
        markers once and pass them to every call.
    n_markers
        Markers per cell type when ``markers`` is ``None``.
    n_draws
        Posterior draws per cell for the ELBO and the expected counts.
    n_neighbors
        Neighbourhood size of the neighbourhood preservation (and of a Leiden graph).
    clustering
        ``"kmeans"`` (default, k = number of cell types) or ``"leiden"``, for the ARI.
    seed
        Seed of every stochastic step (posterior draws, clustering); the global RNG is left
        untouched and the same seed gives the same report.
    batch_size
        Cells per forward pass.

    Returns
    -------
    Series indexed by :data:`UTILITY_FIELDS` (floats).

    Examples
    --------
    >>> import scvi_unlearn as su
    >>> row = su.metrics.utility_report(model, heldout, reference=retrained)  # doctest: +SKIP
    >>> row[["elbo_mean", "silhouette", "ari", "marker_correlation"]]  # doctest: +SKIP
    """
    if markers is None and labels_key is None:
        raise ValueError("Pass `markers` or a `labels_key` to select them from the data.")
    if reference is not None and getattr(reference, "module", None) is None:
        raise TypeError(f"reference must be a scvi-tools model, got {type(reference).__name__}.")
    out: dict[str, float] = {}
    with evaluation_adata(model, adata) as ad:
        labels = None if labels_key is None else cell_labels(ad, labels_key)
        if ad.n_obs <= n_neighbors and reference is not None:
            raise ValueError(
                f"n_neighbors ({n_neighbors}) must be smaller than the number of cells "
                f"({ad.n_obs})."
            )
        table = per_cell_elbo(model, ad, n_draws=n_draws, seed=seed, batch_size=batch_size)
        out.update(summarize_elbo(table).to_dict())
        latent = _latent_means_registered(model, ad, seed=seed, batch_size=batch_size)
        if labels is None:
            out["silhouette"] = out["ari"] = float("nan")
        else:
            out["silhouette"] = silhouette_from_latent(latent, labels.to_numpy())
            out["ari"] = ari_from_latent(
                latent,
                labels.to_numpy(),
                clustering=clustering,
                n_neighbors=n_neighbors,
                seed=seed,
            )
        markers_table = _marker_table(
            model,
            ad,
            labels_key=labels_key,
            markers=markers,
            n_markers=n_markers,
            min_cells=3,
            n_draws=n_draws,
            seed=seed,
            batch_size=batch_size,
        )
    out["marker_correlation"] = _mean_correlation(markers_table)
    out["n_marker_genes"] = float(np.isfinite(markers_table["correlation"]).sum())
    if reference is None:
        out["neighborhood_jaccard"] = float("nan")
    else:
        cells = model.adata if adata is None else adata
        ref_latent = latent_means(reference, cells, seed=seed, batch_size=batch_size)
        out["neighborhood_jaccard"] = knn_jaccard(latent, ref_latent, n_neighbors=n_neighbors)
    return pd.Series(out, dtype=np.float64).reindex(list(UTILITY_FIELDS))
