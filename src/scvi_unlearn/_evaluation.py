"""Evaluating a model on cells that are not its own, without mutating anything.

scvi-tools registers an AnnData with a model in place (``obs["_scvi_*"]`` columns and
``uns["_scvi_uuid"]``), re-registers it when it was last set up by another manager, and turns a
view into an actual object.  The membership audit, the utility metrics and the Fisher analysis
all evaluate models on cells that are often *not* their own (held-out cells, the forgotten
cells under a retrain, the same cells registered with another model), so
:func:`evaluation_adata` hands the model a private, registered copy whenever the user's object
is not already the model's up-to-date registered AnnData, and removes that copy from the
model's manager stores afterwards; :func:`eval_mode` runs the module without dropout and with
BatchNorm running statistics, restoring every submodule's flag afterwards.

scvi-tools only compares the *number* of genes when it transfers a registry, so an AnnData
with the model's genes in another order is silently misaligned.  :func:`evaluation_adata`
therefore aligns the copy's genes to the model's registered ``var_names`` (or refuses, naming
the missing genes), and it refuses an untrained or minified model and NaN, infinite or
negative counts (:func:`scvi_unlearn._counts.check_counts`) with an error that names the
problem.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data._constants import (
    _FIELD_REGISTRIES_KEY,
    _MANAGER_UUID_KEY,
    _SCVI_UUID_KEY,
    _STATE_REGISTRY_KEY,
)

from scvi_unlearn._counts import COUNT_LIKELIHOODS, check_counts
from scvi_unlearn._seeding import isolated_seed


def transfer_registry(model, sub: AnnData) -> None:
    """Register ``sub`` with ``model`` by transferring the model's registry to it.

    A retrained or unlearned model may never have seen some *label* (e.g. the forgotten cell
    type), and scvi-tools refuses to transfer a registry to cells with an unknown category.
    Labels do not enter scVI's likelihood (unless ``dispersion="gene-label"``), so an unknown
    label is accepted by extending the label categories of the copy's manager only; an unknown
    batch or categorical covariate is an error.
    """
    from scvi import REGISTRY_KEYS

    try:
        model._validate_anndata(sub)
        return
    except ValueError as err:
        if "not found in source registry" not in str(err):
            raise
        original_error = err
    manager = model.adata_manager.transfer_fields(sub, extend_categories=True)
    for key in model.adata_manager.data_registry:
        if key == REGISTRY_KEYS.LABELS_KEY:
            continue
        old = model.adata_manager.get_state_registry(key)
        new = manager.get_state_registry(key)
        categorical = [k for k in ("categorical_mapping", "mappings") if k in old]
        if any(str(old[k]) != str(new.get(k)) for k in categorical):
            raise ValueError(
                f"The evaluated cells have a {key!r} category the model was not set up with "
                f"({original_error})."
            ) from original_error
    if getattr(model.module, "dispersion", None) == "gene-label":
        raise ValueError(
            f"The evaluated cells have a label the model does not know and its dispersion "
            f"depends on the label ({original_error})."
        ) from original_error
    model._register_manager_for_instance(manager)


def _model_registry(model) -> dict | None:
    """The registry of ``model``'s AnnData manager, or the saved one (loaded without AnnData)."""
    manager = getattr(model, "adata_manager", None)
    if manager is not None:
        return manager.registry
    return getattr(model, "registry_", None)


def _x_field(model) -> dict:
    registry = _model_registry(model) or {}
    return registry.get(_FIELD_REGISTRIES_KEY, {}).get(REGISTRY_KEYS.X_KEY, {})


def registered_var_names(model) -> pd.Index | None:
    """The genes (``var_names``) ``model`` was set up with, in its order.

    Read from the registry of the model's AnnData manager (the ``X`` field's state registry,
    ``column_names``), or from the saved registry of a model loaded without AnnData.

    Parameters
    ----------
    model
        A scvi-tools model.

    Returns
    -------
    The genes as a string :class:`pandas.Index`, or ``None`` when the registry does not
    record them.
    """
    names = _x_field(model).get(_STATE_REGISTRY_KEY, {}).get("column_names")
    if names is None:
        return None
    return pd.Index(np.asarray(names).astype(str))


def _preview(names, k: int = 5) -> str:
    names = list(names)
    shown = ", ".join(repr(str(n)) for n in names[:k])
    return shown + (f", ... ({len(names)} in total)" if len(names) > k else "")


