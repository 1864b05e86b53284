"""How many reference retrains an equivalence test needs, and a warning when it has too few.

The equivalence decision (:func:`scvi_unlearn.attack._zscores.decide`) declares a candidate
``equivalent`` when the ``1 - 2 alpha`` interval of its forget cells' signed mean z,
``statistic +/- t_{1 - alpha, df} * s``, lies inside ``[-margin, margin]``.  ``s`` is the
spread of the null models' mean z (references left out in turn): how much retrains of the
same recipe disagree about these cells.  It is a property of the forget set and the recipe,
not of the number of references ``K`` (more references only shrink the t quantile, with
``df = K - 1``), so once the references are scored the test's power is known before any
candidate is seen.  Measured (``docs/equivalence.md``, "How many references"): on pbmc68k the
null tests of forget sets of >= 22 cells are declared equivalent in 100% of cases with
``K = 5``, the 10-cell NK subset in 87% with ``K = 5`` and 100% with ``K = 8``; on a mouse
dataset a whole k-means cluster of 11 cells gave intervals of about +/-2.2 with ``K = 5`` and
+/-2.0 with ``K = 8`` (``no power`` 3 of 3 times: ``s`` about 1.05, which no ``K`` brings under
the margin of 2 with a useful probability), while 40 random cells passed 3 of 3 with ``K = 8``.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from scvi_unlearn.attack._zscores import loo_null_z

#: default equivalence margin on the signed mean z of the forget cells: the smallest of 1, 1.5,
#: 2, 2.5 at which held-out retrains are declared equivalent in >= 87% of the K = 5 null tests
#: on every pbmc68k forget set measured, and in 100% on those of >= 22 cells
#: (``python -m benchmarks run power``, docs/equivalence.md).
DEFAULT_MARGIN = 2.0
#: forget sets of at least this many cells need :data:`REFERENCES_LARGE` references, smaller ones
#: :data:`REFERENCES_SMALL` (docs/equivalence.md: 100% of pbmc68k null tests equivalent at K = 5
#: on every forget set of >= 22 cells, 87% at K = 5 and 100% at K = 8 on 10 cells).
SMALL_FORGET_SET = 20
#: references for a forget set of at least :data:`SMALL_FORGET_SET` cells.
REFERENCES_LARGE = 5
#: references for a smaller forget set (and the least for any that the null spread allows).
REFERENCES_SMALL = 8
#: target probability that another retrain is declared ``equivalent`` (below it: a warning).
TARGET_POWER = 0.8


class ReferencePowerWarning(UserWarning):
    """The reference retrains disagree too much about the forget cells for the equivalence test
    to declare a retrain-like candidate ``equivalent`` (``no power``): more references, or more
    forget cells, are needed (:func:`references_needed`)."""


def null_scale(ref_scores: np.ndarray) -> float:
    """Spread ``s`` of the references' leave-one-out mean z (the scale of the decision's test).

    Parameters
    ----------
    ref_scores
        ``(K, n)`` per-cell scores of ``K >= 3`` references on the ``n`` forget cells (higher =
        better fit).

    Returns
    -------
    ``sqrt(sum(m_j^2) / (K - 1))`` over the ``K`` leave-one-out mean z ``m_j`` (they sum to
    about 0: ``K - 1`` degrees of freedom), as in
    :func:`scvi_unlearn.attack._zscores.null_test` with ``n_constraints=1``.
    """
    means = np.array([z.mean() for z in loo_null_z(ref_scores)])
    return float(np.sqrt(np.sum(means**2) / (means.size - 1)))


def equivalence_power(
    scale: float,
    n_references: int,
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = 0.05,
    n_null_models: int = 0,
) -> float:
    """Probability that a candidate exchangeable with the references is declared equivalent.

    With ``df = K - 1 + n_null_models`` and the null spread ``s = scale`` treated as known,
    the candidate's mean z is ``s * T`` with ``T ~ t(df)``, and the decision is ``equivalent``
    when ``|s T| + t_{1 - alpha, df} s <= margin``:
    ``P = 2 F_df(margin / s - t_{1 - alpha, df}) - 1`` (0 when the interval alone is wider
    than the margin).

    Parameters
    ----------
    scale
        Null spread :func:`null_scale` (``report.test.scale`` of an
        :class:`~scvi_unlearn.attack.EquivalenceReport`).
    n_references
        ``K``.
    margin, alpha
        As in :func:`~scvi_unlearn.attack.equivalence_test`.
    n_null_models
        Extra null models (one degree of freedom each).
    """
    df = int(n_references) - 1 + int(n_null_models)
    if df < 1 or not np.isfinite(scale):
        return 0.0
    if scale <= 0:
        return 1.0
    room = margin / scale - float(stats.t.ppf(1 - alpha, df))
    return float(max(0.0, 2 * stats.t.cdf(room, df) - 1)) if room > 0 else 0.0


def references_needed(
    n_forget: int,
    *,
    scale: float | None = None,
    margin: float = DEFAULT_MARGIN,
    alpha: float = 0.05,
    power: float = TARGET_POWER,
    max_references: int = 30,
) -> int | None:
    """How many reference retrains an equivalence test of ``n_forget`` cells needs.

    Two parts, and the larger wins:

    - **By size** (before any retrain exists), from the measured power study
      (``docs/equivalence.md``, "How many references"): :data:`REFERENCES_LARGE` (5) for a
      forget set of at least :data:`SMALL_FORGET_SET` (20) cells, :data:`REFERENCES_SMALL` (8)
      for a smaller one.  On pbmc68k the 10-cell set reached 87% equivalent null tests with 5
      references and 100% with 8; every set of >= 22 cells 100% with 5.  A small *whole
      cluster* may need more than any ``K``: measured on a mouse dataset, an 11-cell k-means
      cluster was ``no power`` with 5 and with 8 references (intervals +/-2.2, +/-2.0).
    - **By the null spread** (``scale``, once the references are scored: :func:`null_scale`
      or ``report.test.scale``): the smallest ``K`` at which another retrain is declared
      equivalent with probability ``power`` (:func:`equivalence_power`), assuming the spread
      stays what it is (it does not shrink with ``K``; only the t quantile does).

    Parameters
    ----------
    n_forget
        Number of forget cells.
    scale
        Null spread of the forget cells' mean z, or ``None`` for the rule by size only.
    margin, alpha
        Equivalence margin and level of the test.
    power
        Target probability that a retrain-like candidate is declared ``equivalent``.
    max_references
        Largest ``K`` considered.

    Returns
    -------
    The number of references, or ``None`` when no ``K <= max_references`` reaches ``power``
    (the retrains disagree too much about these cells for this margin: forget more cells,
    widen the margin, or judge the forget set by utility only).

    Examples
    --------
    >>> import scvi_unlearn as su
    >>> su.attack.references_needed(40), su.attack.references_needed(11)
    (5, 8)
    >>> su.attack.references_needed(11, scale=1.05) is None  # the mouse 11-cell cluster
    True
    """
    if n_forget < 1:
        raise ValueError(f"n_forget must be >= 1, got {n_forget}.")
    if margin <= 0 or not 0 < alpha < 0.5 or not 0 < power < 1:
        raise ValueError(
            f"Need margin > 0, 0 < alpha < 0.5 and 0 < power < 1; got margin={margin}, "
            f"alpha={alpha}, power={power}."
        )
    by_size = REFERENCES_LARGE if n_forget >= SMALL_FORGET_SET else REFERENCES_SMALL
    if scale is None:
        return by_size
    for k in range(3, max_references + 1):
        if equivalence_power(scale, k, margin=margin, alpha=alpha) >= power:
            return max(k, by_size)
    return None


def power_summary(
    scale: float,
    n_references: int,
    n_forget: int,
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = 0.05,
    n_null_models: int = 0,
) -> dict[str, float | int | None]:
    """Null spread, interval half-width, power and references needed, as one record."""
    df = n_references - 1 + n_null_models
    half = float(stats.t.ppf(1 - alpha, df)) * scale if df >= 1 else np.nan
    return {
        "null_scale": float(scale),
        "half_width": float(half),
        "power": equivalence_power(
            scale, n_references, margin=margin, alpha=alpha, n_null_models=n_null_models
        ),
        "n_references": int(n_references),
        "references_needed": references_needed(n_forget, scale=scale, margin=margin, alpha=alpha),
        "margin": float(margin),
    }


def power_message(summary: dict) -> str | None:
    """The warning text when ``summary`` (:func:`power_summary`) is below the target power."""
    if summary["power"] >= TARGET_POWER:
        return None
    k, needed = summary["n_references"], summary["references_needed"]
    head = (
        f"With {k} references the equivalence test's interval on the forget cells' mean z is "
        f"about +/-{summary['half_width']:.2f} (null spread {summary['null_scale']:.2f}) "
        f"against a margin of +/-{summary['margin']:g}: another retrain would be declared "
        f"equivalent with probability {summary['power']:.0%} (target {TARGET_POWER:.0%}; "
        "otherwise it reads 'no power'). "
    )
    if k < REFERENCES_LARGE:
        head += f"The spread itself is estimated from only {k} references. "
    if needed is None:
        return head + (
            "At this spread no number of references reaches the target: the retrains disagree "
            "too much about these cells (a small whole cluster?). Forget more cells, widen the "
            "margin, or judge by utility (docs/equivalence.md, 'How many references')."
        )
    return head + (
        f"About {needed} references are needed (scvi_unlearn.attack.references_needed; "
        "docs/equivalence.md, 'How many references')."
    )


def forget_power(models, names: np.ndarray, cache, margin: float = DEFAULT_MARGIN) -> dict:
    """Score the forget cells ``names`` under the reference ``models`` (through ``cache``, a
    :class:`~scvi_unlearn.attack.ScoreCache`), return their :func:`power_summary` and warn
    (:class:`ReferencePowerWarning`) when it is below :data:`TARGET_POWER`."""
    scores = cache.scores(models, "forget", names, "elbo")
    summary = power_summary(null_scale(scores), len(models), names.size, margin=margin)
    message = power_message(summary)
    if message is not None:
        warnings.warn(message, ReferencePowerWarning, stacklevel=3)
    return summary
