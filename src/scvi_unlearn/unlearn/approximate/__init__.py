"""Approximate unlearning: the original model edited so that it forgets (research baselines).

These methods start from the original's weights (or its early checkpoint, or distil from it), so
the result may still carry a trace of the forget cells; each is judged per cell against retrains
of the original's recipe (``docs/equivalence.md``).
"""

from scvi_unlearn.unlearn.approximate._conditional_reset import conditional_reset
from scvi_unlearn.unlearn.approximate._contrastive import ContrastivePlan, contrastive
from scvi_unlearn.unlearn.approximate._distill import DistillPlan, distill
from scvi_unlearn.unlearn.approximate._finetune import RetainTrainingPlan, finetune
from scvi_unlearn.unlearn.approximate._fisher import PreconditionedSGD, fisher
from scvi_unlearn.unlearn.approximate._gradient_ascent import NegGradPlusPlan, gradient_ascent
from scvi_unlearn.unlearn.approximate._langevin import LangevinPlan, langevin
from scvi_unlearn.unlearn.approximate._reinit_finetune import reinit_finetune
from scvi_unlearn.unlearn.approximate._rewind import rewind
from scvi_unlearn.unlearn.approximate._scrub import ScrubPlan, scrub
from scvi_unlearn.unlearn.approximate._ssd import ssd

__all__ = [
    "ContrastivePlan",
    "DistillPlan",
    "LangevinPlan",
    "NegGradPlusPlan",
    "PreconditionedSGD",
    "RetainTrainingPlan",
    "ScrubPlan",
    "conditional_reset",
    "contrastive",
    "distill",
    "finetune",
    "fisher",
    "gradient_ascent",
    "langevin",
    "reinit_finetune",
    "rewind",
    "scrub",
    "ssd",
]
