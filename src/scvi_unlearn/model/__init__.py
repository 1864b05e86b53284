"""Models: the drop-in :class:`SCVI` and the mixins that give it its extra capabilities."""

from scvi_unlearn.model._attack_mixin import MembershipAttackMixin
from scvi_unlearn.model._conditional import ConditionalSCVI
from scvi_unlearn.model._conditional_module import ConditionalVAE
from scvi_unlearn.model._fisher_mixin import FisherMixin
from scvi_unlearn.model._scvi import SCVI
from scvi_unlearn.model._unlearning_mixin import UnlearningMixin

__all__ = [
    "SCVI",
    "ConditionalSCVI",
    "ConditionalVAE",
    "FisherMixin",
    "MembershipAttackMixin",
    "UnlearningMixin",
]
