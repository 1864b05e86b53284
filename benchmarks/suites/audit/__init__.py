"""Audit speed and the attack checks: the audit's and the Fisher estimator's cost, attack nulls.

Experiments:

* ``scaling``: the audit (features, attacks, equivalence test) and the Fisher analysis on
  30k simulated training cells, wall time of each step;
* ``fisher_speed``: the per-sample diagonal Fisher estimator against a per-cell backward loop;
* ``pbmc_audit``: the membership audit of the original and of an independent retrain on
  pbmc68k ("CD56+ NK"), every attack, with the retrain targets and the ROC figure;
* ``null_checks``: the cross-fitted MLP's fold designs and the shadow attack under null data;
* ``fold_antilearning``: out-of-fold anti-learning on a matched design, stratified vs
  matched-pair folds.
"""

from benchmarks.suites.audit import (  # noqa: F401  (importing them registers the experiments)
    _fisher_speed,
    _nulls,
    _pbmc_audit,
    _scaling,
)
