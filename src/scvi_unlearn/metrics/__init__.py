"""Utility metrics: held-out ELBO, reconstruction, latent-space structure, marker genes."""

from scvi_unlearn.metrics._elbo import per_cell_elbo

__all__ = ["per_cell_elbo"]
