"""Adversarial (approximate) unlearning: the model trained against a membership critic.

``extragradient`` and ``mi_regularized`` share one critic (:mod:`._critic`) that tells forget
cells from non-members on differentiable per-cell features; the model is trained so that the
critic cannot.  Like the other approximate methods, they start from the original's weights.
"""

from scvi_unlearn.unlearn.adversarial._extragradient import (
    ExtraAdam,
    ExtragradientPlan,
    ExtraSGD,
    extragradient,
)
from scvi_unlearn.unlearn.adversarial._mi_regularized import MIRegularizedPlan, mi_regularized

__all__ = [
    "ExtraAdam",
    "ExtraSGD",
    "ExtragradientPlan",
    "MIRegularizedPlan",
    "extragradient",
    "mi_regularized",
]
