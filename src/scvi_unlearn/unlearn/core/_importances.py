"""Per-sample diagonal Fisher importances of the original model on retain and forget cells.

Shared by ``ssd`` and ``fisher``; uses :func:`scvi_unlearn.fisher.diagonal_fisher` on copies
(the original model and its AnnData are never handed to the estimator).
"""

from __future__ import annotations

import torch


def retain_importance(
    task, model, *, n_draws: int, seed: int, batch_size: int, retain_sample: int | str | None
):
    """Fisher of ``model`` (a copy with the original weights, bound to the retain cells): the
    mean over a random sample of retain cells (:meth:`UnlearningTask.retain_sample_positions`;
    every retain cell when the sample covers them)."""
    from scvi_unlearn.fisher import diagonal_fisher

    cells = task.retain_sample_positions(retain_sample)
    indices = None if cells.size == task.adata.n_obs else cells
    return diagonal_fisher(
        model, indices=indices, n_draws=n_draws, seed=seed, batch_size=batch_size
    )


def forget_importance(task, *, n_draws: int, seed: int, batch_size: int):
    """Fisher of the original weights on the forget cells (through a throw-away copy)."""
    from scvi_unlearn.fisher import diagonal_fisher

    scratch = task.forget_model()
    return diagonal_fisher(scratch, n_draws=n_draws, seed=seed + 1, batch_size=batch_size)


def pooled(
    a: dict[str, torch.Tensor], n_a: int, b: dict[str, torch.Tensor], n_b: int
) -> dict[str, torch.Tensor]:
    """Mean over the union of two cell sets from the means over each."""
    return {k: (n_a * a[k] + n_b * b[k]) / (n_a + n_b) for k in a if k in b}