def _align_genes(model, adata: AnnData) -> AnnData:
    """``adata`` with its genes in the model's registered order (a view when reordered).

    scvi-tools only checks the number of genes when it transfers a registry: the same genes in
    another order would be read misaligned.  Missing or foreign genes raise a ValueError naming
    them.
    """
    genes = registered_var_names(model)
    if genes is None:
        return adata
    have = pd.Index(np.asarray(adata.var_names).astype(str))
    if have.equals(genes):
        return adata
    missing = genes.difference(have, sort=False)
    extra = have.difference(genes, sort=False)
    if missing.size or extra.size:
        problems = []
        if missing.size:
            problems.append(
                f"{missing.size} of the model's {genes.size} genes are missing "
                f"({_preview(missing)})"
            )
        if extra.size:
            problems.append(f"{extra.size} genes are not among the model's ({_preview(extra)})")
        raise ValueError(
            "These cells cannot be set up for this model: their genes (var_names) are not the "
            "genes the model was set up with: "
            + "; ".join(problems)
            + ". Evaluate cells measured on exactly the model's genes (any order)."
        )
    if not have.is_unique or not genes.is_unique:
        raise ValueError(
            "The AnnData's genes are the model's in another order, but var_names are not "
            "unique, so they cannot be aligned; make them unique (adata.var_names_make_unique())."
        )
    return adata[:, have.get_indexer(genes)]


def minified_type(model) -> str | None:
    """The minified-data type of ``model`` (scvi-tools' ``minify_adata()``), or ``None``.

    Parameters
    ----------
    model
        A scvi-tools model.

    Returns
    -------
    ``model.minified_data_type`` (from its AnnData manager) or, for a model without AnnData,
    its module's ``minified_data_type``; ``None`` for a model with full counts.
    """
    try:
        minified = getattr(model, "minified_data_type", None)
    except (KeyError, ValueError, AttributeError):
        minified = None
    if minified is None:
        minified = getattr(getattr(model, "module", None), "minified_data_type", None)
    return minified


def _check_registered_counts(model, adata: AnnData) -> None:
    """NaN / infinite (and, for a count likelihood, negative) values of the registered data."""
    manager = model.get_anndata_manager(adata, required=True)
    location = manager.data_registry[REGISTRY_KEYS.X_KEY]
    attr_key = location.get("attr_key")
    what = "adata.X" if attr_key is None else f"adata.{location['attr_name']}[{attr_key!r}]"
    likelihood = getattr(model.module, "gene_likelihood", "nb")
    check_counts(
        manager.get_from_registry(REGISTRY_KEYS.X_KEY),
        what,
        adata.obs_names,
        adata.var_names,
        counts=likelihood in COUNT_LIKELIHOODS,
    )


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
    :func:`transfer_registry` (setup transferred from the model's
    registry; a label the model never saw is accepted).  The copy's genes are put in the
    model's registered order (:func:`registered_var_names`) when ``adata`` has the same genes
    in another order.  The copy's
    manager is removed from the model's store on exit, and a model loaded without AnnData gets
    its ``adata`` / ``adata_manager`` back.

    Raises
    ------
    RuntimeError
        When the model is not trained (``is_trained_`` is False), as scvi-tools' own queries do.
    ValueError
        When the model holds no AnnData and ``adata`` is ``None``; when the model is minified
        and ``adata`` is not its own AnnData; when genes of the model are missing from
        ``adata`` (or ``adata`` has others); when the registered counts hold NaN, infinite or
        (count likelihoods) negative values; when the cells cannot be set up for the model.
    TypeError
        When ``adata`` is not an AnnData.
    """
    target = model.adata if adata is None else adata
    if target is None:
        raise ValueError(
            "The model holds no AnnData (loaded without one): pass the cells to evaluate as "
            "`adata`."
        )
    if not isinstance(target, AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(target).__name__}.")
    if not getattr(model, "is_trained_", False):
        raise RuntimeError(
            "The model is not trained (is_trained_ is False): its scores, latent spaces and "
            "audits mean nothing. Train it first (model.train())."
        )
    if _is_registered_as_is(model, target):
        yield target
        return
    minified = minified_type(model)
    if minified is not None:
        raise ValueError(
            f"The model is minified (minify_adata(), {minified!r}): its AnnData keeps latent "
            "posteriors instead of counts, so it cannot score other cells. Evaluate with the "
            "full model: the one from before minify_adata() (e.g. saved before minifying and "
            "loaded with its full AnnData)."
        )

    copy = _align_genes(model, target).copy()
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
            with (
                isolated_seed(0),
                _quiet(logging.getLogger("scvi.model.base._base_model")),
                warnings.catch_warnings(),
            ):
                # a held-out copy may hold a few cells of a type: scvi-tools' note on labels
                # with fewer than 3 cells concerns training, not scoring (one per copy otherwise)
                warnings.filterwarnings("ignore", message=r"Category .* fewer than 3 cells")
                transfer_registry(model, copy)
        except (KeyError, ValueError) as err:
            raise ValueError(
                "These cells cannot be set up for this model (their AnnData must have the "
                "genes, layer and categorical covariates the model was set up with): "
                f"{err}"
            ) from err
        _check_registered_counts(model, copy)
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
