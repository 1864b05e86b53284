"""DP speed: cost, privacy accounting and utility of the ``dp_sgd`` unlearning method.

Experiments:

* ``speed``: a DP-SGD epoch against a non-private epoch on simulated data, and the epsilon
  check (the reported epsilon recomputed by a fresh accountant);
* ``utility``: held-out ELBO of ``dp_sgd`` at several epsilons against ``retrain`` and
  ``fast_retrain`` on pbmc68k;
* ``grid``: the hyper-parameter study behind ``dp_sgd``'s defaults on pbmc68k (the grid is the
  config's data).
"""

from benchmarks.suites.dp import (  # noqa: F401  (importing them registers the experiments)
    _pbmc68k,
    _speed,
)
