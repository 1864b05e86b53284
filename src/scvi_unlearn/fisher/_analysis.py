"""Forget-vs-retain Fisher overlap of an scVI model, with a classifier control.

:func:`fisher_overlap` (exposed as :meth:`scvi_unlearn.SCVI.fisher_overlap`) reproduces,
correctly, the analysis of the study this package grew from (VAE vs classifier forget/retain
Fisher cosines, "0.306 vs 0.018 = 17x"): per-sample diagonal Fishers of the negative ELBO with
fixed posterior noise, parameters without gradient excluded, no damping in any cosine, and a
classifier control mirroring the VAE encoder whose Fisher comes from the same estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

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
from scvi_unlearn.fisher._overlap import VAE_CATEGORIES, overlap_statistics, proposition1
from scvi_unlearn.fisher._per_sample import DiagonalFisher, squared_gradient_mean
from scvi_unlearn.fisher._vae_fisher import fisher_of_cells

#: The VAE's decoder output layer tested by Proposition 1 (mean expression head).
OUTPUT_LAYER = "decoder.px_scale_decoder.0.weight"


@dataclass
class FisherOverlap:
    """Forget-vs-retain Fisher overlap of a model (and of the classifier control).

    Attributes
    ----------
    global_cosine
        Cosine of the forget and retain Fishers over every parameter that receives a gradient.
    normalized_cosine
        Magnitude-normalised aggregate (:func:`~scvi_unlearn.fisher.normalized_cosine`).
    by_tensor, by_category
        Cosines per parameter tensor and per category (encoder, latent heads, decoder hidden,
        decoder output, dispersion).
    topk
        Top-k index overlap at 0.1 %, 1 % and 10 % of the parameters, with chance levels.
    effective_rank
        Effective rank of each Fisher (``"forget"``, ``"retain"``, ``"n_parameters"``).
    log_correlation
        Pearson correlation of the log Fishers (entries positive in both).
    proposition1
        The study's Proposition 1 for the decoder output layer
        (:func:`~scvi_unlearn.fisher.proposition1`): ``measured`` vs ``predicted`` cosine.
    control
        The classifier's statistics (same keys) and its training record, or ``None``.
    ratios
        VAE / classifier cosine per comparable scope (global; encoder vs hidden layers;
        decoder output vs class-specific output), or ``None``.
    excluded
        Parameters without gradient (never counted).
    forget_fisher, retain_fisher
        The two :class:`~scvi_unlearn.fisher.DiagonalFisher` estimates.
    label_offsets
        Only for a :class:`~scvi_unlearn.ConditionalSCVI` (else ``None``): where the forget
        cells' Fisher mass (trace of the diagonal Fisher) lives, for the *forgotten labels*
        (labels of forget cells that no retain cell has).  ``labels`` and ``codes`` of those
        labels; ``forget_share``: share of the forget Fisher mass in their offset columns;
        ``other_offsets_share``: in the other labels' offsets; ``shared_share``: in every other
        (shared) parameter (the three sum to 1); ``retain_mass`` and ``retain_max``: total and
        largest retain Fisher entry on the forgotten labels' columns, exactly 0 (a label's
        offsets get no gradient from cells of other labels; ``docs/fisher.md``, "Conditional
        scVI").  The category ``label offsets`` of :attr:`by_category` holds these offsets.
    """

    global_cosine: float
    normalized_cosine: float
    by_tensor: pd.DataFrame
    by_category: pd.DataFrame
    topk: pd.DataFrame
    effective_rank: dict
    log_correlation: float
    proposition1: dict | None
    excluded: tuple[str, ...]
    n_forget: int
    n_retain: int
    n_draws: int
    seed: int
    forget_fisher: DiagonalFisher = field(repr=False)
    retain_fisher: DiagonalFisher = field(repr=False)
    control: dict | None = field(default=None, repr=False)
    ratios: pd.DataFrame | None = None
    label_offsets: dict | None = None

    def summary(self) -> pd.DataFrame:
        """Cosines per scope: VAE, classifier and their ratio (the study's headline table)."""
        rows = [("global", self.global_cosine, "global")]
        rows.append(("global (magnitude-normalised)", self.normalized_cosine, "normalized"))
        for cat, r in self.by_category.iterrows():
            rows.append((cat, r["cosine"], cat))
        out = pd.DataFrame(
            [
                {"scope": s, "n_parameters": self._n_params(key), "vae_cosine": v}
                for s, v, key in rows
            ]
        ).set_index("scope")
        if self.control is not None:
            clf = self.control
            clf_cos = {
                "global": clf["global_cosine"],
                "global (magnitude-normalised)": clf["normalized_cosine"],
            }
            for cat, vae_cat in CLASSIFIER_COMPARABLE.items():
                if cat in clf["by_category"].index:
                    clf_cos[vae_cat] = clf["by_category"].loc[cat, "cosine"]
            out["classifier_cosine"] = [clf_cos.get(s, np.nan) for s in out.index]
            out["vae_over_classifier"] = out["vae_cosine"] / out["classifier_cosine"]
        return out

    def _n_params(self, key):
        if key in ("global", "normalized"):
            return int(self.effective_rank["n_parameters"])
        return int(self.by_category.loc[key, "n_parameters"])

    def to_frame(self) -> pd.DataFrame:
        """Every statistic as a tidy table: ``model, level, name, statistic, value``."""
        rows = []

        def add(model, stats, prop1):
            rows.append((model, "global", "all", "cosine", stats["global_cosine"]))
            rows.append((model, "global", "all", "normalized_cosine", stats["normalized_cosine"]))
            rows.append((model, "global", "all", "log_correlation", stats["log_correlation"]))
            for who in ("forget", "retain"):
                rows.append(
                    (model, "global", "all", f"effective_rank_{who}", stats["effective_rank"][who])
                )
            rows.append(
                (model, "global", "all", "n_parameters", stats["effective_rank"]["n_parameters"])
            )
            for cat, r in stats["by_category"].iterrows():
                rows.append((model, "category", cat, "cosine", r["cosine"]))
            for t, r in stats["by_tensor"].iterrows():
                rows.append((model, "tensor", t, "cosine", r["cosine"]))
            for _, r in stats["topk"].iterrows():
                name = f"top {100 * r['fraction']:g}%"
                rows.append((model, "topk", name, "overlap", r["overlap"]))
                rows.append((model, "topk", name, "chance", r["chance"]))
            for k, v in (prop1 or {}).items():
                rows.append((model, "proposition1", prop1.get("layer", ""), k, v))

        add("vae", self._stats(), self.proposition1)
        for k, v in (self.label_offsets or {}).items():
            if isinstance(v, int | float):
                rows.append(("vae", "label offsets", "forgotten labels", k, v))
        if self.control is not None:
            add("classifier", self.control, None)
            for scope, r in self.ratios.iterrows():
                rows.append(("ratio", "comparison", scope, "vae_over_classifier", r["ratio"]))
        frame = pd.DataFrame(rows, columns=["model", "level", "name", "statistic", "value"])
        return frame[frame["statistic"] != "layer"].reset_index(drop=True)

    def _stats(self) -> dict:
        return {
            "global_cosine": self.global_cosine,
            "normalized_cosine": self.normalized_cosine,
            "by_tensor": self.by_tensor,
            "by_category": self.by_category,
            "topk": self.topk,
            "effective_rank": self.effective_rank,
            "log_correlation": self.log_correlation,
        }

    def plot(self, max_points: int = 20_000, seed: int = 0):
        """Figure: cosine per category (VAE vs classifier) and forget vs retain Fisher scatter.

        Parameters
        ----------
        max_points
            Entries drawn (uniformly, with ``seed``) for the scatter.
        seed
            Seed of that subsample.

        Returns
        -------
        :class:`matplotlib.figure.Figure`
        """
        import matplotlib.pyplot as plt

        fig, (ax_bar, ax_sc) = plt.subplots(1, 2, figsize=(12, 4.5))
        table = self.summary()
        pos = np.arange(len(table))
        width = 0.4
        ax_bar.bar(pos - width / 2, table["vae_cosine"], width, label="scVI")
        if "classifier_cosine" in table:
            has = table["classifier_cosine"].notna().to_numpy()
            ax_bar.bar(
                pos[has] + width / 2,
                table["classifier_cosine"][has],
                width,
                label="classifier (comparable layers)",
            )
        ax_bar.set_xticks(pos, table.index, rotation=35, ha="right")
        ax_bar.set_ylabel("forget vs retain Fisher cosine")
        ax_bar.set_ylim(0, 1)
        ax_bar.legend()
        ax_bar.set_title(f"{self.n_forget} forget vs {self.n_retain} retain cells")

        rng = np.random.default_rng(seed)
        cats = sorted(set(self.by_tensor["category"]), key=lambda c: (c not in VAE_CATEGORIES, c))
        for cat in cats:
            names = self.by_tensor.index[self.by_tensor["category"] == cat]
            f = self.forget_fisher.flat(names).numpy()
            r = self.retain_fisher.flat(names).numpy()
            keep = (f > 0) & (r > 0)
            f, r = f[keep], r[keep]
            share = max_points * len(f) / max(1, self.effective_rank["n_parameters"])
            if len(f) > share:
                idx = rng.choice(len(f), size=max(1, int(share)), replace=False)
                f, r = f[idx], r[idx]
            ax_sc.scatter(r, f, s=2, alpha=0.3, label=cat, rasterized=True)
        ax_sc.set_xscale("log")
        ax_sc.set_yscale("log")
        lo, hi = ax_sc.get_xlim()
        ax_sc.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax_sc.set_xlabel("retain Fisher (per parameter)")
        ax_sc.set_ylabel("forget Fisher (per parameter)")
        ax_sc.legend(markerscale=5, fontsize=8)
        ax_sc.set_title(f"scVI, global cosine {self.global_cosine:.3f}")
        fig.tight_layout()
        return fig


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
