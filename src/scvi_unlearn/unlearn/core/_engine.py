"""The unlearning engine behind :meth:`scvi_unlearn.SCVI.unlearn`.

Steps of one request (a model trained out of core, or a request with the user's retain
``datamodule``, takes :mod:`._stream`'s way through steps 1, 2 and 4: the forget cells are resolved
in the recorded store and the retain cells streamed, never loaded):

1. resolve the forget cells by ``obs_names`` against the cells the model trained on
   (``model.trained_obs_names``: training + validation split);
2. build the retain AnnData: a registered copy of the trained cells minus the forget cells, taken
   from ``model.adata`` (no ``uns``; the registry is transferred from the original's, so the
   categorical mappings and the architecture are identical);
3. run the method inside :func:`~scvi_unlearn._seeding.isolated_seed` (the caller's global random
   state is restored afterwards) on an :class:`UnlearningTask`;
4. check the result (:func:`~scvi_unlearn.unlearn.core._guard.check_unlearned_model`), set the new
   model's training record to the retain cells and attach ``unlearn_record_``.

The original model and the caller's AnnData are only read: every method works on copies, so they
are unchanged whatever happens, including exceptions and ``KeyboardInterrupt``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scvi_unlearn._evaluation import minified_type
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.unlearn.core._forget_cells import keep_trained, preview
from scvi_unlearn.unlearn.core._guarantees import guarantee
from scvi_unlearn.unlearn.core._guard import (
    RETAIN_CONFIDENCE,
    RETAIN_TOLERANCE,
    check_cells_names,
    check_unlearned_model,
    confidence_z,
)
from scvi_unlearn.unlearn.core._record import (
    counts_sha256,
    names_sha256,
    new_record,
    request_summary,
    weights_sha256,
)
from scvi_unlearn.unlearn.core._registry import (
    DEFAULT_METHOD,
    FROM_SCRATCH,
    bind_hyperparameters,
    get_method,
)
from scvi_unlearn.unlearn.core._stream import (
    check_streamed_model,
    finish_streamed,
    is_streamed,
    stream_task,
    streamed_retain_digest,
)
from scvi_unlearn.unlearn.core._task import UnlearningTask, _minimal_copy

_ON_DEGRADATION = ("auto", "warn", "raise")


def _as_obs_names(adata_forget: AnnData | Sequence[str] | pd.Index | np.ndarray) -> np.ndarray:
    if isinstance(adata_forget, AnnData):
        names = np.asarray(adata_forget.obs_names, dtype=str)
    elif isinstance(adata_forget, str | bytes):
        raise TypeError(
            "adata_forget must be an AnnData or a sequence of obs_names, not a single string; "
            "wrap one cell name in a list."
        )
    else:
        try:
            names = np.asarray(list(adata_forget), dtype=object)
        except TypeError:
            raise TypeError(
                "adata_forget must be an AnnData or a sequence of obs_names, got "
                f"{type(adata_forget).__name__}."
            ) from None
        if names.size and not all(isinstance(n, str) for n in names):
            bad = next(n for n in names if not isinstance(n, str))
            raise TypeError(
                f"adata_forget must contain obs_names (strings); got {type(bad).__name__} "
                f"{bad!r}. Positional indices are ambiguous across AnnData objects."
            )
        names = names.astype(str)
    if names.size == 0:
        raise ValueError("The forget set is empty: nothing to unlearn.")
    return pd.unique(names)


def _resolve_cells(model, forget: np.ndarray, ignore_untrained: bool):
    trained = np.asarray(model.trained_obs_names, dtype=str)
    forget = keep_trained(forget, np.isin(forget, trained), ignore_untrained)
    if model.adata is None:
        raise ValueError(
            "The model has no AnnData (loaded without data?): unlearning needs the retain "
            "cells. Load it with its AnnData: SCVI.load(path, adata=adata)."
        )
    obs = pd.Index(np.asarray(model.adata.obs_names, dtype=str))
    if not obs.is_unique:
        dup = obs[obs.duplicated()].unique()
        raise ValueError(
            f"model.adata has duplicated obs_names ({preview(dup)}); cells cannot be identified "
            "by name, so neither the forget nor the retain cells are defined. Make the names "
            "unique (adata.obs_names_make_unique()) before setup_anndata and train again."
        )
    forget_set = set(forget)
    in_forget = np.fromiter((n in forget_set for n in obs), dtype=bool, count=obs.size)
    retain_names = [n for n in trained if n not in forget_set]
    if not retain_names:
        raise ValueError(
            "The forget set contains every cell the model was trained on; nothing would "
            "remain. Train a new model instead."
        )
    missing = pd.Index(retain_names).difference(obs)
    if missing.size:
        raise ValueError(
            f"{missing.size} retain cells (trained cells not being forgotten) are missing from "
            f"model.adata: {preview(list(missing))}. Unlearning needs every retain cell."
        )
    trained_set = set(trained)
    retain_positions = np.flatnonzero(
        np.fromiter((n in trained_set for n in obs), dtype=bool, count=obs.size) & ~in_forget
    )
    forget_positions = obs.get_indexer(forget)
    forget_positions = None if (forget_positions < 0).any() else np.sort(forget_positions)
    return forget, retain_positions, forget_positions


def _retain_split(model, adata_retain: AnnData) -> tuple[np.ndarray, np.ndarray]:
    names = pd.Index(np.asarray(adata_retain.obs_names, dtype=str))
    val = set(np.asarray(model.validation_obs_names_ if model.validation_obs_names_ is not None
                         else [], dtype=str))  # fmt: skip
    is_val = np.fromiter((n in val for n in names), dtype=bool, count=names.size)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _datamodule_trained(model) -> bool:
    recipe = getattr(model, "train_recipe_", None) or {}
    recorded = getattr(model, "train_obs_names_", None) is not None
    return recipe.get("datamodule") is not None and not recorded


def _check_not_datamodule_trained(model) -> None:
    if _datamodule_trained(model):
        raise ValueError(
            "This model was trained with train(datamodule=...): the cells a custom datamodule "
            "serves are not recorded (they have no obs_names in a model AnnData), so the forget "
            "cells cannot be identified and there are no retain cells to unlearn with. "
            "Pass your own retain stream, unlearn(forget, datamodule=retain_datamodule) "
            "(docs/howto_atlas.md); a model trained on scvi-tools' TileDBDataModule, or on an "
            "AnnData with scvi_unlearn.SCVI.train (SCVI.setup_anndata(adata, ...); "
            "SCVI(adata).train(...)), records its training cells itself."
        )


def _check_datamodule_argument(model, datamodule, check_cells) -> bool:
    """Whether the request streams its retain cells (a recorded SOMA source, or ``datamodule``);
    clear errors for arguments that do not apply."""
    streamed = is_streamed(model) or datamodule is not None
    if datamodule is not None and not _datamodule_trained(model):
        raise ValueError(
            "datamodule= is for models trained with train(datamodule=...); this model "
            "recorded its training cells by obs_names and is unlearned from its AnnData."
        )
    if datamodule is not None and not hasattr(datamodule, "train_dataloader"):
        raise TypeError(
            "datamodule must be a LightningDataModule serving the retain cells, got "
            f"{type(datamodule).__name__}."
        )
    if streamed and check_cells is not None:
        raise ValueError(
            "check_cells is not supported for a model trained out of core: the retain check "
            "scores the retain validation cells read from the store."
        )
    return streamed


def _check_not_minified(model) -> None:
    minified = minified_type(model)
    if minified is not None:
        raise ValueError(
            f"The model is minified (minify_adata(), {minified!r}): its AnnData keeps latent "
            "posteriors instead of counts, but unlearning needs the full counts of the cells "
            "the model trained on (every method trains or scores the retain and forget cells). "
            "Unlearn the model from before minify_adata(), or load the saved full model with "
            "its full AnnData (SCVI.load(path, adata=adata)); minify the unlearned model "
            "afterwards if needed."
        )


def _resolve_seed(model, seed: int | None) -> int:
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TypeError(f"seed must be an int or None, got {seed!r}.")
        return int(seed)
    recipe = getattr(model, "train_recipe_", None) or {}
    recorded = recipe.get("seed")
    return int(recorded) if recorded is not None else 0


def run_unlearning(
    model,
    adata_forget,
    method: str = DEFAULT_METHOD,
    *,
    seed: int | None = None,
    ignore_untrained: bool = False,
    retain_tolerance: float = RETAIN_TOLERANCE,
    on_degradation: str = "auto",
    check_cells=None,
    retain_confidence: float = RETAIN_CONFIDENCE,
    datamodule=None,
    **method_kwargs: Any,
):
    """See :meth:`scvi_unlearn.model.UnlearningMixin.unlearn`."""
    t_start = time.perf_counter()
    func = get_method(method)
    hyper = bind_hyperparameters(method, func, method_kwargs)
    if on_degradation not in _ON_DEGRADATION:
        raise ValueError(
            f"on_degradation must be one of {_ON_DEGRADATION}, got {on_degradation!r}."
        )
    if on_degradation == "auto":
        on_degradation = "warn" if method in FROM_SCRATCH else "raise"
    if not retain_tolerance >= 0:
        raise ValueError(f"retain_tolerance must be >= 0, got {retain_tolerance!r}.")
    confidence_z(retain_confidence)
    if not getattr(model, "is_trained_", False):
        raise ValueError("The model is not trained: there is nothing to unlearn.")
    streamed = _check_datamodule_argument(model, datamodule, check_cells)
    if not streamed:
        _check_not_datamodule_trained(model)
        _check_not_minified(model)
    if check_cells is not None:
        check_cells_names(model, check_cells)
    seed = _resolve_seed(model, seed)
    cls = type(model)
    manager = None
    if streamed:
        task, forget = stream_task(
            model,
            adata_forget,
            method,
            seed=seed,
            ignore_untrained=ignore_untrained,
            datamodule=datamodule,
        )
    else:
        forget = _as_obs_names(adata_forget)
        forget, retain_positions, forget_positions = _resolve_cells(
            model, forget, ignore_untrained
        )
        adata_retain = _minimal_copy(model.adata, retain_positions)
        with isolated_seed(seed):  # scvi-tools' count check samples rows from the global RNG
            manager = model.adata_manager.transfer_fields(adata_retain)
        cls.register_manager(manager)
        train_idx, val_idx = _retain_split(model, adata_retain)
        task = UnlearningTask(
            model, adata_retain, manager, train_idx, val_idx, forget_positions, seed=seed
        )
        task.n_forget = int(forget.size)
    record = new_record(method, hyper, seed, forget)
    check_kwargs = {
        "retain_tolerance": retain_tolerance,
        "on_degradation": on_degradation,
        "retain_confidence": retain_confidence,
    }
    try:
        t_method = time.perf_counter()
        with isolated_seed(seed):
            new = func(task, **hyper)
        method_time = time.perf_counter() - t_method
        if not task.is_result(new):
            raise TypeError(
                f"Unlearning method {method!r} must return a {cls.__name__} bound to task.adata "
                f"(use task.new_model()), got {type(new).__name__}."
            )
        if streamed:
            checks = check_streamed_model(task, new, **check_kwargs)
        else:
            checks = check_unlearned_model(task, new, check_cells=check_cells, **check_kwargs)
    except BaseException:
        if manager is not None:
            cls._setup_adata_manager_store.pop(manager.adata_uuid, None)
        raise
    finally:
        task.close()

    if streamed:
        finish_streamed(task, new)
    else:
        names = np.asarray(adata_retain.obs_names, dtype=str)
        new.train_indices = train_idx
        new.validation_indices = val_idx
        new.test_indices = np.asarray([], dtype=int)
        new.train_obs_names_ = names[train_idx]
        new.validation_obs_names_ = names[val_idx]
    new.is_trained_ = True
    new.module.eval()
    record["log"] = task.log
    record["budget"] = task.budget
    record["checks"] = {**checks, "on_degradation": on_degradation}
    record["method_time_s"] = method_time
    if streamed:
        record["forget_digest"]["identifiers"] = _forget_identifiers(task)
    _certify(record, model, new, method, manager, task if streamed else None)
    record["wall_time_s"] = time.perf_counter() - t_start
    new.unlearn_record_ = record
    return new


def _forget_identifiers(task) -> str:
    """What the streamed record's salted forget digest is over."""
    if task.description is None:
        return "the ids given to unlearn (as strings)"
    column = task.description.get("obs_id_column")
    return f"obs[{column!r}]" if column else "soma_joinid (decimal strings)"


