"""Utility checks of the equivalence verdict: held-out ELBO per cell type against the retrains.

An unlearned model must keep fitting cells it never saw the way retrains of the original's
recipe fit them.  Three checks, each failing only when the candidate is *below* the retrains by
more than a stated practical margin (issue #29, decision 3; DESIGN section 7): fitting unseen
cells better than the retrains is not a utility loss.

- **Same type** (held-out cells of the forget cells' types, pooled): below the retrains' 95%
  prediction interval by more than ``same_type_margin`` (default :data:`SAME_TYPE_MARGIN`,
  0.5%) of the retrains' mean ``|ELBO|``.
- **Other types** (held-out cells of every other type, pooled): below the retrains' mean minus
  ``tolerance`` (default 2%) of its magnitude.
- **Per type**: every other type with at least ``min_cells`` (default :data:`MIN_TYPE_CELLS`)
  held-out cells, below the retrains' 95% prediction interval *of that type* by more than
  ``tolerance`` of the type's mean ``|ELBO|``: a rare type that lags is not hidden by the
  pooled mean of the abundant ones.

Pure NumPy / pandas: the ELBOs come from :mod:`scvi_unlearn.attack._equivalence`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

#: practical margin of the same-type check: the candidate's held-out ELBO of the forget cells'
#: types may lie below the retrains' 95% interval by at most this fraction of their mean
#: absolute ELBO (issue #29, decision 3: a 34-cell whole cluster measured 0.9% below the
#: interval with an exact, bit-identical-under-twin-data default).
SAME_TYPE_MARGIN = 0.005
#: fewest held-out cells of a type for its own per-type check (fewer: not judged, only pooled).
MIN_TYPE_CELLS = 10


def prediction_interval(ref_means: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """``1 - alpha`` Student-t prediction interval of one more retrain's mean ELBO.

    ``mean +/- t_{1 - alpha/2, K-1} * sd * sqrt(1 + 1/K)`` over the ``K`` references' values.
    """
    ref_means = np.asarray(ref_means, dtype=np.float64)
    k = ref_means.size
    half = stats.t.ppf(1 - alpha / 2, k - 1) * ref_means.std(ddof=1) * np.sqrt(1 + 1 / k)
    return float(ref_means.mean() - half), float(ref_means.mean() + half)


def _interval_check(cand: float, refs: np.ndarray, alpha: float, margin: float) -> dict:
    """Candidate mean ELBO against the retrains' interval; fails only below it by > margin."""
    lo, hi = prediction_interval(refs, alpha)
    floor = lo - margin * abs(float(np.mean(refs)))
    return {
        "elbo": float(cand),
        "interval": (lo, hi),
        "floor": float(floor),
        "ok": bool(cand >= floor),
        "above": bool(cand > hi),
    }


def utility_checks(
    elbo: dict[str, tuple[float, np.ndarray]],
    per_type: dict[str, tuple[int, float, np.ndarray]],
    *,
    alpha: float,
    tolerance: float,
    same_type_margin: float,
    min_cells: int,
) -> dict[str, Any]:
    """The three held-out ELBO checks of one candidate.

    Parameters
    ----------
    elbo
        ``{"same_type", "other_types"}``: (candidate mean ELBO, ``(K,)`` references' means);
        a NaN candidate (no cells) skips the check.
    per_type
        ``{type: (n cells, candidate mean ELBO, (K,) references' means)}`` of the other types.
    alpha
        Level of the prediction intervals (``1 - alpha`` coverage).
    tolerance
        Relative margin of the other-types checks (pooled floor and per type).
    same_type_margin
        Relative margin of the same-type check below its interval.
    min_cells
        Fewest held-out cells of a type for its per-type check.

    Returns
    -------
    ``same_type_*`` (``elbo``, ``interval``, ``floor``, ``ok``, ``above``, ``margin``),
    ``other_types_*`` (``elbo``, ``floor``, ``reference``, ``ok``, ``tolerance``), ``per_type``
    (a DataFrame: ``type``, ``n_cells``, ``elbo``, ``reference``, ``low``, ``high``, ``floor``,
    ``judged``, ``ok``; ``ok`` is NA for a type with fewer than ``min_cells`` cells),
    ``per_type_ok`` (``None`` when no type was judged) and ``min_type_cells``.
    """
    out: dict[str, Any] = {"same_type_margin": float(same_type_margin)}
    cand, refs = elbo["same_type"]
    if np.isfinite(cand):
        check = _interval_check(cand, refs, alpha, same_type_margin)
        out.update({f"same_type_{k}": v for k, v in check.items()})
    else:
        out.update(
            same_type_elbo=np.nan,
            same_type_interval=(np.nan, np.nan),
            same_type_floor=np.nan,
            same_type_ok=None,
            same_type_above=None,
        )
    cand, refs = elbo["other_types"]
    out["other_types_tolerance"] = float(tolerance)
    if np.isfinite(cand):
        floor = refs.mean() - tolerance * abs(refs.mean())
        out["other_types_elbo"] = float(cand)
        out["other_types_floor"] = float(floor)
        out["other_types_reference"] = float(refs.mean())
        out["other_types_ok"] = bool(cand >= floor)
    else:
        out.update(
            other_types_elbo=np.nan,
            other_types_floor=np.nan,
            other_types_reference=np.nan,
            other_types_ok=None,
        )
    rows = []
    for cell_type, (n, cand, refs) in per_type.items():
        judged = n >= min_cells
        check = _interval_check(cand, refs, alpha, tolerance)
        rows.append(
            {
                "type": cell_type,
                "n_cells": int(n),
                "elbo": check["elbo"],
                "reference": float(np.mean(refs)),
                "low": check["interval"][0],
                "high": check["interval"][1],
                "floor": check["floor"],
                "judged": judged,
                "ok": check["ok"] if judged else pd.NA,
            }
        )
    columns = ["type", "n_cells", "elbo", "reference", "low", "high", "floor", "judged", "ok"]
    table = pd.DataFrame(rows, columns=columns)
    table["judged"] = table["judged"].astype(bool)
    table["ok"] = table["ok"].astype("boolean")
    out["per_type"] = table
    judged = table.loc[table["judged"], "ok"]
    out["per_type_ok"] = bool(judged.all()) if len(judged) else None
    out["min_type_cells"] = int(min_cells)
    return out


