"""Unlearning methods, their registry and the shared training machinery.

Use through :meth:`scvi_unlearn.SCVI.unlearn`::

    new = model.unlearn(forget_cells, method="scrub")

:data:`METHODS` maps names to methods; :func:`register` adds a user method; :func:`methods`
is the table of what each guarantees (kind, exact, private, guarantee, reference, status,
measured pass rate and cost).  Each built-in
method lives in its own module and documents its paper, hyper-parameters and measured defaults
(see ``docs/unlearning.md``).

The folders show what each method guarantees: :mod:`~scvi_unlearn.unlearn.exact` (a fresh model
on the retain cells: ``fast_retrain``, the default, and ``retrain``),
:mod:`~scvi_unlearn.unlearn.private` (``dp_sgd``, exact and differentially private),
:mod:`~scvi_unlearn.unlearn.approximate` and :mod:`~scvi_unlearn.unlearn.adversarial` (edits of
the original; research baselines), and :mod:`~scvi_unlearn.unlearn.core` (the machinery they
share: registry, task, training plan, datamodule, budget, guard, record).
"""

from scvi_unlearn.unlearn.adversarial._extragradient import (
    ExtraAdam,
    ExtragradientPlan,
    ExtraSGD,
    extragradient,
)
from scvi_unlearn.unlearn.adversarial._mi_regularized import MIRegularizedPlan, mi_regularized
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
from scvi_unlearn.unlearn.core._budget import (
    RETAIN_CAP,
    RETAIN_FLOOR,
    RETAIN_PER_FORGET,
    retain_sample_size,
)
from scvi_unlearn.unlearn.core._datamodule import RetainForgetDataModule
from scvi_unlearn.unlearn.core._guarantees import METHOD_COLUMNS, guarantee, methods
from scvi_unlearn.unlearn.core._guard import (
    CHECK_Z,
    MIN_CHECK_CELLS,
    RETAIN_CONFIDENCE,
    RETAIN_TOLERANCE,
    UnlearningError,
    UnlearningWarning,
)
from scvi_unlearn.unlearn.core._parallel import UnlearningJob, run_jobs
from scvi_unlearn.unlearn.core._plan import NonFiniteLossError, UnlearningTrainingPlan
from scvi_unlearn.unlearn.core._record import forget_digest, verify_forget_digest
from scvi_unlearn.unlearn.core._registry import (
    DEFAULT_METHOD,
    FROM_SCRATCH,
    KINDS,
    METHODS,
    get_method,
    register,
    trainer_arguments,
)
from scvi_unlearn.unlearn.core._task import UnlearningTask
from scvi_unlearn.unlearn.exact._fast_retrain import CosineTrainingPlan, fast_retrain
from scvi_unlearn.unlearn.exact._retrain import retrain
from scvi_unlearn.unlearn.private._dp_sgd import dp_sgd, train_private

__all__ = [
    "CHECK_Z",
    "DEFAULT_METHOD",
    "FROM_SCRATCH",
    "KINDS",
    "METHODS",
    "METHOD_COLUMNS",
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
    "guarantee",
    "langevin",
    "mi_regularized",
    "methods",
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
