"""Adds :meth:`unlearn`: remove a set of cells from a trained model."""

from __future__ import annotations


class UnlearningMixin:
    """Adds :meth:`unlearn`: remove a set of cells from a trained model.

    Mixed into :class:`scvi_unlearn.SCVI`; reusable by any scvi-tools model whose module is a
    :class:`scvi.module.VAE`.
    """
