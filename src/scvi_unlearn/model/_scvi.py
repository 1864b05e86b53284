"""The drop-in :class:`SCVI` model: scvi-tools' SCVI plus unlearning, audit and Fisher tools."""

from __future__ import annotations

import copy
import inspect
import logging
import warnings
from typing import Any

import numpy as np
import scvi
import scvi.model
from lightning.pytorch.callbacks import Callback
from scvi import REGISTRY_KEYS

from scvi_unlearn._counts import COUNT_LIKELIHOODS, check_counts
from scvi_unlearn._recipe import recordable
from scvi_unlearn.model._attack_mixin import MembershipAttackMixin
from scvi_unlearn.model._fisher_mixin import FisherMixin
from scvi_unlearn.model._unlearning_mixin import UnlearningMixin
from scvi_unlearn.unlearn.core._soma_source import (
    describe_source,
    is_soma_datamodule,
    split_joinids,
)

logger = logging.getLogger(__name__)

_BaseSCVI = scvi.model.SCVI

#: train() arguments whose values cannot be recorded for an exact retrain.
_UNRECORDABLE = ("datamodule",)


class _NoTrainingRecordError(ValueError, AttributeError):
    """:attr:`SCVI.trained_obs_names` of a model without a record of its training cells.

    A :class:`ValueError` for callers; also an :class:`AttributeError` so that attribute scans
    (``inspect.getmembers`` in scvi-tools' ``save``) skip the property instead of failing on an
    untrained model, a datamodule-trained model or one loaded from a plain scvi-tools checkpoint.
    """


class _RegistrySizes:
    """What scvi-tools' ``save`` reads from a datamodule (the architecture's sizes, batch labels
    and label keys), taken from a ``setup_datamodule`` registry instead."""

    def __init__(self, registry: dict, recipe: dict | None):
        fields = registry["field_registries"]
        self.registry = registry
        self.n_batch = fields["batch"]["summary_stats"]["n_batch"]
        self.n_labels = fields["labels"]["summary_stats"]["n_labels"]
        self.n_samples = fields.get("sample", {}).get("summary_stats", {}).get("n_sample", 0)
        self.n_vars = fields["X"]["summary_stats"]["n_vars"]
        self.batch_labels = fields["batch"]["state_registry"]["categorical_mapping"]
        source = (recipe or {}).get("datamodule")
        self.label_keys = source.get("label_keys") if isinstance(source, dict) else None


