"""Shared machinery of the unlearning methods (no method lives here).

* :mod:`._registry` -- :data:`~scvi_unlearn.unlearn.METHODS`,
  :func:`~scvi_unlearn.unlearn.register` and :func:`~scvi_unlearn.unlearn.methods` (what each
  method guarantees; the built-in rows in :mod:`._guarantees`);
* :mod:`._engine` -- one unlearning request from start to end (behind
  :meth:`scvi_unlearn.SCVI.unlearn`); :mod:`._parallel` -- many requests, possibly in workers;
* :mod:`._task` -- what a method receives (:class:`~scvi_unlearn.unlearn.UnlearningTask`);
* :mod:`._soma_source`, :mod:`._stream` -- models trained out of core on a TileDB-SOMA store:
  the recorded source, the retain stream and the streamed task (``tiledbsoma`` imported lazily);
* :mod:`._plan`, :mod:`._datamodule`, :mod:`._losses` -- the training plan, retain + forget
  minibatches and per-cell losses that the gradient-based methods share;
* :mod:`._budget` -- the retain-sample budget (cost follows the forget set, not the data);
* :mod:`._averaging`, :mod:`._fit_match` -- weight averaging and fit-matched stopping of a fresh
  model (used by the exact fast schedule and by ``rewind``);
* :mod:`._guard` -- the post-unlearning utility checks; :mod:`._record` -- provenance;
  :mod:`._certificate` -- the deletion certificate and its verification;
* :mod:`._importances` -- per-sample Fisher importances (``ssd``, ``fisher``, ``reinit_finetune``);
* :mod:`._arguments` -- argument checks with clear errors.

Imports flow one way: the method subpackages (:mod:`~scvi_unlearn.unlearn.exact`,
:mod:`~scvi_unlearn.unlearn.private`, :mod:`~scvi_unlearn.unlearn.approximate`,
:mod:`~scvi_unlearn.unlearn.adversarial`) import from here, never the reverse.
"""
