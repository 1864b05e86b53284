"""Scaling and memory: the methods' time and peak memory against a retrain as the data grow.

Experiments:

* ``methods``: each approximate method's time and peak memory through ``model.unlearn()``, each
  in a fresh process, against a retrain estimated from its per-epoch time, 5k-300k simulated
  cells;
* ``fast_retrain_epochs``: ``fast_retrain``'s worst case (its epoch cap) against a
  default-recipe retrain, from per-epoch times;
* ``fit_match``: where the default (fit-matched) ``fast_retrain`` stops on large simulated
  data, and its wall time against the original's training time;
* ``retain_sample``: whether a retain sample changes what an approximate method does;
* ``speed``: every method's wall time relative to ``retrain`` on pbmc68k;
* ``fast_retrain_cost``: where ``fast_retrain``'s time goes on pbmc68k (fixed cost, cost an
  epoch, fit matching, averaging);
* ``ddp``: a method on 2 DDP processes (CPU) against the same on one.

Fresh-process workers (``methods``, ``ddp``) run as ``python -m benchmarks.suites.scaling
method FOLDER METHOD THREADS`` and ``python -m benchmarks.suites.scaling ddp FOLDER METHOD
DEVICES OUT THREADS``.
"""

from benchmarks.suites.scaling import (  # noqa: F401  (importing them registers the experiments)
    _ddp,
    _fast_retrain,
    _methods,
    _retain_sample,
    _speed,
)
