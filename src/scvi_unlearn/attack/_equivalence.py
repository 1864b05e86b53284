"""Per-cell retrain equivalence: is each forgotten cell fit the way retrained models fit it?

A population membership attack on a few dozen cells has little power, and it cannot see a
method that damages the whole cell type (the forget cells *and* their unseen neighbours move
together).  The equivalence test asks the defining question of unlearning directly, cell by
cell: under the candidate, is each forget cell's score (ELBO over fixed posterior draws) where
models retrained without it put it?  In the spirit of U-LiRA (Hayes et al., "Inexact unlearning
needs more careful evaluations to avoid a false sense of privacy", SaTML 2025) and of the
NeurIPS 2023 unlearning challenge, which both judge each forget example against the
distribution of retrained models.

Statistics are in :mod:`scvi_unlearn.attack._zscores`; the protocol and its measured false-
positive rate and power are in ``docs/equivalence.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from scvi_unlearn.attack._equivalence_report import EquivalenceReport, is_exact
from scvi_unlearn.attack._evaluation_data import (
    as_obs_names,
    check_never_trained_on,
    heldout_names,
    registered_copy,
)
from scvi_unlearn.attack._power import (
    DEFAULT_MARGIN,
    ReferencePowerWarning,
    power_message,
    power_summary,
)
from scvi_unlearn.attack._utility import (
    MIN_TYPE_CELLS,
    SAME_TYPE_MARGIN,
    per_type_elbo,
    utility_checks,
)
from scvi_unlearn.attack._zscores import (
    ReferenceModel,
    aggregates,
    decide,
    loo_null_z,
    null_test,
)
from scvi_unlearn.metrics import per_cell_elbo

#: per-cell statistics: ``per_cell_elbo`` column and the sign that makes "higher = better fit".
STATISTICS = {"elbo": ("elbo", 1.0), "reconstruction": ("reconstruction", -1.0)}
#: the cell groups of a test: the forgotten cells, held-out cells of their types, the others.
GROUPS = ("forget", "same_type", "other_types")


def heldout_groups(
    adata: AnnData,
    forget: np.ndarray,
    heldout: np.ndarray,
    label_key: str,
    max_cells: int | None,
    seed: int,
) -> dict[str, np.ndarray]:
    """Held-out cells of the forget cells' types (``same_type``) and of the others.

    ``max_cells`` caps each group by a seeded sample (``None``: all).  Without ``label_key`` in
    ``adata.obs`` every held-out cell is in ``other_types``.
    """
    heldout = np.setdiff1d(heldout, forget)
    if label_key in adata.obs:
        labels = adata.obs[label_key].astype(str)
        forget_types = set(labels.loc[forget])
        same = labels.loc[heldout].isin(forget_types).to_numpy()
    else:
        same = np.zeros(heldout.size, dtype=bool)
    rng = np.random.default_rng(seed)
    out = {}
    for name, mask in (("same_type", same), ("other_types", ~same)):
        cells = np.sort(heldout[mask])
        if max_cells is not None and cells.size > max_cells:
            cells = np.sort(rng.choice(cells, max_cells, replace=False))
        out[name] = cells
    return out


class ScoreCache:
    """Per-cell ELBO tables of (model, cell group), computed once and reused across candidates.

    Reference retrains are the cost of an equivalence test; their scores on the forget and
    held-out cells do not depend on the candidate.  Keyed by model identity, so keep the models
    alive while the cache is (a :class:`~scvi_unlearn.attack.RetrainTarget` holds both).
    """

    def __init__(self, adata: AnnData, n_draws: int, seed: int, batch_size: int = 256):
        self.adata = adata
        self.n_draws = n_draws
        self.seed = seed
        self.batch_size = batch_size
        self._tables: dict[tuple[int, str], pd.DataFrame] = {}

    def table(self, model, group: str, names: np.ndarray) -> pd.DataFrame:
        key = (id(model), group)
        if key not in self._tables or not np.array_equal(self._tables[key].index, names):
            if names.size == 0:
                return pd.DataFrame(columns=["reconstruction", "kl_z", "kl_l", "elbo"])
            with registered_copy(model, self.adata, names, group) as sub:
                self._tables[key] = per_cell_elbo(
                    model, sub, n_draws=self.n_draws, seed=self.seed, batch_size=self.batch_size
                )
        return self._tables[key]

    def scores(self, models: Sequence[Any], group: str, names: np.ndarray, statistic: str):
        column, sign = STATISTICS[statistic]
        return np.vstack(
            [sign * self.table(m, group, names)[column].to_numpy() for m in models]
        ).reshape(len(models), names.size)


def _group_stats(ref_scores: np.ndarray, cand: np.ndarray, nulls: list[np.ndarray]):
    """Candidate z and the null models' z of one group (LOO nulls first, then extra models)."""
    k = ref_scores.shape[0]
    if ref_scores.shape[1] == 0:
        return np.array([]), [np.array([]) for _ in range(k + len(nulls))], None
    ref = ReferenceModel.fit(ref_scores)
    null_z = loo_null_z(ref_scores) + [ref.z(s) for s in nulls]
    return ref.z(cand), null_z, ref


