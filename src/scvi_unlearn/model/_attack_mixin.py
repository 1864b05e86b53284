"""Adds :meth:`membership_attack`: a membership-inference audit with confidence intervals."""

from __future__ import annotations


class MembershipAttackMixin:
    """Adds :meth:`membership_attack`: a membership-inference audit with confidence intervals.

    Mixed into :class:`scvi_unlearn.SCVI`; reusable by any scvi-tools model whose module is a
    :class:`scvi.module.VAE`.
    """