def _certify(record: dict[str, Any], model, new, method: str, manager, stream_task=None) -> None:
    """Add what a deletion certificate states: the method's guarantee (registry at request
    time), digests of the new model's training cells, their counts (not for a streamed request:
    :func:`~scvi_unlearn.unlearn.core._stream.streamed_retain_digest`) and its weights, and the
    chain of the earlier requests behind ``model`` (no cell name)."""
    row = guarantee(method)
    record["guarantee"] = {k: row[k] for k in ("kind", "exact", "private", "guarantee")}
    if stream_task is not None:
        record["retain_digest"] = streamed_retain_digest(stream_task)
    else:
        names = np.asarray(new.adata.obs_names, dtype=str)  # the retain cells = training cells
        location = dict(manager.data_registry[REGISTRY_KEYS.X_KEY])
        record["retain_digest"] = {
            "algorithm": "sha256(sorted obs_names)",
            "sha256": names_sha256(names),
            "n_cells": int(names.size),
            "counts_sha256": counts_sha256(new.adata, names, location),
            "counts": {"attr_name": location["attr_name"], "attr_key": location.get("attr_key")},
        }
    record["weights_sha256"] = weights_sha256(new.module)
    earlier = getattr(model, "unlearn_record_", None)
    if earlier:
        record["previous"] = [*earlier.get("previous", []), request_summary(earlier)]
