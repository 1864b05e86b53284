"""Unlearning a model trained out of core: the retain cells are streamed, never loaded.

A model trained with ``train(datamodule=TileDBDataModule(...))`` records its store and the
``soma_joinid`` of its training and validation cells (:mod:`._soma_source`).  A request on it
(:func:`stream_task`, called by the engine) resolves the forget cells in the store, keeps the
original's roles for the retain cells (a validation cell stays a validation cell) and gives the
method a :class:`StreamTask`: the retain stream (:meth:`StreamTask.train_data`, a
:class:`~._soma_source.RetainTileDBDataModule` that reads the retain cells' rows only) and, in
memory, only the cells the fit matching and the retain check score (at most
:data:`~._guard.MAX_CHECK_CELLS` retain validation cells, chosen as for an in-memory model).
Models trained on any other datamodule are unlearned on the user's own retain stream
(``unlearn(forget, datamodule=...)``).

Only the methods in :data:`STREAM_METHODS` train on a stream; the others need the forget cells'
data in memory.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np
import pandas as pd

from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.unlearn.core._budget import sample_positions
from scvi_unlearn.unlearn.core._forget_cells import forget_values, keep_trained
from scvi_unlearn.unlearn.core._guard import (
    MAX_CHECK_CELLS,
    MIN_CHECK_CELLS,
    UnlearningError,
    non_finite_parameters,
)
from scvi_unlearn.unlearn.core._soma_source import (
    check_supported,
    is_soma_source,
    open_experiment,
    read_cells,
    resolve_forget,
    retain_datamodule,
    sorted_joinids,
)
from scvi_unlearn.unlearn.core._task import UnlearningTask

#: the methods that run on a retain stream (they train a fresh model on the retain cells only)
STREAM_METHODS = ("fast_retrain", "retrain")
#: most cells a read of a fast retrain's retain stream buffers (tiledbsoma-ml's
#: ``io_batch_size``, 65,536 by default, is kept when smaller): fit matching stops after a few
#: hundred steps, so a larger buffer only costs memory.  Measured on 1M simulated cells x 2,000
#: genes (``python -m benchmarks run atlas --config atlas_1m --set original_epochs=2``,
#: benchmarks/RESULTS.md): peak 4.8 GB with 65,536, 2.4 GB with 16,384, 42 s and 41 s.
RETAIN_IO_CELLS = 16_384

#: the recorded source's entries that locate the retain counts (in the certificate)
_STORE_KEYS = ("uri", "measurement_name", "layer_name", "tiledb_timestamp_ms")
#: why a streamed request's certificate holds no digest of the retain counts
COUNTS_NOT_HASHED = (
    "not hashed: the retain cells were streamed from the store, and hashing their counts would "
    "read the whole retain matrix (one more pass over the data, as long as a training epoch); "
    "the store's URI, layer and read timestamp and the digest of the retain soma_joinids "
    "identify them"
)


def is_streamed(model) -> bool:
    """Whether ``model`` recorded a TileDB-SOMA source and its cells' ``soma_joinid``."""
    recipe = getattr(model, "train_recipe_", None) or {}
    return (
        is_soma_source(recipe.get("datamodule"))
        and getattr(model, "train_obs_joinids_", None) is not None
    )


def trained_joinids(model) -> np.ndarray:
    """Sorted ``soma_joinid`` of every cell a streamed model trained on (training and
    validation)."""
    return np.union1d(
        sorted_joinids(model.train_obs_joinids_), sorted_joinids(model.validation_obs_joinids_)
    )


def joinids_sha256(joinids) -> str:
    """SHA-256 of the sorted, de-duplicated ``soma_joinid`` (little-endian int64 bytes)."""
    values = np.unique(np.asarray(joinids, dtype=np.int64)).astype("<i8")
    return hashlib.sha256(values.tobytes()).hexdigest()


