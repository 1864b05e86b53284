"""The membership-inference audit of one model: cells, features, attack, metrics, report.

This is the engine behind
:meth:`~scvi_unlearn.model.MembershipAttackMixin.membership_attack`; see ``docs/audit.md``
for the protocol and how it avoids the seed study's bugs (DESIGN sections 7 and 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from scvi_unlearn.attack._calibrated import CALIBRATION_SCORES, calibrated_scores
from scvi_unlearn.attack._drift import drift_attack
from scvi_unlearn.attack._evaluation_data import (
    as_obs_names,
    check_never_trained_on,
    registered_copy,
)
from scvi_unlearn.attack._features import attack_features, feature_columns
from scvi_unlearn.attack._metrics import DEFAULT_FPRS
from scvi_unlearn.attack._mlp import mlp_attack
from scvi_unlearn.attack._report import AttackReport, Judge
from scvi_unlearn.attack._shadow import shadow_attack, shadow_cells
from scvi_unlearn.attack._threshold import threshold_scores
from scvi_unlearn.metrics import per_cell_elbo

ATTACKS = ("mlp", "shadow", "threshold", "calibrated", "drift")

CellsLike = AnnData | Sequence[str] | np.ndarray


def resolve_cells(
    members: CellsLike,
    nonmembers: CellsLike | None,
    adata: AnnData | None,
    match_method: str = "auto",
    label_key: str = "cell_type",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[tuple[AnnData, np.ndarray]]]:
    """Member and non-member ``obs_names`` and, for each, the AnnData holding them.

    ``nonmembers=None`` draws held-out cells matched to the members from the data
    (:func:`scvi_unlearn.data.matched_nonmembers`), which needs ``adata`` to be the full
    dataset with ``obs["membership"]``.
    """
    from scvi_unlearn.data import matched_nonmembers

    member_names = as_obs_names(members, "members")
    if nonmembers is None:
        if adata is None:
            raise ValueError(
                "nonmembers=None draws matched held-out cells from the data: pass the full "
                "dataset as adata= (with obs['membership'] from "
                "scvi_unlearn.data.membership_split), or pass nonmembers explicitly."
            )
        nonmember_names = matched_nonmembers(
            adata, member_names, method=match_method, label_key=label_key, seed=seed
        )
    else:
        nonmember_names = as_obs_names(nonmembers, "nonmembers")
    both = np.intersect1d(member_names, nonmember_names)
    if both.size:
        raise ValueError(
            f"{both.size} cells are both members and non-members, e.g. {list(both[:5])}."
        )
    sources = []
    for cells, names, what in (
        (members, member_names, "members"),
        (nonmembers, nonmember_names, "nonmembers"),
    ):
        if adata is not None:
            sources.append((adata, names))
        elif isinstance(cells, AnnData):
            sources.append((cells, names))
        else:
            raise ValueError(
                f"{what} were given as obs_names: pass the AnnData holding them as adata=."
            )
    return member_names, nonmember_names, sources


def features_of(model, sources: list[tuple[AnnData, np.ndarray]], **kwargs) -> pd.DataFrame:
    """:func:`attack_features` of every (AnnData, names) source, stacked in order.

    Sources sharing one AnnData are featurized in one call (one pass over the training latents).
    """
    if all(src is sources[0][0] for src, _ in sources):
        names = np.concatenate([n for _, n in sources])
        return attack_features(model, sources[0][0], names, **kwargs)
    return pd.concat([attack_features(model, src, names, **kwargs) for src, names in sources])


def heldout_elbo(
    model, adata: AnnData, names: np.ndarray, n_draws: int = 8, seed: int = 0
) -> float:
    """Mean per-cell ELBO of ``names`` (held-out cells) under ``model`` (K draws, seeded)."""
    with registered_copy(model, adata, names, "held-out") as sub:
        return float(per_cell_elbo(model, sub, n_draws=n_draws, seed=seed)["elbo"].mean())


def run_membership_attack(
    model,
    members: CellsLike,
    nonmembers: CellsLike | None = None,
    *,
    adata: AnnData | None = None,
    attack: str = "mlp",
    reference_models: Sequence[Any] | None = None,
    baseline=None,
    score: str = "elbo",
    feature_set: str = "full",
    n_draws: int = 8,
    seed: int = 0,
    n_splits: int = 5,
    n_neighbors: int = 5,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    fprs: Sequence[float] = DEFAULT_FPRS,
    match_method: str = "auto",
    label_key: str = "cell_type",
    variance: str = "global",
    cross_fit: bool = True,
    attacker_kwargs: dict | None = None,
    target: Judge | None = None,
    batch_size: int = 256,
    n_shadow: int = 200,
) -> AttackReport:
    """Run one membership-inference audit; see ``MembershipAttackMixin.membership_attack``."""
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}.")
    if target is not None and attack == "calibrated" and reference_models is None:
        reference_models = target.models
    if attack == "calibrated":
        if not reference_models:
            raise ValueError(
                "attack='calibrated' needs reference_models: models that never trained on the "
                "evaluated cells (e.g. retrains without the members)."
            )
        if score not in CALIBRATION_SCORES:
            raise ValueError(
                f"score must be one of {sorted(CALIBRATION_SCORES)} for the calibrated attack."
            )
        if any(ref is model for ref in reference_models):
            raise ValueError("The evaluated model cannot be one of its own reference models.")
    if attack == "drift" and baseline is None:
        raise ValueError("attack='drift' needs baseline= (the original model).")
    attacker_kwargs = dict(attacker_kwargs or {})

    member_names, nonmember_names, sources = resolve_cells(
        members, nonmembers, adata, match_method, label_key, seed
    )
    check_never_trained_on(model, nonmember_names, "non-members", "evaluated model")
    cells = np.r_[member_names, nonmember_names]
    labels = np.r_[np.ones(member_names.size, int), np.zeros(nonmember_names.size, int)]
    feat_kwargs = dict(n_draws=n_draws, seed=seed, n_neighbors=n_neighbors, batch_size=batch_size)
    if attack in ("threshold", "calibrated"):
        feat_kwargs["n_neighbors"] = (
            n_neighbors if score == "train_knn_distance" else 0
        )  # the single score needs no latent neighbours
    features = features_of(model, sources, **feat_kwargs)

    fold = None
    if attack == "mlp":
        cols = feature_columns(features, feature_set)
        cf = mlp_attack(
            features[cols].to_numpy(), labels, n_splits=n_splits, seed=seed, **attacker_kwargs
        )
        scores, fold = cf.scores, cf.fold
    elif attack == "shadow":
        shadow_in, shadow_out = shadow_cells(model, adata, cells, n_shadow, seed)
        shadow_feat = pd.concat(
            [
                attack_features(model, model.adata, shadow_in, **feat_kwargs),
                attack_features(model, adata, shadow_out, **feat_kwargs),
            ]
        )
        cols = feature_columns(features, feature_set)
        y_shadow = np.r_[np.ones(shadow_in.size, int), np.zeros(shadow_out.size, int)]
        scores = shadow_attack(
            shadow_feat[cols].to_numpy(),
            y_shadow,
            features[cols].to_numpy(),
            seed=seed,
            **attacker_kwargs,
        )
    elif attack == "threshold":
        scores = threshold_scores(features, score)
    elif attack == "calibrated":
        column, sign = CALIBRATION_SCORES[score]
        ref_scores = []
        for ref in reference_models:
            check_never_trained_on(ref, cells, "evaluated cells", "reference model")
            ref_feat = features_of(ref, sources, **{**feat_kwargs, "n_neighbors": 0})
            ref_scores.append(sign * ref_feat[column].to_numpy())
        scores = calibrated_scores(
            sign * features[column].to_numpy(), np.vstack(ref_scores), variance=variance
        )
    else:  # drift
        check_never_trained_on(baseline, nonmember_names, "non-members", "baseline model")
        base = features_of(baseline, sources, **feat_kwargs)
        cols = feature_columns(features, feature_set)
        cf = drift_attack(
            base[cols].to_numpy(),
            features[cols].to_numpy(),
            labels,
            n_splits=n_splits,
            seed=seed,
            cross_fit_folds=cross_fit,
            **attacker_kwargs,
        )
        scores, fold = cf.scores, cf.fold

    protocol = {
        "attack": attack,
        "score": score if attack in ("threshold", "calibrated") else None,
        "feature_set": feature_set if attack in ("mlp", "shadow", "drift") else None,
        "n_shadow": n_shadow if attack == "shadow" else None,
        "n_draws": n_draws,
        "seed": seed,
        "n_splits": n_splits if attack in ("mlp", "drift") else None,
        "n_neighbors": feat_kwargs["n_neighbors"],
        "n_bootstrap": n_bootstrap,
        "fprs": tuple(fprs),
        "variance": variance if attack == "calibrated" else None,
        "n_references": len(reference_models) if attack == "calibrated" else None,
        "cross_fit": cross_fit if attack == "drift" else None,
        "attacker_kwargs": attacker_kwargs,
        "match_method": match_method if nonmembers is None else None,
        "members": member_names,
        "nonmembers": nonmember_names,
    }
    report = AttackReport.from_scores(
        labels,
        scores,
        attack,
        protocol=protocol,
        index=cells,
        n_bootstrap=n_bootstrap,
        level=level,
        seed=seed,
        fprs=fprs,
        features=features,
        fold=None if fold is None else pd.Series(fold, index=cells, name="fold"),
    )
    if target is not None:
        target.check_protocol(report)  # fail early, before the held-out ELBO is measured
        target.attach(model, report, adata)
    return report
