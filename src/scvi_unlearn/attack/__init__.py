"""Membership-inference audit: per-cell features, attackers, metrics with CIs, retrain target.

The entry point is :meth:`scvi_unlearn.SCVI.membership_attack` (from
:class:`~scvi_unlearn.model.MembershipAttackMixin`); the pieces below are public for custom
audits.  Protocol and rationale: ``docs/audit.md``.
"""

from scvi_unlearn.attack._audit import ATTACKS, run_membership_attack
from scvi_unlearn.attack._calibrated import calibrated_scores
from scvi_unlearn.attack._drift import drift_attack
from scvi_unlearn.attack._equivalence import STATISTICS, ScoreCache, equivalence_test
from scvi_unlearn.attack._equivalence_report import EquivalenceReport
from scvi_unlearn.attack._features import (
    SUMMARY_FEATURES,
    attack_features,
    feature_columns,
    knn_distance,
    posterior_parameters,
)
from scvi_unlearn.attack._forget_quality import (
    ForgetQuality,
    forget_quality,
    forget_quality_of_models,
)
from scvi_unlearn.attack._metrics import (
    DEFAULT_FPRS,
    advantage,
    attack_metrics,
    bootstrap_ci,
    bootstrap_metrics,
    ci_from_replicates,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
    yeom_advantage,
)
from scvi_unlearn.attack._mlp import (
    CrossFitScores,
    SpectralMLPAttacker,
    cross_fit,
    grouped_folds,
    mlp_attack,
    paired_folds,
)
from scvi_unlearn.attack._power import (
    DEFAULT_MARGIN,
    ReferencePowerWarning,
    equivalence_power,
    references_needed,
)
from scvi_unlearn.attack._references import (
    build_retrain_target,
    load_references,
    save_references,
    train_references,
)
from scvi_unlearn.attack._report import PROTOCOLS, AttackReport, Judge, TargetCheck
from scvi_unlearn.attack._shadow import shadow_attack, shadow_cells
from scvi_unlearn.attack._target import RetrainTarget, retrain_target
from scvi_unlearn.attack._threshold import THRESHOLD_SCORES, threshold_scores
from scvi_unlearn.attack._utility import MIN_TYPE_CELLS, SAME_TYPE_MARGIN

__all__ = [
    "ATTACKS",
    "DEFAULT_FPRS",
    "DEFAULT_MARGIN",
    "MIN_TYPE_CELLS",
    "PROTOCOLS",
    "SUMMARY_FEATURES",
    "THRESHOLD_SCORES",
    "AttackReport",
    "CrossFitScores",
    "EquivalenceReport",
    "ForgetQuality",
    "Judge",
    "ReferencePowerWarning",
    "RetrainTarget",
    "SAME_TYPE_MARGIN",
    "STATISTICS",
    "ScoreCache",
    "SpectralMLPAttacker",
    "TargetCheck",
    "advantage",
    "attack_features",
    "attack_metrics",
    "bootstrap_ci",
    "bootstrap_metrics",
    "build_retrain_target",
    "calibrated_scores",
    "ci_from_replicates",
    "cross_fit",
    "drift_attack",
    "equivalence_power",
    "equivalence_test",
    "feature_columns",
    "forget_quality",
    "forget_quality_of_models",
    "shadow_attack",
    "shadow_cells",
    "grouped_folds",
    "knn_distance",
    "load_references",
    "mlp_attack",
    "paired_folds",
    "posterior_parameters",
    "references_needed",
    "retrain_target",
    "roc_auc",
    "roc_curve",
    "run_membership_attack",
    "save_references",
    "threshold_scores",
    "tpr_at_fpr",
    "train_references",
    "yeom_advantage",
]