class StreamTask(UnlearningTask):
    """An :class:`~scvi_unlearn.unlearn.UnlearningTask` whose retain cells are streamed.

    :attr:`adata` holds only the cells the fit matching and the retain check score (``None``
    with a user's datamodule): the at most :data:`~._guard.MAX_CHECK_CELLS` retain validation
    cells (:attr:`validation_indices`), or, without a validation split, as many retain training
    cells (:attr:`train_indices`); their ``obs_names`` are their ``soma_joinid``.  The retain
    cells themselves are :attr:`retain_train_joinids` and :attr:`retain_validation_joinids`,
    read from the store by :meth:`train_data`'s datamodule only.

    Attributes
    ----------
    description
        The original's recorded source (``train_recipe_["datamodule"]``), or ``None``.
    experiment
        The recorded experiment, open for reading (closed by :meth:`close`), or ``None``.
    retain_train_joinids, retain_validation_joinids
        ``soma_joinid`` of the retain cells of each role (``None`` with a user's datamodule
        and no record).
    user_datamodule
        The user's retain datamodule, or ``None``.
    """

    def __init__(self, original, *, seed: int, n_forget: int):
        none = np.asarray([], dtype=int)
        super().__init__(original, None, None, none, none, None, seed=seed)
        self.n_forget = int(n_forget)
        self.description: dict[str, Any] | None = None
        self.experiment = None
        self.retain_train_joinids: np.ndarray | None = None
        self.retain_validation_joinids: np.ndarray | None = None
        self.user_datamodule = None

    # ------------------------------------------------------------------ data
    def load_scored_cells(self) -> None:
        """Read the scored cells (see the class docstring) into :attr:`adata`, registered with
        the original's class, batches encoded as the original's datamodule encodes them."""
        val, train = self.retain_validation_joinids, self.retain_train_joinids
        use_val = val.size >= MIN_CHECK_CELLS
        cells = sample_positions(val if use_val else train, MAX_CHECK_CELLS, seed=0)
        registry = self.original.registry_
        adata = read_cells(self.experiment, self.description, registry, cells)
        cls = type(self.original)
        with isolated_seed(self.seed):  # scvi-tools' count check samples from the global RNG
            cls.setup_anndata(adata, batch_key="_scvi_batch")
        manager = cls._get_most_recent_anndata_manager(adata, required=True)
        self._managers.append(manager)
        stats = registry["field_registries"]
        n_batch = stats["batch"]["summary_stats"]["n_batch"]
        if manager.summary_stats.n_batch != n_batch:  # pragma: no cover - guarded by encoding
            raise ValueError("The scored cells' batch encoding differs from the original's.")
        positions = np.arange(cells.size)
        self.adata, self.adata_manager = adata, manager
        empty = np.asarray([], dtype=int)
        self.validation_indices = positions if use_val else empty
        self.train_indices = empty if use_val else positions

    def train_data(self, batch_size, datasplitter_kwargs=None, *, replay=False):
        """``{"datamodule": ...}``: the user's retain datamodule, or the recorded store's retain
        cells in their original roles (a
        :class:`~scvi_unlearn.unlearn.core._soma_source.RetainTileDBDataModule`) with
        ``batch_size`` cells a minibatch, shuffled with the request's seed, at most
        :data:`RETAIN_IO_CELLS` cells a read -- or, with
        ``replay``, the original stream's batch size, shuffling and shuffle seed (the request's
        seed when none was recorded).  ``datasplitter_kwargs`` are not used (a datamodule
        splits its own cells)."""
        if self.user_datamodule is not None:
            return {"datamodule": self.user_datamodule}
        recorded = self.description.get("dataset_kwargs") or {}
        if replay:
            kwargs = {"seed": self.seed if recorded.get("seed") is None else recorded["seed"]}
        else:
            io_cells = min(int(recorded.get("io_batch_size") or RETAIN_IO_CELLS), RETAIN_IO_CELLS)
            kwargs = {"batch_size": int(batch_size), "shuffle": True, "seed": self.seed}
            kwargs["io_batch_size"] = io_cells
        dm = retain_datamodule(
            self.experiment,
            self.description,
            self.original.registry_,
            self.retain_train_joinids,
            self.retain_validation_joinids,
            **kwargs,
        )
        return {"datamodule": dm}

    # ------------------------------------------------------------------ models
    def new_model(self, *, copy_weights: bool, **init_overrides):
        """A fresh model of the original's class, init arguments and registry (no AnnData;
        trained with :meth:`train_data`'s datamodule; the registry's cell count set to the
        retain cells').  ``copy_weights`` must be ``False``."""
        if copy_weights or init_overrides:
            raise ValueError(
                "A streamed request trains a fresh model of the original's architecture only."
            )
        init = copy.deepcopy(self.original.init_params_)
        non_kwargs = init.get("non_kwargs", {})
        kwargs = {k: v for group in init.get("kwargs", {}).values() for k, v in group.items()}
        registry = copy.deepcopy(self.original.registry_)
        if self.retain_train_joinids is not None:
            n = int(self.retain_train_joinids.size + self.retain_validation_joinids.size)
            x = registry["field_registries"]["X"]
            x.get("state_registry", {})["n_obs"] = n
            x.get("summary_stats", {})["n_cells"] = n
        model = type(self.original)(None, registry=registry, **non_kwargs, **kwargs)
        model.train_recipe_ = self.retain_recipe()
        return model

    def is_result(self, model) -> bool:
        return type(model) is type(self.original) and getattr(model, "_adata", None) is None

    def retain_recipe(self) -> dict | None:
        """The original's recipe, its source's cell counts set to the retain cells'."""
        recipe = copy.deepcopy(getattr(self.original, "train_recipe_", None))
        source = (recipe or {}).get("datamodule")
        if is_soma_source(source) and self.retain_train_joinids is not None:
            source["n_train"] = int(self.retain_train_joinids.size)
            source["n_validation"] = int(self.retain_validation_joinids.size)
        return recipe

    @property
    def forget_adata(self):
        raise ValueError(
            f"This model was trained out of core: its forget cells are not read, so only the "
            f"methods that train on the retain stream work ({', '.join(STREAM_METHODS)})."
        )

    def close(self) -> None:
        super().close()
        if self.experiment is not None:
            self.experiment.close()
            self.experiment = None


