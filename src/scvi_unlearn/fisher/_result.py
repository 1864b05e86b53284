"""The result of :func:`~scvi_unlearn.fisher.fisher_overlap`: :class:`FisherOverlap`.

The forget-vs-retain statistics of the VAE (and of the classifier control), with the study's
headline table (:meth:`FisherOverlap.summary`), a tidy table and a figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scvi_unlearn.fisher._classifier import CLASSIFIER_COMPARABLE
from scvi_unlearn.fisher._overlap import VAE_CATEGORIES
from scvi_unlearn.fisher._per_sample import DiagonalFisher


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