def per_type_cells(
    adata,
    heldout: np.ndarray,
    exclude_types: set[str],
    label_key: str,
    max_cells: int | None,
    seed: int,
) -> dict[str, np.ndarray]:
    """Held-out cells of each type not in ``exclude_types`` (each capped by a seeded sample).

    Empty without ``label_key`` in ``adata.obs``.
    """
    if label_key not in adata.obs:
        return {}
    labels = adata.obs[label_key].astype(str).loc[heldout]
    rng = np.random.default_rng(seed)
    out = {}
    for cell_type in sorted(set(labels) - set(exclude_types)):
        cells = np.sort(np.asarray(labels.index[labels.to_numpy() == cell_type], dtype=str))
        if max_cells is not None and cells.size > max_cells:
            cells = np.sort(rng.choice(cells, max_cells, replace=False))
        out[cell_type] = cells
    return out


def per_type_elbo(
    models: list,
    cache,
    forget: np.ndarray,
    heldout: np.ndarray,
    other_types: np.ndarray,
    label_key: str,
    max_cells: int | None,
    seed: int,
) -> dict[str, tuple[int, float, np.ndarray]]:
    """``{type: (n cells, candidate mean ELBO, (K,) references' means)}`` of the other types.

    ``models`` is the candidate followed by the references, scored through ``cache`` (a
    :class:`~scvi_unlearn.attack.ScoreCache`); ``other_types`` are the pooled group's cells,
    whose scores are reused when the per-type cells are the same cells (no cap binding).
    """
    adata = cache.adata
    labels = adata.obs[label_key].astype(str) if label_key in adata.obs else None
    forget_types = set(labels.loc[forget]) if labels is not None else set()
    groups = per_type_cells(
        adata, np.setdiff1d(heldout, forget), forget_types, label_key, max_cells, seed
    )
    if not groups:
        return {}
    names = np.sort(np.concatenate(list(groups.values())))
    group = "other_types" if np.array_equal(names, other_types) else "per_type"
    scores = pd.DataFrame(cache.scores(models, group, names, "elbo").T, index=names)
    return {
        t: (c.size, float(scores.loc[c, 0].mean()), scores.loc[c].iloc[:, 1:].mean().to_numpy())
        for t, c in groups.items()
    }


def utility_lines(utility: dict[str, Any]) -> list[str]:
    """The verdict's utility clauses, each with its margin; failing types by name."""
    u = utility
    parts = []
    if u.get("same_type_ok") is not None:
        lo, hi = u["same_type_interval"]
        e = u["same_type_elbo"]
        where = "above" if e > hi else ("inside" if e >= lo else "below")
        if where == "below" and u["same_type_ok"]:
            where = "below, within the margin of"
        parts.append(
            f"same-type held-out ELBO {e:.1f} {where} the retrains' 95% interval "
            f"[{lo:.1f}, {hi:.1f}] (fails below {u['same_type_floor']:.1f}: margin "
            f"{u['same_type_margin']:.1%} of |mean|)"
        )
    if u.get("other_types_ok") is not None:
        parts.append(
            f"other-type held-out ELBO {u['other_types_elbo']:.1f} "
            f"{'>=' if u['other_types_ok'] else '<'} floor {u['other_types_floor']:.1f} "
            f"(retrains' mean - {u['other_types_tolerance']:.0%})"
        )
    table = u.get("per_type")
    if table is not None and len(table) and table["judged"].any():
        judged = table[table["judged"]]
        bad = judged[~judged["ok"].astype(bool)]
        head = (
            f"per type ({len(judged)} other types with >= {u['min_type_cells']} held-out cells, "
            f"margin {u['other_types_tolerance']:.0%} below each type's 95% interval)"
        )
        if bad.empty:
            parts.append(f"{head}: all ok")
        else:
            worst = "; ".join(
                f"{r.type} {r.elbo:.1f} < floor {r.floor:.1f}" for r in bad.itertuples()
            )
            parts.append(f"{head}: FAILING {worst}")
    return parts
