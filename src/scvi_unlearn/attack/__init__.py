"""Membership-inference audit: per-cell features, attackers, metrics with CIs, retrain target.

The entry point is :meth:`scvi_unlearn.SCVI.membership_attack` (from
:class:`~scvi_unlearn.model.MembershipAttackMixin`); the pieces below are public for custom
audits.  Protocol and rationale: ``docs/audit.md``.
"""

from scvi_unlearn.attack._audit import ATTACKS, run_membership_attack
from scvi_unlearn.attack._calibrated import calibrated_scores
from scvi_unlearn.attack._drift import drift_attack
from scvi_unlearn.attack._features import (
    SUMMARY_FEATURES,
    attack_features,
    feature_columns,
    knn_distance,
    posterior_parameters,
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
from scvi_unlearn.attack._report import PROTOCOLS, AttackReport
from scvi_unlearn.attack._shadow import shadow_attack, shadow_cells
from scvi_unlearn.attack._target import (
    RetrainTarget,
    TargetCheck,
    build_retrain_target,
    retrain_target,
)
from scvi_unlearn.attack._threshold import THRESHOLD_SCORES, threshold_scores

__all__ = [
    "ATTACKS",
    "DEFAULT_FPRS",
    "PROTOCOLS",
    "SUMMARY_FEATURES",
    "THRESHOLD_SCORES",
    "AttackReport",
    "CrossFitScores",
    "RetrainTarget",
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
    "feature_columns",
    "shadow_attack",
    "shadow_cells",
    "grouped_folds",
    "knn_distance",
    "mlp_attack",
    "paired_folds",
    "posterior_parameters",
    "retrain_target",
    "roc_auc",
    "roc_curve",
    "run_membership_attack",
    "threshold_scores",
    "tpr_at_fpr",
    "yeom_advantage",
]
