"""Utility metrics: held-out ELBO, reconstruction, latent-space structure, marker genes.

Every metric takes a model (:class:`scvi_unlearn.SCVI` or :class:`scvi.model.SCVI`) and the
cells to evaluate, which need not be the model's own AnnData (held-out cells, a superset, cells
registered with another model); the user's AnnData is never mutated.  Stochastic steps take an
explicit ``seed`` and leave the global RNG untouched.  :func:`utility_report` computes them all.
"""

from scvi_unlearn.metrics._elbo import per_cell_elbo
from scvi_unlearn.metrics._heldout import heldout_elbo, summarize_elbo
from scvi_unlearn.metrics._latent import (
    ari_from_latent,
    knn_jaccard,
    latent_ari,
    latent_means,
    latent_silhouette,
    neighborhood_preservation,
    silhouette_from_latent,
)
from scvi_unlearn.metrics._markers import (
    marker_correlation,
    marker_gene_correlations,
    select_marker_genes,
)
from scvi_unlearn.metrics._report import UTILITY_FIELDS, utility_report

__all__ = [
    "UTILITY_FIELDS",
    "ari_from_latent",
    "heldout_elbo",
    "knn_jaccard",
    "latent_ari",
    "latent_means",
    "latent_silhouette",
    "marker_correlation",
    "marker_gene_correlations",
    "neighborhood_preservation",
    "per_cell_elbo",
    "select_marker_genes",
    "silhouette_from_latent",
    "summarize_elbo",
    "utility_report",
]