def stream_task(
    model, forget, method: str, *, seed: int, ignore_untrained: bool, datamodule=None
) -> tuple[StreamTask, np.ndarray]:
    """The :class:`StreamTask` of a request on a streamed model (or with the user's
    ``datamodule``) and the forget cells' identifiers for the record's salted digest (their
    ``obs`` ids when the store has an ``obs_id`` column, else their ``soma_joinid``; with a
    user's datamodule and no record, the ids as given)."""
    if method not in STREAM_METHODS:
        raise ValueError(
            f"method={method!r} needs the forget cells' data in memory; a model trained out "
            f"of core is unlearned on a retain stream by {' or '.join(map(repr, STREAM_METHODS))}"
            " (exact; the default is 'fast_retrain')."
        )
    if not is_streamed(model):
        return _user_task(model, forget, seed=seed, datamodule=datamodule)
    description = model.train_recipe_["datamodule"]
    if datamodule is None:
        check_supported(description)
    experiment = open_experiment(description)
    try:
        joinids = resolve_forget(experiment, description, forget)
        trained = trained_joinids(model)
        joinids = keep_trained(
            joinids, np.isin(joinids, trained), ignore_untrained, unknown_label="soma_joinid "
        )
        task = StreamTask(model, seed=seed, n_forget=joinids.size)
        task.description, task.experiment = description, experiment
        task.retain_train_joinids = np.setdiff1d(sorted_joinids(model.train_obs_joinids_), joinids)
        task.retain_validation_joinids = np.setdiff1d(
            sorted_joinids(model.validation_obs_joinids_), joinids
        )
        if task.retain_train_joinids.size == 0:
            raise ValueError(
                "The forget set contains every training cell of this model; nothing would "
                "remain. Train a new model instead."
            )
        task.user_datamodule = datamodule
        if datamodule is not None:
            _check_architecture(model, datamodule)
        names = _digest_names(experiment, description, joinids)
        task.load_scored_cells()
    except BaseException:
        experiment.close()
        raise
    return task, names


