"""Evaluate a model on any AnnData without mutating it, with the module in eval mode.

scvi-tools registers an AnnData with a model in place (``obs["_scvi_*"]`` columns and
``uns["_scvi_uuid"]``), re-registers it when it was last set up by another manager, and turns a
view into an actual object.  The utility metrics evaluate a model on cells that are often *not*
its own (held-out cells, a superset, the same cells registered with another model), so
:func:`evaluation_adata` hands the model a private, registered copy whenever the user's object is
not already the model's up-to-date registered AnnData, and removes that copy from the model's
manager store afterwards.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pandas as pd
import torch
from anndata import AnnData
from scvi.data._constants import _MANAGER_UUID_KEY, _SCVI_UUID_KEY

from scvi_unlearn._registration import transfer_registry
from scvi_unlearn._seeding import isolated_seed


def _is_registered_as_is(model, adata: AnnData) -> bool:
    """Whether ``model`` can use ``adata`` without registering, transferring or copying it."""
    if adata.is_view or _SCVI_UUID_KEY not in adata.uns:
        return False
    store = type(model)._per_instance_manager_store.get(model.id, {})
    manager = store.get(adata.uns[_SCVI_UUID_KEY])
    return (
        manager is not None
        and manager.adata is adata
        and adata.uns.get(_MANAGER_UUID_KEY) == manager.id
    )


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """Raise ``logger``'s level to WARNING for a block, restoring it afterwards."""
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def evaluation_adata(model, adata: AnnData | None) -> Iterator[AnnData]:
    """Yield an AnnData registered with ``model`` holding the cells of ``adata``, unmutated.

    Parameters
    ----------
    model
        A scvi-tools model (:class:`scvi_unlearn.SCVI` or :class:`scvi.model.SCVI`).
    adata
        Cells to evaluate; ``None`` means the model's own AnnData.

    Yields
    ------
    ``adata`` itself when it is already the model's up-to-date registered AnnData (so nothing
    would change it); otherwise a copy registered with the model through
    :func:`scvi_unlearn._registration.transfer_registry` (setup transferred from the model's
    registry; a label the model never saw is accepted).  The copy's
    manager is removed from the model's store on exit, and a model loaded without AnnData gets
    its ``adata`` / ``adata_manager`` back.
    """
    target = model.adata if adata is None else adata
    if target is None:
        raise ValueError(
            "The model holds no AnnData (loaded without one): pass the cells to evaluate as "
            "`adata`."
        )
    if not isinstance(target, AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(target).__name__}.")
    if _is_registered_as_is(model, target):
        yield target
        return

    copy = target.copy()
    # a fresh identity: the copy must never be taken for the user's object by scvi-tools
    copy.uns.pop(_SCVI_UUID_KEY, None)
    copy.uns.pop(_MANAGER_UUID_KEY, None)
    cls = type(model)
    old_adata, old_manager = model._adata, model._adata_manager
    had_instance_store = model.id in cls._per_instance_manager_store
    try:
        try:
            # scvi-tools' count check samples entries with the global numpy RNG: isolate it;
            # the transfer is deliberate, so silence scvi-tools' "attempting to transfer" note
            with isolated_seed(0), _quiet(logging.getLogger("scvi.model.base._base_model")):
                transfer_registry(model, copy)
        except (KeyError, ValueError) as err:
            raise ValueError(
                "These cells cannot be set up for this model (their AnnData must have the "
                "genes, layer and categorical covariates the model was set up with): "
                f"{err}"
            ) from err
        yield copy
    finally:
        uuid = copy.uns.get(_SCVI_UUID_KEY)
        store = cls._per_instance_manager_store.get(model.id)
        if store is not None and uuid is not None:
            store.pop(uuid, None)
            if not store and not had_instance_store:
                del cls._per_instance_manager_store[model.id]
        if model._adata is not old_adata or model._adata_manager is not old_manager:
            # a model loaded without AnnData adopts the evaluated one: undo that
            model._adata, model._adata_manager = old_adata, old_manager
            if uuid is not None:
                cls._setup_adata_manager_store.pop(uuid, None)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode (no dropout, BatchNorm running statistics) for a block.

    The previous train/eval flags of every submodule are restored afterwards, so a model that
    was in training mode is left exactly as it was.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def cell_labels(adata: AnnData, labels_key: str) -> pd.Series:
    """Return ``adata.obs[labels_key]`` as strings (missing labels stay missing), with checks."""
    if not isinstance(labels_key, str):
        raise TypeError(f"labels_key must be a column name (str), got {labels_key!r}.")
    if labels_key not in adata.obs.columns:
        raise KeyError(
            f"labels_key {labels_key!r} is not a column of adata.obs; available columns: "
            f"{list(map(str, adata.obs.columns))}."
        )
    labels = adata.obs[labels_key]
    missing = labels.isna().to_numpy()
    values = [None if m else str(v) for v, m in zip(labels.to_numpy(), missing)]
    return pd.Series(values, index=adata.obs_names, dtype=object, name=labels_key)
