"""Forget-vs-retain Fisher overlap of an scVI model, with a classifier control.

:func:`fisher_overlap` (exposed as :meth:`scvi_unlearn.SCVI.fisher_overlap`) reproduces,
correctly, the analysis of the study this package grew from (VAE vs classifier forget/retain
Fisher cosines, "0.306 vs 0.018 = 17x"): per-sample diagonal Fishers of the negative ELBO with
fixed posterior noise, parameters without gradient excluded, no damping in any cosine, and a
classifier control mirroring the VAE encoder whose Fisher comes from the same estimator.
The result class, :class:`~scvi_unlearn.fisher.FisherOverlap`, is in
:mod:`scvi_unlearn.fisher._result`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scvi_unlearn._evaluation import evaluation_adata
from scvi_unlearn.fisher._classifier import (
    CLASSIFIER_COMPARABLE,
    classifier_category,
    classifier_cell_loss,
    encoder_architecture,
    labels_as_codes,
    train_classifier,
)
from scvi_unlearn.fisher._label_offsets import LABEL_OFFSETS, label_offset_shares
from scvi_unlearn.fisher._overlap import overlap_statistics, proposition1
from scvi_unlearn.fisher._per_sample import squared_gradient_mean
from scvi_unlearn.fisher._result import FisherOverlap
from scvi_unlearn.fisher._vae_fisher import fisher_of_cells

#: The VAE's decoder output layer tested by Proposition 1 (mean expression head).
OUTPUT_LAYER = "decoder.px_scale_decoder.0.weight"


def _as_names(cells, what: str) -> tuple[np.ndarray, AnnData | None]:
    if isinstance(cells, AnnData):
        return np.asarray(cells.obs_names, dtype=str), cells
    if isinstance(cells, str) or not isinstance(cells, Sequence | np.ndarray | pd.Index):
        raise TypeError(
            f"{what} must be an AnnData or a sequence of obs_names, got {type(cells).__name__}."
        )
    names = np.asarray(list(cells))
    if names.size and names.dtype.kind not in "UO":
        raise TypeError(f"{what} must hold obs_names (strings), got dtype {names.dtype}.")
    return names.astype(str), None


def _locate(model, names: np.ndarray, adata: AnnData | None, what: str, stack: ExitStack):
    """(AnnData, positional indices) of the cells: in model.adata, else the given AnnData.

    Cells outside the model's AnnData are evaluated on a private registered copy of ``adata``
    (:func:`scvi_unlearn._evaluation.evaluation_adata`, entered on ``stack``): the user's
    AnnData and the model are left unchanged, and its genes are aligned to the model's.
    """
    if names.size == 0:
        raise ValueError(f"{what} is empty.")
    if len(np.unique(names)) != len(names):
        raise ValueError(f"{what} contains duplicated obs_names.")
    if model.adata is not None:
        pos = model.adata.obs_names.get_indexer(names)
        if (pos >= 0).all():
            return model.adata, pos
    if adata is not None:
        return stack.enter_context(evaluation_adata(model, adata)), np.arange(adata.n_obs)
    missing = names[pos < 0] if model.adata is not None else names
    raise KeyError(
        f"{len(missing)} cells of {what} are not in the model's AnnData, e.g. "
        f"{list(missing[:3])}; pass them as an AnnData."
    )


def _gather(model, adata, indices, batch_size=512):
    loader = model._make_data_loader(
        adata=adata, indices=indices, batch_size=batch_size, shuffle=False
    )
    xs, ys = [], []
    for t in loader:
        xs.append(t[REGISTRY_KEYS.X_KEY].float())
        ys.append(t[REGISTRY_KEYS.LABELS_KEY].reshape(-1).long())
    return torch.cat(xs), torch.cat(ys)


def _labels(model, adata, indices, labels_key, registry_codes):
    if labels_key is not None:
        if labels_key not in adata.obs:
            raise KeyError(f"labels_key {labels_key!r} is not a column of adata.obs.")
        return np.asarray(adata.obs[labels_key].iloc[indices].astype(str))
    registered = model.adata_manager.registry["setup_args"].get("labels_key")
    if registered is None:
        raise ValueError(
            "control='classifier' needs cell-type labels: pass labels_key=<obs column> or "
            "register one with setup_anndata(..., labels_key=...)."
        )
    return registry_codes.numpy().astype(str)


def fisher_overlap(
    model,
    adata_forget,
    adata_retain=None,
    *,
    control: str | None = "classifier",
    labels_key: str | None = None,
    n_draws: int = 1,
    seed: int = 0,
    batch_size: int = 128,
    classifier_epochs: int = 100,
) -> FisherOverlap:
    """Forget-vs-retain overlap of per-sample diagonal Fishers, with a classifier control.

    See :meth:`scvi_unlearn.model.FisherMixin.fisher_overlap` for the parameters.
    """
    if control not in ("classifier", None):
        raise ValueError(f"control must be 'classifier' or None, got {control!r}.")
    f_names, f_adata = _as_names(adata_forget, "adata_forget")
    if adata_retain is None:
        trained = model.trained_obs_names
        r_names, r_adata = trained[~np.isin(trained, f_names)], None
    else:
        r_names, r_adata = _as_names(adata_retain, "adata_retain")
    shared = np.intersect1d(f_names, r_names)
    if shared.size:
        raise ValueError(
            f"adata_forget and adata_retain share {shared.size} cells, e.g. {list(shared[:3])}."
        )
    with ExitStack() as stack:
        fa, fi = _locate(model, f_names, f_adata, "adata_forget", stack)
        ra, ri = _locate(model, r_names, r_adata, "adata_retain", stack)
        kw = {"n_draws": n_draws, "seed": seed, "batch_size": batch_size}
        return _overlap(model, (fa, fi), (ra, ri), control, labels_key, classifier_epochs, kw)


def _overlap(model, forget_cells, retain_cells, control, labels_key, epochs, kw) -> FisherOverlap:
    """The analysis on located cells (their AnnData registered with ``model``)."""
    (fa, fi), (ra, ri) = forget_cells, retain_cells
    n_draws, seed, batch_size = kw["n_draws"], kw["seed"], kw["batch_size"]
    forget = fisher_of_cells(model, fa, fi, **kw)
    retain = fisher_of_cells(model, ra, ri, **kw)
    stats = overlap_statistics(forget.values, retain.values)
    er = stats["effective_rank"]
    effective = {"forget": er["a"], "retain": er["b"], "n_parameters": er["n_parameters"]}
    prop1 = None
    if OUTPUT_LAYER in forget.values:
        prop1 = {
            "layer": OUTPUT_LAYER,
            **proposition1(forget.values[OUTPUT_LAYER], retain.values[OUTPUT_LAYER]),
        }
    offsets = None
    if LABEL_OFFSETS in forget.values:
        offsets = label_offset_shares(model, forget_cells, retain_cells, forget, retain)
    result = FisherOverlap(
        label_offsets=offsets,
        global_cosine=stats["global_cosine"],
        normalized_cosine=stats["normalized_cosine"],
        by_tensor=stats["by_tensor"],
        by_category=stats["by_category"],
        topk=stats["topk"],
        effective_rank=effective,
        log_correlation=stats["log_correlation"],
        proposition1=prop1,
        excluded=forget.excluded,
        n_forget=forget.n_examples,
        n_retain=retain.n_examples,
        n_draws=n_draws,
        seed=seed,
        forget_fisher=forget,
        retain_fisher=retain,
    )
    if control == "classifier":
        result.control, result.ratios = _classifier_control(
            model, (fa, fi), (ra, ri), labels_key, seed, batch_size, epochs, result
        )
    return result


def _classifier_control(model, forget, retain, labels_key, seed, batch_size, epochs, vae):
    xf, yf = _gather(model, *forget)
    xr, yr = _gather(model, *retain)
    lf = _labels(model, forget[0], forget[1], labels_key, yf)
    lr = _labels(model, retain[0], retain[1], labels_key, yr)
    codes, classes = labels_as_codes(np.concatenate([lf, lr]))
    if len(classes) < 2:
        raise ValueError("The classifier control needs at least two cell types.")
    y = torch.as_tensor(codes)
    x = torch.cat([xf, xr])
    arch = encoder_architecture(model.module)
    clf, record = train_classifier(
        x, y, len(classes), max_epochs=epochs, seed=seed, batch_size=batch_size, **arch
    )
    record["architecture"] = arch
    record["classes"] = classes

    def fisher(xs, ys):
        batches = (
            {"X": xs[i : i + batch_size], "y": ys[i : i + batch_size]}
            for i in range(0, xs.shape[0], batch_size)
        )
        return squared_gradient_mean(clf, classifier_cell_loss, batches, seed=seed)

    n_f = xf.shape[0]
    ff, fr = fisher(xf, y[:n_f]), fisher(xr, y[n_f:])
    stats = overlap_statistics(ff.values, fr.values, classifier_category, ("encoder", "output"))
    er = stats.pop("effective_rank")
    stats["effective_rank"] = {
        "forget": er["a"],
        "retain": er["b"],
        "n_parameters": er["n_parameters"],
    }
    stats["record"] = record
    stats["forget_fisher"], stats["retain_fisher"] = ff, fr
    stats["classifier"] = clf
    rows = [("global", vae.global_cosine, stats["global_cosine"])]
    rows.append(
        ("global (magnitude-normalised)", vae.normalized_cosine, stats["normalized_cosine"])
    )
    for clf_cat, vae_cat in CLASSIFIER_COMPARABLE.items():
        if clf_cat in stats["by_category"].index and vae_cat in vae.by_category.index:
            rows.append(
                (
                    f"{vae_cat} vs classifier {clf_cat}",
                    vae.by_category.loc[vae_cat, "cosine"],
                    stats["by_category"].loc[clf_cat, "cosine"],
                )
            )
    ratios = pd.DataFrame(rows, columns=["scope", "vae_cosine", "classifier_cosine"])
    ratios["ratio"] = ratios["vae_cosine"] / ratios["classifier_cosine"]
    return stats, ratios.set_index("scope")
