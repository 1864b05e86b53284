"""Per-sample diagonal Fisher information, overlap statistics and a classifier control.

* :func:`diagonal_fisher` / :func:`fisher_of_cells`: per-sample diagonal empirical Fisher of
  scVI's negative ELBO over a set of cells (fast: one vectorised backward per mini-batch).
* :func:`squared_gradient_mean`: the same estimator for any module and per-example loss.
* :func:`cosine`, :func:`cosine_by_tensor`, :func:`cosine_by_category`,
  :func:`normalized_cosine`, :func:`topk_overlap`, :func:`effective_rank`,
  :func:`log_correlation`, :func:`proposition1`: overlap statistics of two Fishers.
* :func:`fisher_overlap` (:meth:`scvi_unlearn.SCVI.fisher_overlap`): the forget-vs-retain
  analysis with a classifier control, returning a :class:`FisherOverlap`.
"""

from scvi_unlearn.fisher._analysis import FisherOverlap, fisher_overlap
from scvi_unlearn.fisher._classifier import (
    CellTypeClassifier,
    classifier_category,
    classifier_cell_loss,
    train_classifier,
)
from scvi_unlearn.fisher._overlap import (
    cosine,
    cosine_by_category,
    cosine_by_tensor,
    effective_rank,
    log_correlation,
    normalized_cosine,
    overlap_statistics,
    proposition1,
    topk_overlap,
    vae_category,
)
from scvi_unlearn.fisher._per_sample import DiagonalFisher, squared_gradient_mean
from scvi_unlearn.fisher._vae_fisher import (
    diagonal_fisher,
    draw_noise,
    fisher_of_cells,
    vae_cell_loss,
)

__all__ = [
    "CellTypeClassifier",
    "DiagonalFisher",
    "FisherOverlap",
    "classifier_category",
    "classifier_cell_loss",
    "cosine",
    "cosine_by_category",
    "cosine_by_tensor",
    "diagonal_fisher",
    "draw_noise",
    "effective_rank",
    "fisher_of_cells",
    "fisher_overlap",
    "log_correlation",
    "normalized_cosine",
    "overlap_statistics",
    "proposition1",
    "squared_gradient_mean",
    "topk_overlap",
    "train_classifier",
    "vae_category",
    "vae_cell_loss",
]
