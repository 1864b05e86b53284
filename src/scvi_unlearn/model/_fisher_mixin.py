"""Adds :meth:`fisher_overlap`: per-sample Fisher-information overlap between cell sets."""

from __future__ import annotations


class FisherMixin:
    """Adds :meth:`fisher_overlap`: per-sample Fisher-information overlap between cell sets.

    Mixed into :class:`scvi_unlearn.SCVI`; reusable by any scvi-tools model whose module is a
    :class:`scvi.module.VAE`.
    """
