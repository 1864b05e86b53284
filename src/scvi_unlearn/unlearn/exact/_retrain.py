"""``retrain``: exact unlearning by training a fresh model on the retain cells only."""

from __future__ import annotations

import warnings
from typing import Any

from scvi_unlearn._recipe import replayable
from scvi_unlearn.unlearn.core._devices import processes_of, split_over_processes
from scvi_unlearn.unlearn.core._registry import register

#: recipe entries that are provenance, not train() arguments
_NOT_ARGUMENTS = (
    "seed",
    "scvi_tools_version",
    "trainer_kwargs",
    "datamodule",
    "max_epochs_from_heuristic",
)


@register(
    "retrain",
    from_scratch=True,
    guarantee=(
        "exact: a fresh model with the original's architecture and recorded train() "
        "recipe, trained on the retain cells only; depends on the retain cells and the "
        "seed"
    ),
    reference="retrain from scratch (Bourtoule et al. 2021, Machine Unlearning, IEEE S&P)",
    status="recommended",
    measured=(
        "the references: 5/5 CD56+ NK, 5/5 CD34+, 5/5 CD14+ Monocyte (each against the "
        "other four); 1.00x (docs/reproduction.md)"
    ),
    benchmark=False,
)
def retrain(
    task,
    *,
    max_epochs: int | None = None,
    accelerator: str | None = None,
    devices: Any = None,
    enable_progress_bar: bool | None = None,
    **trainer_kwargs,
):
    """Exact unlearning: a fresh model trained with the original recipe on the retain cells.

    The gold standard every approximate method is compared with (the "retrain from scratch"
    reference of the machine-unlearning literature, e.g. Bourtoule et al. 2021, "Machine
    Unlearning", IEEE S&P).  The new model has the original's class and ``init_params_``
    (same architecture, same registry), is initialised from the request's seed and trained
    with every argument of the original :meth:`~scvi_unlearn.SCVI.train` call
    (``train_recipe_``: epochs, batch size, plan and trainer arguments, KL warm-up from zero
    as in the original), on the original's own train / validation split with the forget cells
    removed (passed as ``external_indexing``, so the retain cells play the same role as
    before).  It never sees a forget cell, so it is private by construction.

    The seed: ``model.unlearn(forget, method="retrain")`` uses the seed recorded at training
    time, repeating the original run as closely as the data allow; ``seed=s`` gives other
    retrain references (the membership audit uses several).

    Parameters
    ----------
    task
        The :class:`~scvi_unlearn.unlearn.UnlearningTask`.
    max_epochs
        ``None`` (default): the recorded number of epochs.  A smaller value gives the
        cost-matched exact baseline (e.g. 25% or 50% of the original's epochs).
    accelerator, devices, enable_progress_bar
        ``None`` (default): as recorded; otherwise override the recorded value.
    **trainer_kwargs
        Other :class:`scvi.train.Trainer` arguments for this run (e.g. ``strategy`` for several
        devices), overriding the recorded ones.

    Notes
    -----
    A recorded ``rewind_epoch`` is replayed too: the new model keeps its own rewind checkpoint
    (trained on the retain cells only), unless ``max_epochs`` ends training before it.

    A model trained out of core (``train(datamodule=TileDBDataModule(...))``) is replayed on the
    retain stream of its recorded store (the original's batch size and shuffling, its shuffle
    seed or else the request's), or on the user's ``unlearn(..., datamodule=...)``.

    If the retain training split leaves a last minibatch of 1–2 cells, it is dropped each epoch
    (``drop_last``), as a single-cell batch breaks BatchNorm; scvi-tools' own splitter avoids
    such batches by moving those cells to validation.
    """
    recipe = getattr(task.original, "train_recipe_", None)
    if not recipe:
        raise ValueError(
            "method='retrain' needs the original training recipe (train_recipe_), recorded by "
            "scvi_unlearn.SCVI.train; this model has none."
        )
    kwargs = {k: v for k, v in recipe.items() if k not in _NOT_ARGUMENTS}
    recorded, dropped = replayable(recipe.get("trainer_kwargs") or {})
    if dropped:
        warnings.warn(
            f"The original's training arguments {dropped} could not be saved with it (not "
            "picklable: e.g. a callback class defined inside a function), so this retrain runs "
            "without them; pass them again to unlearn(...) (e.g. callbacks=[...]) to replay "
            "them.",
            UserWarning,
            stacklevel=3,
        )
    kwargs.update(recorded)
    for key, value in (
        ("max_epochs", max_epochs),
        ("accelerator", accelerator),
        ("devices", devices),
        ("enable_progress_bar", enable_progress_bar),
    ):
        if value is not None:
            kwargs[key] = value
    kwargs.update(trainer_kwargs)
    if kwargs.get("max_epochs") is not None and int(kwargs["max_epochs"]) < 1:
        raise ValueError(f"max_epochs must be >= 1, got {kwargs['max_epochs']}.")
    # the recorded minibatch was per process of the original's run; a step of this run sees
    # as many cells, shared out over its own processes (scvi_unlearn.unlearn.core._devices)
    recorded_run = {k: recipe.get(k, "auto") for k in ("accelerator", "devices")}
    recorded_run.update(recipe.get("trainer_kwargs") or {})
    step_cells = int(kwargs.get("batch_size") or 128) * processes_of(recorded_run)
    batch_size, _ = split_over_processes(step_cells, kwargs, task.budget)
    kwargs.update(
        task.train_data(batch_size, kwargs.pop("datasplitter_kwargs", None), replay=True)
    )
    if kwargs.get("max_epochs") is None:
        # the original used scvi-tools' heuristic on its AnnData's size; keep that value
        from scvi.model._utils import get_max_epochs_heuristic

        kwargs["max_epochs"] = get_max_epochs_heuristic(task.original.adata.n_obs)
    rewind_epoch = kwargs.get("rewind_epoch")
    if rewind_epoch is not None and int(kwargs["max_epochs"]) <= int(rewind_epoch):
        kwargs["rewind_epoch"] = None  # a shortened retrain never reaches the recorded epoch
    model = task.new_model(copy_weights=False)
    model.train(**kwargs)
    task.log_history(model)
    return model