class _RewindCheckpoint(Callback):
    """Keeps a CPU copy of the module's ``state_dict`` after ``epoch`` completed epochs (0: the
    weights before the first step).  Copies only: it draws no random number and changes no
    weight, so training is the same with or without it."""

    def __init__(self, epoch: int):
        self.epoch = int(epoch)
        self.state_dict: dict | None = None

    def _keep(self, pl_module) -> None:
        self.state_dict = {
            k: v.detach().to("cpu", copy=True) for k, v in pl_module.module.state_dict().items()
        }

    def on_train_start(self, trainer, pl_module) -> None:
        if self.epoch == 0:
            self._keep(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # current_epoch is still the 0-based index of the epoch that just ended
        if self.epoch > 0 and trainer.current_epoch + 1 == self.epoch:
            self._keep(pl_module)


class SCVI(UnlearningMixin, MembershipAttackMixin, FisherMixin, _BaseSCVI):
    """scVI :cite:p:`Lopez18` with machine unlearning, membership audits and Fisher analysis.

    A drop-in subclass of :class:`scvi.model.SCVI` with the same name, arguments and behaviour:
    every SCVI workflow (``setup_anndata``, ``train``, latent representations, differential
    expression, scArches query mapping, save/load, minification) works unchanged, and
    checkpoints load in both directions.  On top of that:

    * :meth:`train` records, in saved ``*_`` attributes, the exact recipe
      (:attr:`train_recipe_`) and the identity of the cells used for training
      (:attr:`train_obs_names_`, :attr:`validation_obs_names_`), by ``obs_names``, so that the
      model can later be retrained exactly without a set of cells;
    * :meth:`unlearn` removes cells from a trained model (:class:`UnlearningMixin`);
    * :meth:`membership_attack` audits whether cells are still detectable
      (:class:`MembershipAttackMixin`);
    * :meth:`fisher_overlap` measures the Fisher-information overlap between two cell sets
      (:class:`FisherMixin`).

    An AnnData already registered with :meth:`scvi.model.SCVI.setup_anndata` is accepted as is.

    Parameters
    ----------
    adata, registry, n_hidden, n_latent, n_layers, dropout_rate, dispersion, gene_likelihood, \
use_observed_lib_size, latent_distribution, **kwargs
        Exactly as in :class:`scvi.model.SCVI`.

    Examples
    --------
    >>> import scvi_unlearn as su
    >>> adata = su.data.pbmc68k()
    >>> su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    >>> model = su.SCVI(adata, n_latent=10)
    >>> model.train(max_epochs=20)
    >>> model.train_recipe_["max_epochs"]
    20
    """

    #: Keyword arguments of the last :meth:`train` call, with defaults filled in, plus the seed.
    train_recipe_: dict[str, Any] | None = None
    #: ``obs_names`` of the cells in the training split of the last :meth:`train` call.
    train_obs_names_: np.ndarray | None = None
    #: ``obs_names`` of the cells in the validation split of the last :meth:`train` call.
    validation_obs_names_: np.ndarray | None = None
    #: ``soma_joinid`` of the training cells of the last :meth:`train` call on a
    #: :class:`scvi.dataloaders.TileDBDataModule` (sorted int64; ``None`` otherwise).
    train_obs_joinids_: np.ndarray | None = None
    #: ``soma_joinid`` of its validation cells (sorted int64; ``None`` otherwise).
    validation_obs_joinids_: np.ndarray | None = None
    #: ``{"epoch": k, "state_dict": ...}``: the module's weights after ``k`` epochs of the last
    #: :meth:`train` call (``train(rewind_epoch=k)``), for ``unlearn(method="rewind")``.
    rewind_checkpoint_: dict[str, Any] | None = None

    @classmethod
    def _get_most_recent_anndata_manager(cls, adata, required: bool = False):
        manager = super()._get_most_recent_anndata_manager(adata, required=False)
        if manager is None and cls is not _BaseSCVI:
            # accept an AnnData registered with plain scvi.model.SCVI.setup_anndata
            # (same setup function, so the same fields): adopt its manager
            base_manager = _BaseSCVI._get_most_recent_anndata_manager(adata, required=False)
            if base_manager is not None:
                cls.register_manager(base_manager)
                manager = base_manager
        if manager is None and required:
            return super()._get_most_recent_anndata_manager(adata, required=True)
        return manager

    def train(self, *args, rewind_epoch: int | None = None, **kwargs):
        """Train the model, exactly as :meth:`scvi.model.SCVI.train`, and record the recipe.

        All arguments but ``rewind_epoch`` are those of :meth:`scvi.model.SCVI.train`.  After
        training, :attr:`train_recipe_` holds every argument (defaults filled in, including
        ``rewind_epoch``) and the value of ``scvi.settings.seed`` at call time, and
        :attr:`train_obs_names_` / :attr:`validation_obs_names_` hold the ``obs_names`` of the
        cells of each split.  These attributes are saved with the model and make an exact
        retrain without a set of cells possible (``model.unlearn(..., method="retrain")``).
        A training argument that cannot be pickled (e.g. a callback class defined inside a
        function) is recorded as ``"<unpicklable ClassName>"``, so that ``save()`` works; a
        retrain replays without it and warns.

        With ``datamodule=`` (a model built without AnnData, e.g. ``SCVI()`` or
        ``SCVI(adata=None, registry=...)``), training is exactly scvi-tools', and no
        ``obs_names`` are recorded (``train_obs_names_`` is ``None``).  For scvi-tools'
        out-of-core :class:`scvi.dataloaders.TileDBDataModule` (a TileDB-SOMA query),
        ``train_recipe_["datamodule"]`` describes the source (experiment URI and read
        timestamp, measurement, layer, the query's filters, the batch columns and labels, the
        datamodule's arguments; JSON-serialisable) and :attr:`train_obs_joinids_` /
        :attr:`validation_obs_joinids_` hold the ``soma_joinid`` of the cells of each split, so
        the model can be unlearned from the store (``unlearn(forget)``, ``docs/howto_atlas.md``).
        For any other datamodule the recipe holds a placeholder (``"<ClassName>"``: it cannot be
        replayed) and ``unlearn`` needs the user's retain stream
        (``unlearn(forget, datamodule=...)``).

        Before training, the registered data are scanned: NaN or infinite values, and negative
        values under a count likelihood (``"zinb"``, ``"nb"``, ``"poisson"``), raise a
        :class:`ValueError` naming the layer and the first offending cell and gene (scvi-tools
        only samples a few rows at setup and would fail mid-training with an unreadable
        torch error); the model is then left untouched.

        Parameters
        ----------
        *args, **kwargs
            Exactly as in :meth:`scvi.model.SCVI.train`.
        rewind_epoch
            Keep a copy of the module's weights after this many completed epochs of this call
            (``0``: the weights before the first step) in :attr:`rewind_checkpoint_`
            (``{"epoch": rewind_epoch, "state_dict": ...}``, on the CPU), saved and loaded
            with the model; ``unlearn(..., method="rewind")`` restarts from it.  An int in
            ``[0, max_epochs)``.  It copies only: the trained weights are the same with or
            without it.  The checkpoint is as large as the weights (a saved model doubles in
            size), and after ``rewind_epoch > 0`` epochs it has seen every training cell.
            ``None`` (default): no checkpoint (any previous one is dropped).  If early stopping
            ends training before ``rewind_epoch`` epochs, no checkpoint is kept (a warning).
        """
        recipe = self._bind_train_arguments(args, kwargs)
        self._check_rewind_epoch(rewind_epoch, recipe.get("max_epochs"))
        recipe["rewind_epoch"] = rewind_epoch
        if recipe.get("datamodule") is None:
            self._check_registered_counts()
        keeper = None
        if rewind_epoch is not None:
            keeper = _RewindCheckpoint(rewind_epoch)
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), keeper]
        result = super().train(*args, **kwargs)
        datamodule = self._bound_datamodule(args, kwargs)
        self.train_obs_joinids_ = self.validation_obs_joinids_ = None
        if is_soma_datamodule(datamodule):
            recipe["datamodule"] = describe_source(datamodule)
            self.train_obs_joinids_, self.validation_obs_joinids_ = split_joinids(datamodule)
        self.train_recipe_ = recipe
        self._record_split_cells(custom_datamodule=recipe.get("datamodule") is not None)
        self.rewind_checkpoint_ = None
        if keeper is not None:
            if keeper.state_dict is None:
                warnings.warn(
                    f"Training stopped before epoch {rewind_epoch} (early stopping): no rewind "
                    "checkpoint was kept (rewind_checkpoint_ is None).",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                self.rewind_checkpoint_ = {
                    "epoch": int(rewind_epoch),
                    "state_dict": keeper.state_dict,
                }
        return result

    def _bound_datamodule(self, args: tuple, kwargs: dict):
        bound = inspect.signature(_BaseSCVI.train).bind(self, *args, **kwargs)
        return bound.arguments.get("datamodule")

    def save(self, dir_path: str, *args, datamodule=None, **kwargs) -> None:
        """Save the model, exactly as :meth:`scvi.model.SCVI.save`.

        A model built from a datamodule's registry (``SCVI(adata=None, registry=...)``) saves
        without the datamodule: scvi-tools 1.4.2 needs ``save(dir, datamodule=dm)`` to read the
        sizes of the architecture, which this model's registry also holds, so they are read
        from there when ``datamodule`` is not given.

        Parameters
        ----------
        dir_path, *args, **kwargs
            As in :meth:`scvi.model.SCVI.save`.
        datamodule
            As in :meth:`scvi.model.SCVI.save`; optional here.
        """
        if datamodule is None and self.registry.get("setup_method_name") == "setup_datamodule":
            datamodule = _RegistrySizes(self.registry, self.train_recipe_)
        super().save(dir_path, *args, datamodule=datamodule, **kwargs)

    @staticmethod
    def _check_rewind_epoch(rewind_epoch, max_epochs) -> None:
        if rewind_epoch is None:
            return
        if isinstance(rewind_epoch, bool) or not isinstance(rewind_epoch, int | np.integer):
            raise ValueError(
                f"rewind_epoch must be an int (completed epochs) or None, got {rewind_epoch!r}."
            )
        if rewind_epoch < 0:
            raise ValueError(f"rewind_epoch must be >= 0, got {rewind_epoch}.")
        if max_epochs is not None and rewind_epoch >= int(max_epochs):
            raise ValueError(
                f"rewind_epoch must be < max_epochs ({max_epochs}), got {rewind_epoch}: the "
                "checkpoint is taken during training."
            )

    def _check_registered_counts(self) -> None:
        manager = getattr(self, "_adata_manager", None)
        if manager is None or getattr(self, "_adata", None) is None:
            return
        location = manager.data_registry[REGISTRY_KEYS.X_KEY]
        key = location.get("attr_key")
        what = "adata.X" if key is None else f"adata.{location['attr_name']}[{key!r}]"
        check_counts(
            manager.get_from_registry(REGISTRY_KEYS.X_KEY),
            what,
            self.adata.obs_names,
            self.adata.var_names,
            counts=getattr(self.module, "gene_likelihood", "nb") in COUNT_LIKELIHOODS,
            warn_non_integer=False,  # scvi-tools' setup_anndata warns about those, as always
        )

    def _bind_train_arguments(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        sig = inspect.signature(_BaseSCVI.train)
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        recipe: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if name == "self":
                continue
            param = sig.parameters[name]
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                recipe["trainer_kwargs"] = recordable(dict(value))
            elif name in _UNRECORDABLE:
                recipe[name] = None if value is None else f"<{type(value).__name__}>"
            else:
                recipe[name] = copy.deepcopy(value)
        if recipe.get("max_epochs") is None:
            # record what scvi-tools will resolve it to, so that replays know the epoch count
            from scvi.model._utils import get_max_epochs_heuristic

            datamodule = bound.arguments.get("datamodule")
            n_obs = self.adata.n_obs if datamodule is None else getattr(datamodule, "n_obs", None)
            if n_obs is not None:  # else scvi-tools raises: max_epochs is required
                recipe["max_epochs"] = get_max_epochs_heuristic(n_obs)
                recipe["max_epochs_from_heuristic"] = True
        recipe["seed"] = scvi.settings.seed
        recipe["scvi_tools_version"] = scvi.__version__
        return recipe

    def _record_split_cells(self, custom_datamodule: bool = False) -> None:
        # A model built with neither AnnData nor registry (``SCVI()``) has no ``_adata`` at all
        # in scvi-tools, so ``self.adata`` would raise AttributeError: look it up softly.
        # The indices a custom datamodule reports (if any) index its own data, not self.adata.
        if custom_datamodule or getattr(self, "_adata", None) is None:
            self.train_obs_names_ = None
            self.validation_obs_names_ = None
            return
        names = np.asarray(self.adata.obs_names, dtype=object)

        def _names(indices):
            if indices is None:
                return np.asarray([], dtype=str)
            return names[np.asarray(indices, dtype=int)].astype(str)

        self.train_obs_names_ = _names(self.train_indices)
        self.validation_obs_names_ = _names(self.validation_indices)

    @property
    def trained_obs_names(self) -> np.ndarray:
        """``obs_names`` of every cell the model has seen in training (train + validation split).

        Validation cells never produce gradients but steer early stopping and are present in the
        model's recorded state, so unlearning treats them as seen.
        """
        if self.train_obs_names_ is None and self.train_obs_joinids_ is not None:
            raise _NoTrainingRecordError(
                "This model was trained out of core on a TileDB-SOMA store: its training cells "
                "are recorded by soma_joinid (train_obs_joinids_, validation_obs_joinids_), not "
                "by obs_names of an AnnData."
            )
        if self.train_obs_names_ is None:
            raise _NoTrainingRecordError(
                "This model has no record of the cells it was trained on: train it on an "
                "AnnData with scvi_unlearn.SCVI.train (a model trained with "
                "train(datamodule=...), or trained or saved by plain scvi.model.SCVI, does not "
                "record them)."
            )
        return np.concatenate([self.train_obs_names_, self.validation_obs_names_]).astype(str)
