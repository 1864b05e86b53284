"""What an unlearning method receives: :class:`UnlearningTask`."""

from __future__ import annotations

import copy
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scvi.train import TrainRunner

from scvi_unlearn.unlearn.core._budget import retain_sample_size, sample_positions
from scvi_unlearn.unlearn.core._datamodule import RetainForgetDataModule, drops_last_batch
from scvi_unlearn.unlearn.core._devices import split_over_processes


class UnlearningTask:
    """The original model (read-only), the retain cells and the forget cells of one request.

    Built by :meth:`scvi_unlearn.SCVI.unlearn` and passed to the method.  The method must not
    modify :attr:`original` (use :meth:`new_model` and :attr:`teacher_module`, which are copies)
    and returns a model bound to :attr:`adata`.

    Attributes
    ----------
    original
        The model being unlearned.  Read-only.
    adata
        A registered copy of the retain cells only (the new model's AnnData): the original's
        training and validation cells minus the forget cells, in the original's order.
    adata_manager
        Its :class:`~scvi.data.AnnDataManager` (transferred from the original's: identical
        categorical mappings and architecture, even when a whole label disappears).
    train_indices, validation_indices
        Positions in :attr:`adata` of the retain cells of the original's training and
        validation splits.
    n_forget
        Number of cells to forget.
    seed
        The request's seed; the method runs inside :func:`~scvi_unlearn._seeding.isolated_seed`
        with it.
    log
        List of per-step dicts of floats; methods append their losses (saved in
        ``unlearn_record_["log"]``).
    budget
        The retain sample sizes the method used (saved in ``unlearn_record_["budget"]``):
        ``retain_cells_per_epoch`` (:meth:`datamodule`) and ``retain_cells_importance``
        (:meth:`retain_sample_positions`).
    teacher_scores
        Per-cell ELBOs of the original, keyed by the cells they score, computed once per
        request (:func:`~scvi_unlearn.unlearn.core._guard.original_validation_scores`: the
        fit-matching target and the retain check share them).
    """

    def __init__(
        self,
        original,
        adata: AnnData,
        adata_manager,
        train_indices: np.ndarray,
        validation_indices: np.ndarray,
        forget_positions: np.ndarray | None,
        seed: int,
    ):
        self.original = original
        self.adata = adata
        self.adata_manager = adata_manager
        self.train_indices = np.asarray(train_indices, dtype=int)
        self.validation_indices = np.asarray(validation_indices, dtype=int)
        self._forget_positions = forget_positions
        self.n_forget = 0 if forget_positions is None else int(len(forget_positions))
        self.seed = int(seed)
        self.log: list[dict[str, float]] = []
        self.budget: dict[str, int] = {}
        self.teacher_scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._managers: list = []

    # ------------------------------------------------------------------ models
    def new_model(self, *, copy_weights: bool, **init_overrides):
        """A new model of the original's class and init arguments, bound to :attr:`adata`.

        Parameters
        ----------
        copy_weights
            Start from a deep copy of the original's weights (fine-tuning methods) or from a
            fresh initialisation (retraining; drawn from the seeded global generator).
        **init_overrides
            Init arguments that replace the original's (e.g. DP-SGD's LayerNorm instead of
            BatchNorm); only with ``copy_weights=False``.
        """
        if copy_weights and init_overrides:
            raise ValueError("Init overrides change the architecture: copy_weights must be False.")
        init = copy.deepcopy(self.original.init_params_)
        if "non_kwargs" in init:
            non_kwargs = init["non_kwargs"]
            kwargs = {k: v for group in init["kwargs"].values() for k, v in group.items()}
        else:  # pragma: no cover - pre-1.0 checkpoints
            non_kwargs = {k: v for k, v in init.items() if not isinstance(v, dict)}
            kwargs = {k: v for d in init.values() if isinstance(d, dict) for k, v in d.items()}
        kwargs.update(init_overrides)
        model = type(self.original)(self.adata, **non_kwargs, **kwargs)
        if copy_weights:
            model.module.load_state_dict(copy.deepcopy(self.original.module.state_dict()))
        model.train_recipe_ = self.retain_recipe()
        return model

    def retain_recipe(self) -> dict | None:
        """The original's ``train_recipe_``, with any external indexing set to the retain split.

        A model returned by ``unlearn`` keeps the original's recipe, so that retraining it later
        (``new.unlearn(more_cells, method="retrain")``) follows the original training.
        """
        recipe = copy.deepcopy(getattr(self.original, "train_recipe_", None))
        if recipe is None:
            return None
        ds = recipe.get("datasplitter_kwargs")
        if isinstance(ds, dict) and "external_indexing" in ds:
            ds["external_indexing"] = self.retain_indexing()
        return recipe

    def retain_indexing(self) -> list[np.ndarray]:
        """``[train, validation, test]`` positions of the retain cells in :attr:`adata`, as
        scvi-tools' ``DataSplitter(external_indexing=...)`` takes them (no test cells): the
        retain cells keep the role they had in the original's training."""
        return [
            self.train_indices.copy(),
            self.validation_indices.copy(),
            np.asarray([], dtype=int),
        ]

    def retain_splitter(self, batch_size: int) -> dict[str, Any]:
        """scvi-tools ``datasplitter_kwargs`` for a model trained on the retain cells in their
        original roles (:meth:`retain_indexing`) with ``batch_size`` cells a batch; with
        ``drop_last`` when the last training batch would be dropped
        (:func:`~scvi_unlearn.unlearn.core._datamodule.drops_last_batch`: a 1-2 cell batch breaks
        BatchNorm)."""
        splitter: dict[str, Any] = {"external_indexing": self.retain_indexing()}
        if drops_last_batch(self.train_indices.size, batch_size):
            splitter["drop_last"] = True
        return splitter

    def train_data(
        self,
        batch_size: int,
        datasplitter_kwargs: dict[str, Any] | None = None,
        *,
        replay: bool = False,
    ) -> dict[str, Any]:
        """The ``model.train`` arguments that feed it the retain cells in their original roles,
        ``batch_size`` cells a minibatch: here ``batch_size`` and ``datasplitter_kwargs``
        (``datasplitter_kwargs`` updated with :meth:`retain_splitter`); a streamed task
        (:class:`~scvi_unlearn.unlearn.core._stream.StreamTask`) gives a ``datamodule`` instead.
        ``replay``: the call replays the original's recipe (``retrain``; used by streamed
        tasks, which then keep the original stream's batch size and shuffling)."""
        return {
            "batch_size": batch_size,
            "datasplitter_kwargs": {
                **(datasplitter_kwargs or {}),
                **self.retain_splitter(batch_size),
            },
        }

    def is_result(self, model) -> bool:
        """Whether ``model`` is what a method must return: a model of the original's class bound
        to :attr:`adata` (made with :meth:`new_model`)."""
        return type(model) is type(self.original) and model.adata is self.adata

    def log_history(self, model) -> None:
        """Append a model's per-epoch training loss (scvi-tools' ``history_``) to :attr:`log`,
        for methods that train through ``model.train`` (the retrains)."""
        history = model.history_ or {}
        for key in ("train_loss_epoch", "elbo_train"):
            if key in history:
                for epoch, value in enumerate(np.asarray(history[key]).ravel()):
                    self.log.append({"epoch": epoch, "step": epoch, "loss": float(value)})
                break

    @cached_property
    def teacher_module(self):
        """A frozen deep copy of the original's module, in eval mode (no gradients)."""
        teacher = copy.deepcopy(self.original.module)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    # ------------------------------------------------------------------ forget data
    @cached_property
    def forget_adata(self) -> AnnData:
        """A registered copy of the forget cells (taken from the original's AnnData).

        Raises
        ------
        ValueError
            When some forget cells are not in the original model's AnnData.
        """
        if self._forget_positions is None:
            raise ValueError(
                "This method needs the forget cells' data, but some of them are not in the "
                "model's AnnData (model.adata). Only 'retrain' works without them."
            )
        sub = _minimal_copy(self.original.adata, self._forget_positions)
        manager = self.original.adata_manager.transfer_fields(sub)
        type(self.original).register_manager(manager)
        self._managers.append(manager)
        return sub

    @property
    def forget_manager(self):
        """Manager of :attr:`forget_adata`."""
        return type(self.original)._get_most_recent_anndata_manager(
            self.forget_adata, required=True
        )

    def forget_model(self):
        """A throw-away model with the original's weights bound to :attr:`forget_adata`.

        Use it to evaluate the original on the forget cells (ELBO, Fisher) without touching the
        original model or its AnnData.
        """
        init = copy.deepcopy(self.original.init_params_)
        non_kwargs = init.get("non_kwargs", {})
        kwargs = {k: v for group in init.get("kwargs", {}).values() for k, v in group.items()}
        model = type(self.original)(self.forget_adata, **non_kwargs, **kwargs)
        model.module.load_state_dict(copy.deepcopy(self.original.module.state_dict()))
        model.module.eval()
        model.is_trained_ = True
        return model

    # ------------------------------------------------------------------ training
    def datamodule(
        self,
        batch_size: int = 128,
        *,
        with_forget: bool,
        forget_batch_size: int | None = None,
        retain_sample: int | str | None = None,
    ) -> RetainForgetDataModule:
        """Retain (and optionally forget) minibatches for :meth:`fit`.

        Parameters
        ----------
        batch_size, forget_batch_size
            Retain / forget cells per minibatch.
        with_forget
            Whether every step also gets a (cycled) forget minibatch.
        retain_sample
            Retain training cells per epoch, as
            :func:`~scvi_unlearn.unlearn.core._budget.retain_sample_size` resolves it (``None``:
            the default rule, proportional to the forget set; ``"all"``: every cell).
        """
        size = retain_sample_size(self.n_forget, self.train_indices.size, retain_sample)
        self.budget["retain_cells_per_epoch"] = size
        return RetainForgetDataModule(
            self.adata_manager,
            self.train_indices,
            self.validation_indices,
            forget_manager=self.forget_manager if with_forget else None,
            batch_size=batch_size,
            forget_batch_size=forget_batch_size,
            retain_sample=size,
            seed=self.seed,
        )

    def retain_sample_positions(self, retain_sample: int | str | None = None) -> np.ndarray:
        """Positions in :attr:`adata` of a seeded random sample of the retain cells (training and
        validation), sized by :func:`~scvi_unlearn.unlearn.core._budget.retain_sample_size`; for
        estimates of a mean over the retain cells (Fisher importances)."""
        size = retain_sample_size(self.n_forget, self.adata.n_obs, retain_sample)
        self.budget["retain_cells_importance"] = size
        return sample_positions(np.arange(self.adata.n_obs), size, self.seed)

    def fit(
        self,
        model,
        plan,
        datamodule: RetainForgetDataModule,
        *,
        max_epochs: int,
        accelerator: str = "auto",
        devices: Any = "auto",
        enable_progress_bar: bool = True,
        **trainer_kwargs,
    ) -> None:
        """Train ``plan`` on ``datamodule`` with scvi-tools' :class:`~scvi.train.TrainRunner`.

        Honours ``accelerator``, ``devices``, progress bars and any other
        :class:`scvi.train.Trainer` argument, exactly like ``model.train``.
        """
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
        trainer_kwargs.setdefault("early_stopping", False)
        _, processes = split_over_processes(
            datamodule.batch_size, trainer_kwargs, self.budget,
            accelerator=accelerator, devices=devices,
        )  # fmt: skip
        if processes > 1:
            datamodule.share(processes)
        runner = TrainRunner(
            model,
            training_plan=plan,
            data_splitter=datamodule,
            max_epochs=int(max_epochs),
            accelerator=accelerator,
            devices=devices,
            enable_progress_bar=enable_progress_bar,
            **trainer_kwargs,
        )
        runner()

    # ------------------------------------------------------------------ cleanup
    def close(self) -> None:
        """Forget the scratch AnnData managers registered for this task."""
        store = type(self.original)._setup_adata_manager_store
        for manager in self._managers:
            try:
                store.pop(manager.adata_uuid, None)
            except AttributeError:  # pragma: no cover - manager without data
                pass
        self._managers.clear()
        self.__dict__.pop("forget_adata", None)
        self.__dict__.pop("teacher_module", None)
        self.teacher_scores.clear()


