"""Unlearning methods, their registry and the shared training machinery.

Use through :meth:`scvi_unlearn.SCVI.unlearn`::

    new = model.unlearn(forget_cells, method="scrub")

:data:`METHODS` maps names to methods; :func:`register` adds a user method.  Each built-in
method lives in its own module and documents its paper, hyper-parameters and measured defaults
(see ``docs/unlearning.md``).
"""

from scvi_unlearn.unlearn._budget import (
    RETAIN_CAP,
    RETAIN_FLOOR,
    RETAIN_PER_FORGET,
    retain_sample_size,
)
from scvi_unlearn.unlearn._conditional_reset import conditional_reset
from scvi_unlearn.unlearn._contrastive import ContrastivePlan, contrastive
from scvi_unlearn.unlearn._datamodule import RetainForgetDataModule
from scvi_unlearn.unlearn._distill import DistillPlan, distill
from scvi_unlearn.unlearn._dp_sgd import dp_sgd, train_private
from scvi_unlearn.unlearn._engine import DEFAULT_METHOD
from scvi_unlearn.unlearn._extragradient import (
    ExtraAdam,
    ExtragradientPlan,
    ExtraSGD,
    extragradient,
)
from scvi_unlearn.unlearn._fast_retrain import CosineTrainingPlan, fast_retrain
from scvi_unlearn.unlearn._finetune import RetainTrainingPlan, finetune
from scvi_unlearn.unlearn._fisher import PreconditionedSGD, fisher
from scvi_unlearn.unlearn._gradient_ascent import NegGradPlusPlan, gradient_ascent
from scvi_unlearn.unlearn._guard import (
    CHECK_Z,
    MIN_CHECK_CELLS,
    RETAIN_CONFIDENCE,
    RETAIN_TOLERANCE,
    UnlearningError,
    UnlearningWarning,
)
from scvi_unlearn.unlearn._langevin import LangevinPlan, langevin
from scvi_unlearn.unlearn._mi_regularized import MIRegularizedPlan, mi_regularized
from scvi_unlearn.unlearn._parallel import UnlearningJob, run_jobs
from scvi_unlearn.unlearn._plan import NonFiniteLossError, UnlearningTrainingPlan
from scvi_unlearn.unlearn._record import forget_digest, verify_forget_digest
from scvi_unlearn.unlearn._registry import (
    FROM_SCRATCH,
    METHODS,
    get_method,
    register,
    trainer_arguments,
)
from scvi_unlearn.unlearn._reinit_finetune import reinit_finetune
from scvi_unlearn.unlearn._retrain import retrain
from scvi_unlearn.unlearn._rewind import rewind
from scvi_unlearn.unlearn._scrub import ScrubPlan, scrub
from scvi_unlearn.unlearn._ssd import ssd
from scvi_unlearn.unlearn._task import UnlearningTask

__all__ = [
    "CHECK_Z",
    "DEFAULT_METHOD",
    "FROM_SCRATCH",
    "METHODS",
    "MIN_CHECK_CELLS",
    "RETAIN_CAP",
    "RETAIN_FLOOR",
    "RETAIN_PER_FORGET",
    "RETAIN_CONFIDENCE",
    "RETAIN_TOLERANCE",
    "ContrastivePlan",
    "DistillPlan",
    "ExtraAdam",
    "ExtraSGD",
    "ExtragradientPlan",
    "CosineTrainingPlan",
    "LangevinPlan",
    "MIRegularizedPlan",
    "NegGradPlusPlan",
    "NonFiniteLossError",
    "PreconditionedSGD",
    "RetainForgetDataModule",
    "RetainTrainingPlan",
    "ScrubPlan",
    "UnlearningError",
    "UnlearningJob",
    "UnlearningTask",
    "UnlearningTrainingPlan",
    "UnlearningWarning",
    "conditional_reset",
    "contrastive",
    "distill",
    "dp_sgd",
    "extragradient",
    "fast_retrain",
    "finetune",
    "fisher",
    "forget_digest",
    "get_method",
    "gradient_ascent",
    "langevin",
    "mi_regularized",
    "register",
    "reinit_finetune",
    "run_jobs",
    "train_private",
    "trainer_arguments",
    "retain_sample_size",
    "retrain",
    "rewind",
    "scrub",
    "ssd",
    "verify_forget_digest",
]