def equivalence_test(
    model,
    references: Sequence[Any],
    forget: AnnData | Sequence[str] | np.ndarray,
    *,
    adata: AnnData,
    heldout: Sequence[str] | np.ndarray | None = None,
    null_models: Sequence[Any] = (),
    label_key: str = "cell_type",
    statistic: str = "elbo",
    margin: float = DEFAULT_MARGIN,
    alpha: float = 0.05,
    elbo_tolerance: float = 0.02,
    same_type_margin: float = SAME_TYPE_MARGIN,
    min_type_cells: int = MIN_TYPE_CELLS,
    exact: bool | None = None,
    n_draws: int = 8,
    seed: int = 0,
    max_heldout: int | None = 500,
    batch_size: int = 256,
    cache: ScoreCache | None = None,
    warn_power: bool = True,
) -> EquivalenceReport:
    """Per-cell retrain-equivalence test of ``model`` against reference retrains.

    Parameters
    ----------
    model
        The candidate (e.g. an unlearned model).
    references
        ``K >= 3`` models that never trained on ``forget`` (retrains with different seeds).
        Recommended ``K = 5``, 8 for fewer than 20 forget cells (``docs/equivalence.md``:
        false-positive rate and power by K; :func:`~scvi_unlearn.attack.references_needed`).
    forget
        The forgotten cells (AnnData or ``obs_names`` of ``adata``).
    adata
        The dataset holding the forget and held-out cells (not modified).
    heldout
        ``obs_names`` of cells no model trained on; default the cells of ``adata`` with
        ``obs["membership"] == "heldout"``.  Split into the forget cells' types
        (``same_type``) and the others (``other_types``), each capped at ``max_heldout`` cells.
    null_models
        Extra retrains *not* among ``references``: each adds one null test (against all K
        references) to the leave-one-out null of the references.
    label_key
        Cell-type column of ``adata.obs`` for the held-out groups.
    statistic
        Per-cell score: ``"elbo"`` (default) or ``"reconstruction"`` (negative log-likelihood,
        sign flipped), averaged over ``n_draws`` posterior draws with ``seed``.  Latent means are
        not offered: independently trained models' latent spaces are not aligned (any rotation
        is as good), so they cannot be compared cell by cell.
    margin
        Equivalence margin on the signed mean z of the forget cells (default
        :data:`DEFAULT_MARGIN`): equivalent when its ``1 - 2 alpha`` interval lies inside
        ``[-margin, margin]``.
    alpha
        Level of the tests.
    elbo_tolerance
        Relative margin of the other types' held-out ELBO (as in the retrain target): pooled,
        the candidate fails below the retrains' mean minus ``elbo_tolerance`` of its magnitude;
        per type, below the type's 95% prediction interval by more than ``elbo_tolerance`` of
        the type's mean magnitude.
    same_type_margin
        Relative margin of the same-type held-out ELBO (default :data:`SAME_TYPE_MARGIN`,
        0.5%): the candidate fails only below the retrains' 95% prediction interval by more
        than this fraction of their mean ``|ELBO|``; above the interval is not a failure.
    min_type_cells
        Fewest held-out cells of an other type for its own per-type check (default
        :data:`MIN_TYPE_CELLS`); smaller types count in the pooled check only.
    exact
        Whether the candidate is exact by construction (never read a forget cell), so that
        :attr:`~scvi_unlearn.attack.EquivalenceReport.passed` is the utility checks only.
        ``None`` (default): from the candidate's ``unlearn_record_["method"]`` (exact when it
        is in :data:`scvi_unlearn.unlearn.FROM_SCRATCH`); a model without a record is not.
    n_draws, seed, batch_size
        Posterior draws per cell, their seed, cells per forward pass.
    max_heldout
        Cap on the held-out cells of each group (seeded sample), ``None`` for all.
    cache
        A :class:`ScoreCache` to reuse reference scores across candidates.
    warn_power
        Warn (:class:`~scvi_unlearn.attack.ReferencePowerWarning`) when the references'
        null spread is too wide for this margin to declare a retrain-like candidate
        equivalent with probability 0.8 (``report.protocol["power"]``,
        :func:`~scvi_unlearn.attack.references_needed`).

    Returns
    -------
    :class:`~scvi_unlearn.attack.EquivalenceReport`
    """
    references = list(references)
    null_models = list(null_models)
    if len(references) < 3:
        raise ValueError(
            f"The equivalence test needs at least 3 reference retrains, got {len(references)}."
        )
    every = [model, *references, *null_models]
    if len({id(m) for m in every}) != len(every):
        raise ValueError(
            "The candidate, the references and the null models must be distinct models."
        )
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(STATISTICS)}, got {statistic!r}.")
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}.")
    if same_type_margin < 0 or elbo_tolerance < 0:
        raise ValueError(
            f"same_type_margin and elbo_tolerance must be >= 0, got {same_type_margin} and "
            f"{elbo_tolerance}."
        )
    if min_type_cells < 2:
        raise ValueError(f"min_type_cells must be >= 2, got {min_type_cells}.")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}.")
    forget_names = as_obs_names(forget, "forget")
    missing = forget_names[~np.isin(forget_names, np.asarray(adata.obs_names, dtype=str))]
    if missing.size:
        raise KeyError(
            f"{missing.size} forget cells are not in the AnnData given, e.g. "
            f"{list(missing[:5])}: pass the dataset that holds them as adata=."
        )
    for i, m in enumerate([*references, *null_models]):
        check_never_trained_on(m, forget_names, "forget cells", f"reference / null model {i}")
    held = heldout_names(adata, heldout, forget_names)
    for m in every:
        check_never_trained_on(m, held, "held-out cells", "candidate / reference / null model")
    cells = {
        "forget": forget_names,
        **heldout_groups(adata, forget_names, held, label_key, max_heldout, seed),
    }
    if cache is None:
        cache = ScoreCache(adata, n_draws, seed, batch_size)
    if exact is None:
        exact = is_exact(model)

    k = len(references)
    null_names = [f"leave-out reference {j}" for j in range(k)]
    null_names += [f"null model {j}" for j in range(len(null_models))]
    z, null_z, refs, elbo = {}, {}, {}, {}
    for group, names in cells.items():
        ref_scores = cache.scores(references, group, names, statistic)
        cand = cache.scores([model], group, names, statistic)[0]
        extra = [cache.scores([m], group, names, statistic)[0] for m in null_models]
        z[group], null_z[group], refs[group] = _group_stats(ref_scores, cand, extra)
        elbo[group] = (
            cache.scores([model], group, names, "elbo")[0].mean() if names.size else np.nan,
            cache.scores(references, group, names, "elbo").mean(axis=1)
            if names.size
            else np.full(k, np.nan),
        )

    crit = refs["forget"].critical(alpha)
    cand_agg = {g: aggregates(z[g], crit) for g in GROUPS}
    null_agg = pd.DataFrame(
        [
            {"null_model": name, "group": g, **aggregates(null_z[g][j], crit)}
            for g in GROUPS
            for j, name in enumerate(null_names)
        ]
    )

    def _null(g: str, stat: str) -> np.ndarray:
        return null_agg.loc[null_agg["group"] == g, stat].to_numpy()

    # the K leave-one-out values sum to ~0: K - 1 degrees of freedom (extra null models: +1 each)
    main = null_test(cand_agg["forget"]["mean_z"], _null("forget", "mean_z"), n_constraints=1)
    decision, interval = decide(main, margin, alpha)
    spread = null_test(cand_agg["forget"]["mean_z2"], _null("forget", "mean_z2"), center=None)
    membership = null_test(
        cand_agg["forget"]["mean_z"] - cand_agg["same_type"]["mean_z"],
        _null("forget", "mean_z") - _null("same_type", "mean_z"),
        n_constraints=1,
    )
    shifts = {
        g: null_test(cand_agg[g]["mean_z"], _null(g, "mean_z"), n_constraints=1)
        for g in ("same_type", "other_types")
    }
    utility = utility_checks(
        elbo,
        per_type_elbo(
            [model, *references],
            cache,
            forget_names,
            held,
            cells["other_types"],
            label_key,
            max_heldout,
            seed,
        ),
        alpha=alpha,
        tolerance=elbo_tolerance,
        same_type_margin=same_type_margin,
        min_cells=min_type_cells,
    )
    power = power_summary(
        main.scale,
        k,
        forget_names.size,
        margin=margin,
        alpha=alpha,
        n_null_models=len(null_models),
    )
    message = power_message(power)
    if warn_power and message is not None:
        warnings.warn(message, ReferencePowerWarning, stacklevel=2)

    per_cell = pd.concat(
        [
            pd.DataFrame(
                {
                    "group": g,
                    "z": z[g],
                    "reference_mean": refs[g].mean if refs[g] is not None else [],
                    "reference_sd": np.sqrt(refs[g].variance) if refs[g] is not None else [],
                },
                index=pd.Index(cells[g], name="obs_name"),
            )
            for g in GROUPS
        ]
    )
    return EquivalenceReport(
        decision=decision,
        statistic=main.statistic,
        p_value=main.p_value,
        interval=interval,
        margin=float(margin),
        alpha=float(alpha),
        test=main,
        spread_test=spread,
        membership_test=membership,
        shift_tests=shifts,
        aggregates=pd.DataFrame(cand_agg).T.loc[list(GROUPS)],
        null_aggregates=null_agg,
        per_cell=per_cell,
        null_z={g: null_z[g] for g in GROUPS},
        critical=crit,
        cell_df=float(refs["forget"].df),
        utility=utility,
        exact=bool(exact),
        protocol={
            "statistic": statistic,
            "n_references": k,
            "n_null_models": len(null_models),
            "n_draws": n_draws,
            "seed": seed,
            "label_key": label_key,
            "max_heldout": max_heldout,
            "elbo_tolerance": elbo_tolerance,
            "same_type_margin": same_type_margin,
            "n_cells": {g: int(cells[g].size) for g in GROUPS},
            "power": power,
        },
    )