def _user_task(model, forget, *, seed: int, datamodule) -> tuple[StreamTask, np.ndarray]:
    values = forget_values(forget, "a sequence of cell ids")
    names = pd.unique(values.astype(str))
    if names.size == 0:
        raise ValueError("The forget set is empty: nothing to unlearn.")
    _check_architecture(model, datamodule)
    task = StreamTask(model, seed=seed, n_forget=names.size)
    task.user_datamodule = datamodule
    return task, names


def _check_architecture(model, datamodule) -> None:
    stats = model.registry_["field_registries"]
    expected = {
        "n_vars": stats["X"]["summary_stats"]["n_vars"],
        "n_batch": stats["batch"]["summary_stats"]["n_batch"],
    }
    for name, value in expected.items():
        given = getattr(datamodule, name, None)
        if given is not None and int(given) != int(value):
            raise ValueError(
                f"The retain datamodule has {name}={given}, the model {value}: it must serve "
                "the original's genes and batch encoding (e.g. pass the original's batch_labels)."
            )


def _digest_names(experiment, description, joinids) -> np.ndarray:
    """The identifiers of the cells being forgotten (``joinids``, those the model trained on)
    for the record's count and salted digest: their ``obs`` ids, or their ``soma_joinid``
    without an ``obs_id`` column -- the same whether the request named them by id or by
    joinid."""
    column = description.get("obs_id_column")
    if not column:
        return joinids.astype(str)
    obs = experiment.obs.read(coords=(joinids,), column_names=["soma_joinid", column])
    return obs.concat().to_pandas()[column].astype(str).to_numpy()


def check_streamed_model(task: StreamTask, model, **check_kwargs) -> dict[str, Any]:
    """The post-unlearning checks of a streamed request: those of an in-memory request on the
    scored cells (:func:`~._guard.check_unlearned_model`) or, with a user's datamodule and no
    recorded store (no cells to score), the non-finite check only (the record says so)."""
    from scvi_unlearn.unlearn.core._guard import check_unlearned_model

    if task.adata is not None:
        return check_unlearned_model(task, model, **check_kwargs)
    bad = non_finite_parameters(model.module)
    if bad:
        raise UnlearningError(
            f"Unlearning produced non-finite values in {len(bad)} tensor(s) "
            f"({', '.join(bad[:5])}); the model is unusable."
        )
    return {
        "retain_cells": None,
        "independent": None,
        "n_cells": 0,
        "passed": None,
        "skipped": "the retain ELBO was not checked: a user's datamodule has no cells to score "
        "in memory (only non-finite weights were checked)",
    }


def finish_streamed(task: StreamTask, new) -> None:
    """Set the new model's training record to the retain cells (their ``soma_joinid``)."""
    new.train_obs_names_ = new.validation_obs_names_ = None
    if task.retain_train_joinids is None:  # the user's stream: its cells are not known
        new.train_obs_joinids_ = new.validation_obs_joinids_ = None
        return
    new.train_obs_joinids_ = task.retain_train_joinids.copy()
    new.validation_obs_joinids_ = task.retain_validation_joinids.copy()
    new.train_recipe_ = task.retain_recipe()


def streamed_retain_digest(task: StreamTask) -> dict[str, Any]:
    """The certificate's ``retain_digest`` of a streamed request: the SHA-256 of the retain
    cells' sorted ``soma_joinid`` and the store they were read from; the counts are not hashed
    (:data:`COUNTS_NOT_HASHED`)."""
    if task.retain_train_joinids is None:
        n = getattr(task.user_datamodule, "n_obs", None)
        return {
            "algorithm": None,
            "sha256": None,
            "n_cells": None if n is None else int(n),
            "counts_sha256": None,
            "counts_not_hashed": "the user's retain datamodule: its cells are not recorded",
            "store": None,
        }
    retain = np.union1d(task.retain_train_joinids, task.retain_validation_joinids)
    source = task.description
    return {
        "algorithm": "sha256(sorted soma_joinids as little-endian int64)",
        "sha256": joinids_sha256(retain),
        "n_cells": int(retain.size),
        "counts_sha256": None,
        "counts_not_hashed": COUNTS_NOT_HASHED,
        "store": {k: source.get(k) for k in _STORE_KEYS},
        "trained_on": "the user's datamodule" if task.user_datamodule is not None else "the store",
    }
