"""Per-cell retrain-equivalence verdict matrix: methods x forget sets x seeds against retrains.

Experiment ``grid``: on pbmc68k (30% held out, stratified, seed 0; the original scVI
``n_latent=10`` trained ``original_epochs`` epochs, seed 0, :func:`_settings.setting`) or on
simulated data (``cells`` x ``genes``, the original trained with scvi-tools' recipe and epoch
heuristic, :func:`_settings.simulated_setting`), every run of the config (a method with its
arguments) and every baseline (a method with its defaults) is run on each forget set with seeds
``0 .. seeds - 1`` (by default with ``on_degradation="warn"``: a degraded run is measured, not
stopped) and judged by :func:`scvi_unlearn.attack.equivalence_test` against ``references``
default-recipe retrains (seeds ``0 .. references - 1``, cached per forget set).  Returned: one
row per (forget set, method) (:func:`summary`) and one per run (the columns of
:func:`_settings.verdict_columns`).

A run is a table of the config's ``runs``:

* ``label``: its row name, a :meth:`str.format` template of its arguments (``"rewind
  k{rewind_epoch} e{max_epochs} lr{lr:g}"``); ``method``; ``kwargs``: the method's arguments;
* ``none``: arguments set to ``None`` (TOML has no null; ``none = ["average_epochs"]``);
* ``grid``: a product expansion, ``{argument: [values]}``; a value that is a table is merged
  into the arguments and its ``label`` entry used in the row name (the guards of ``distill``);
* ``variant``: a name of :data:`VARIANTS` (arguments that need code: ``data_init``,
  ``heldout_nonmembers``);
* ``rewind_epoch``: run on the original trained again with a checkpoint after that epoch
  (``rewind`` needs one; cached as ``original_rewind{k}``; its weights are compared with the
  cached original's, a checkpoint must not change training);
* ``seeds``: the run's own seeds (default ``0 .. seeds - 1``).

Cost = wall time over that of ``method="retrain"`` (the original's recipe): ``retrain_time``
when given; on simulated data the original's training time when recorded in the cache; else a
retrain timed in this process, on the first forget set at the start and at the end (the mean:
the machine is shared), or on each forget set before its runs (``time_each_set``).

Experiment ``conditional``: a :class:`scvi_unlearn.ConditionalSCVI` original on pbmc68k, where
the forget cells' Fisher information lives, and the per-cell verdict of its runs.

Experiment ``streamed``: ``fast_retrain`` of a model trained out of core (a TileDB-SOMA store of
the simulated members), streamed, against the same in memory (:mod:`._streamed`).
"""

from benchmarks.suites.verdict import (  # noqa: F401  (importing them registers the experiments)
    _conditional,
    _grid,
    _runs,
    _streamed,
    _summary,
)
from benchmarks.suites.verdict._runs import VARIANTS
from benchmarks.suites.verdict._summary import summary

__all__ = ["VARIANTS", "summary"]
