"""Cells to evaluate, as a private registered copy: the user's AnnData is never touched.

An audit evaluates cells that are often *not* in the model's AnnData (an unlearned model is
bound to its retain cells; held-out cells are never in a model's AnnData).  scvi-tools'
:meth:`~scvi.model.base.BaseModelClass._validate_anndata` transfers the model's registry to an
unregistered AnnData by *writing into it* (``obs["_scvi_*"]``, ``uns["_scvi_uuid"]``), and it
remembers every AnnData it saw in a class-level store.  :func:`registered_copy` therefore
works on a copy of the requested cells (through the shared
:func:`scvi_unlearn._evaluation.evaluation_adata`), so neither the user's AnnData nor the
model's registry keeps a trace of the audit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
from anndata import AnnData

from scvi_unlearn._evaluation import evaluation_adata


def as_obs_names(cells: AnnData | Sequence[str] | np.ndarray, what: str) -> np.ndarray:
    """``obs_names`` (``str`` array) of an AnnData or of a sequence of names; rejects empties."""
    if isinstance(cells, AnnData):
        names = np.asarray(cells.obs_names, dtype=str)
    elif isinstance(cells, str):
        raise TypeError(f"{what} must be an AnnData or a sequence of obs_names, not a string.")
    else:
        names = np.asarray(list(cells), dtype=str)
    if names.size == 0:
        raise ValueError(f"{what} is empty.")
    if np.unique(names).size != names.size:
        raise ValueError(f"{what} contains duplicated obs_names.")
    return names


@contextlib.contextmanager
def registered_copy(model, adata: AnnData, names: np.ndarray, what: str) -> Iterator[AnnData]:
    """Yield a copy of the cells ``names`` of ``adata`` (in that order), registered with ``model``.

    The copy gets the model's registry transferred to it, and the registration is removed again
    on exit, also on exceptions (:func:`scvi_unlearn._evaluation.evaluation_adata`).
    """
    if getattr(model, "adata_manager", None) is None:
        raise ValueError(
            "The model has no AnnData manager to transfer its registry from; load it with an "
            "AnnData (scvi-tools' load(..., adata=...))."
        )
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()
        raise ValueError(
            f"The AnnData given has duplicated obs_names ({dup.size}, e.g. {list(dup[:5])}): "
            "cells are identified by name; make them unique first "
            "(adata.obs_names_make_unique())."
        )
    index = adata.obs_names.get_indexer(names)
    if (index < 0).any():
        missing = names[index < 0]
        raise KeyError(
            f"{missing.size} {what} cells are not in the AnnData given, e.g. {list(missing[:5])}."
        )
    with evaluation_adata(model, adata[index]) as sub:
        yield sub


def training_obs_names(model) -> np.ndarray:
    """``obs_names`` of every cell ``model`` trained on (train + validation split).

    Uses ``model.trained_obs_names`` (recorded by :meth:`scvi_unlearn.SCVI.train`) and falls
    back to ``train_indices`` / ``validation_indices`` of a plain scvi-tools model.
    """
    try:
        names = getattr(model, "trained_obs_names", None)
    except ValueError:  # scvi_unlearn.SCVI that was trained or saved without its record
        names = None
    if names is not None:
        return np.asarray(names, dtype=str)
    idx = [getattr(model, "train_indices", None), getattr(model, "validation_indices", None)]
    idx = [np.asarray(i, dtype=int) for i in idx if i is not None]
    if not idx or model.adata is None:
        raise ValueError(
            "The model does not record which cells it was trained on; train it with "
            "scvi_unlearn.SCVI.train."
        )
    return np.asarray(model.adata.obs_names, dtype=str)[np.concatenate(idx)]


def heldout_names(adata: AnnData | None, heldout, exclude: np.ndarray) -> np.ndarray:
    """``obs_names`` of held-out cells: ``heldout`` if given, else ``obs["membership"]``.

    The cells of ``adata`` with ``obs["membership"] == "heldout"``
    (:func:`scvi_unlearn.data.membership_split`) minus ``exclude``.
    """
    from scvi_unlearn.data import HOLDOUT, SPLIT_KEY

    if heldout is not None:
        return as_obs_names(heldout, "heldout")
    if adata is None or SPLIT_KEY not in adata.obs:
        raise ValueError(
            "The utility rule needs held-out cells: pass heldout= (obs_names) or adata= with "
            "obs['membership'] (scvi_unlearn.data.membership_split)."
        )
    names = np.asarray(adata.obs_names[(adata.obs[SPLIT_KEY].astype(str) == HOLDOUT)], dtype=str)
    return np.setdiff1d(names, exclude)


def check_unseen_adata(model, adata, what: str, accepted: str, minimum: int) -> None:
    """Raise unless ``adata`` is an AnnData of at least ``minimum`` cells ``model`` never
    trained on; ``what`` names the argument and ``accepted`` what it accepts (messages)."""
    from anndata import AnnData

    if not isinstance(adata, AnnData):
        raise TypeError(f"{what} must be {accepted}, got {type(adata).__name__}.")
    if adata.n_obs < minimum:
        raise ValueError(f"{what} needs at least {minimum} cells, got {adata.n_obs}.")
    names = np.asarray(adata.obs_names, dtype=str)
    check_never_trained_on(model, names, what, "original model")


def check_never_trained_on(model, names: np.ndarray, what: str, role: str) -> None:
    """Raise if ``model`` trained on any of ``names`` (skipped if it records nothing)."""
    try:
        trained = training_obs_names(model)
    except ValueError:
        return
    seen = np.intersect1d(trained, names)
    if seen.size:
        raise ValueError(
            f"{seen.size} {what} are in the training set of the {role}, e.g. "
            f"{list(seen[:5])}: {what} must be cells it never trained on."
        )
