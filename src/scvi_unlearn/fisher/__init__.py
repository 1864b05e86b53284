"""Per-sample diagonal Fisher information, overlap statistics and a classifier control."""

from scvi_unlearn.fisher._per_sample import DiagonalFisher, squared_gradient_mean
from scvi_unlearn.fisher._vae_fisher import (
    diagonal_fisher,
    draw_noise,
    fisher_of_cells,
    vae_cell_loss,
)

__all__ = [
    "DiagonalFisher",
    "diagonal_fisher",
    "draw_noise",
    "fisher_of_cells",
    "squared_gradient_mean",
    "vae_cell_loss",
]
