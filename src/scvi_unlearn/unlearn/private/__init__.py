"""Differentially private training: ``dp_sgd`` (an exact retrain through DP-SGD, Opacus) and
:func:`~scvi_unlearn.unlearn.train_private` (a DP model from the start).

``dp_sgd`` is exact like ``retrain`` (the forget cells are absent) and, besides, gives every
retain cell an :math:`(\\varepsilon, \\delta)` guarantee from Opacus' accountant.
"""

from scvi_unlearn.unlearn.private._dp_sgd import dp_sgd, train_private

__all__ = ["dp_sgd", "train_private"]