def _minimal_copy(adata: AnnData, positions: np.ndarray) -> AnnData:
    """Copy of ``adata[positions]`` without ``uns`` and with unused categories removed.

    ``uns`` may hold anything (including lists of cell names), so it is not carried over to an
    AnnData that a saved model may include.  Each cell-by-gene matrix (``X``, ``layers``,
    ``raw.X``) and each ``obsm`` array is copied once, straight from ``adata`` (anndata's
    ``adata[positions].copy()`` subsets a matrix and then copies the subset, which holds two
    copies of every matrix at once), and ``adata`` itself is only read.
    """
    idx = np.asarray(positions, dtype=int)
    view = adata[idx]
    raw = None
    if adata.raw is not None:
        raw = {
            "X": _take_rows(adata.raw.X, idx, lambda: view.raw.X.copy()),
            "var": adata.raw.var.copy(),
            "varm": {k: v.copy() for k, v in adata.raw.varm.items()},
        }
    sub = AnnData(
        X=None if adata.X is None else _take_rows(adata.X, idx, lambda: view.X.copy()),
        obs=view.obs.copy(),
        var=adata.var.copy(),
        obsm={
            k: _take_rows(v, idx, lambda k=k: view.obsm[k].copy()) for k, v in adata.obsm.items()
        },
        varm={k: v.copy() for k, v in adata.varm.items()},
        obsp={k: view.obsp[k].copy() for k in adata.obsp},
        varp={k: v.copy() for k, v in adata.varp.items()},
        layers={
            k: _take_rows(v, idx, lambda k=k: view.layers[k].copy())
            for k, v in adata.layers.items()
        },
        raw=raw,
    )
    for key in list(sub.obs.columns):
        col = sub.obs[key]
        if hasattr(col, "cat"):
            sub.obs[key] = col.cat.remove_unused_categories()
    return sub


def _take_rows(value, idx: np.ndarray, fallback):
    """Rows ``idx`` of an in-memory array or sparse matrix, as a new object (one copy); any
    other type (data frame, dask, awkward array, ...) through anndata's subsetting
    (``fallback``)."""
    if isinstance(value, np.ndarray) or sp.issparse(value):
        return value[idx]
    return fallback()
