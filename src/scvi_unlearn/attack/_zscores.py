"""Per-cell z-scores against reference models, their aggregates, and the equivalence decision.

Pure NumPy / SciPy: nothing here knows about models or AnnData (see
:mod:`scvi_unlearn.attack._equivalence` for that).  Notation: ``K`` reference models (retrains
that never saw the cells), ``n`` cells, ``S`` a ``(K, n)`` matrix of per-cell scores under the
references (oriented so that higher = better fit), ``s`` the ``(n,)`` scores under a candidate.

Per cell, the candidate is compared with the references' mean and spread.  ``K`` is small
(3-8), so the per-cell variance is moderated by empirical Bayes (Smyth 2004, the ``limma``
moderated t): every cell's ``K - 1``-df sample variance is shrunk toward a prior fitted on all
cells, which adds ``d0`` prior degrees of freedom.  The z-score of a *new* model is a
prediction-interval statistic,

    z = (s - mean(S)) / sqrt(s2_moderated * (1 + 1/K)),

distributed as Student-t with ``d0 + K - 1`` df for a model exchangeable with the references
(another retrain).  Cells are *not* independent (a retrain that is globally a little better fits
every cell a little better), so the aggregates' null distribution is taken from models, never
from a cell-level formula: :func:`null_test` compares a candidate's aggregate with the same
aggregate of null models (references left out in turn, and extra retrains).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

#: the outcomes of the equivalence decision.
DECISIONS = ("equivalent", "remembers", "over-forgets", "no power")


def _trigamma_inverse(x: float) -> float:
    """Solve ``trigamma(y) = x`` for ``y > 0`` by Newton's method (Smyth 2004, appendix)."""
    if x > 1e7:
        return 1.0 / np.sqrt(x)
    if x < 1e-6:
        return 1.0 / x
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = special.polygamma(1, y)
        step = tri * (1.0 - tri / x) / special.polygamma(2, y)
        y = y + step
        if -step / y < 1e-8:
            break
    return float(y)


def moderated_variance(s2: np.ndarray, df: int) -> tuple[np.ndarray, float]:
    """Empirical-Bayes moderated variances of ``s2`` (each with ``df`` degrees of freedom).

    Fits a scaled inverse-chi-square prior ``(d0, s0^2)`` to all cells' sample variances by
    moments of ``log s2`` (Smyth 2004, "Linear models and empirical Bayes methods for assessing
    differential expression", SAGMB 3:3) and returns ``(d0 s0^2 + df s2) / (d0 + df)`` and
    ``d0`` (``inf`` when the variances are no more dispersed than sampling alone explains: every
    cell then gets the pooled mean variance).
    """
    s2 = np.asarray(s2, dtype=np.float64)
    if df < 1:
        raise ValueError(f"Moderated variances need >= 2 references (df >= 1), got df={df}.")
    tiny = np.finfo(np.float64).tiny
    z = np.log(np.maximum(s2, tiny))
    e = z - special.digamma(df / 2) + np.log(df / 2)
    emean = float(e.mean())
    evar = float(e.var(ddof=1)) - float(special.polygamma(1, df / 2)) if e.size > 1 else 0.0
    if evar > 0:
        d0 = 2.0 * _trigamma_inverse(evar)
        s02 = float(np.exp(emean + special.digamma(d0 / 2) - np.log(d0 / 2)))
        return (d0 * s02 + df * s2) / (d0 + df), d0
    # no spread beyond sampling: one common variance, estimated by the pooled mean
    return np.full_like(s2, float(s2.mean())), np.inf


@dataclass
class ReferenceModel:
    """The references' per-cell mean, moderated variance and degrees of freedom."""

    mean: np.ndarray
    variance: np.ndarray
    n_references: int
    prior_df: float

    @property
    def df(self) -> float:
        """Degrees of freedom of a cell's z (``d0 + K - 1``)."""
        return self.prior_df + self.n_references - 1

    @classmethod
    def fit(cls, scores: np.ndarray) -> ReferenceModel:
        """Fit from a ``(K, n)`` matrix of reference scores (``K >= 2``)."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[0] < 2:
            raise ValueError(
                f"Need a (K, n) score matrix with K >= 2 references, got shape {scores.shape}."
            )
        if not np.isfinite(scores).all():
            raise ValueError("Reference scores contain NaN or infinite values.")
        k = scores.shape[0]
        var, d0 = moderated_variance(scores.var(axis=0, ddof=1), k - 1)
        return cls(scores.mean(axis=0), var, k, d0)

    def z(self, scores: np.ndarray) -> np.ndarray:
        """Prediction z-score of each cell of a new model's ``scores`` (``(n,)``)."""
        scale = np.sqrt(self.variance * (1.0 + 1.0 / self.n_references))
        return (np.asarray(scores, dtype=np.float64) - self.mean) / scale

    def critical(self, alpha: float = 0.05) -> float:
        """Two-sided per-cell critical value of ``|z|`` (Student-t with :attr:`df`)."""
        if np.isinf(self.df):
            return float(stats.norm.ppf(1 - alpha / 2))
        return float(stats.t.ppf(1 - alpha / 2, self.df))


def aggregates(z: np.ndarray, critical: float) -> dict[str, float]:
    """Signed mean z, mean z^2, fraction with ``|z| > critical``, 90th percentile of ``|z|``."""
    z = np.asarray(z, dtype=np.float64)
    if z.size == 0:
        return {"mean_z": np.nan, "mean_z2": np.nan, "frac_beyond": np.nan, "q90_abs_z": np.nan}
    return {
        "mean_z": float(z.mean()),
        "mean_z2": float(np.mean(z**2)),
        "frac_beyond": float(np.mean(np.abs(z) > critical)),
        "q90_abs_z": float(np.quantile(np.abs(z), 0.9)),
    }


def loo_null_z(scores: np.ndarray) -> list[np.ndarray]:
    """Per-cell z of each reference against the *other* references (leave-one-out)."""
    scores = np.asarray(scores, dtype=np.float64)
    k = scores.shape[0]
    if k < 3:
        raise ValueError(
            f"The leave-one-out null needs at least 3 references, got {k}: every reference is "
            "tested against the others, which need at least 2 to have a spread."
        )
    out = []
    for j in range(k):
        ref = ReferenceModel.fit(np.delete(scores, j, axis=0))
        out.append(ref.z(scores[j]))
    return out


@dataclass
class NullTest:
    """A candidate's aggregate against the same aggregate of null models."""

    statistic: float
    null: np.ndarray
    scale: float
    t: float
    p_value: float
    df: int
    center: float = 0.0


def null_test(
    statistic: float,
    null: np.ndarray,
    center: float | None = 0.0,
    n_constraints: int = 0,
) -> NullTest:
    """Two-sided test of ``statistic`` against ``null`` values of null models.

    The null models are exchangeable with the candidate under the hypothesis "the candidate is
    another retrain".  With a known ``center`` of the null values (0 for a signed mean z) and
    ``m`` null values, ``(statistic - center) / rms(null - center)`` is Student-t with ``m``
    degrees of freedom (a prediction interval with a known centre).  ``center=None`` estimates
    it by the null mean: ``(statistic - mean) / (sd * sqrt(1 + 1/m))``, ``m - 1`` df.
    ``n_constraints`` removes degrees of freedom for linear constraints among the null values:
    leave-one-out values of ``K`` references sum to (almost exactly) zero, so they carry
    ``K - 1`` degrees of freedom, not ``K``.
    """
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    m = int(null.size)
    df = m - n_constraints - (1 if center is None else 0)
    if df < 1 or not np.isfinite(statistic):
        return NullTest(float(statistic), null, np.nan, np.nan, np.nan, max(df, 0))
    if center is None:
        center = float(null.mean())
        scale = float(null.std(ddof=1) * np.sqrt(1 + 1 / m))
    else:
        scale = float(np.sqrt(np.sum((null - center) ** 2) / (m - n_constraints)))
    t = (statistic - center) / scale if scale > 0 else np.inf * np.sign(statistic - center)
    p = float(2 * stats.t.sf(abs(t), df)) if np.isfinite(t) else 0.0
    return NullTest(float(statistic), null, scale, float(t), p, df, float(center))


def decide(test: NullTest, margin: float, alpha: float = 0.05) -> tuple[str, tuple[float, float]]:
    """Equivalence-test decision on a signed mean z, and its ``1 - 2 alpha`` interval.

    Two one-sided tests (Schuirmann 1987): the candidate is ``equivalent`` when the whole
    ``1 - 2 alpha`` interval ``statistic +/- t_{m, 1-alpha} * scale`` lies inside
    ``[-margin, margin]``.  Otherwise it ``remembers`` (``over-forgets``) when the two-sided
    test rejects "another retrain" with a positive (negative) statistic; when neither holds,
    the null is too wide for this margin: ``no power``.
    """
    if not np.isfinite(test.scale) or test.df < 1:
        return "no power", (np.nan, np.nan)
    half = float(stats.t.ppf(1 - alpha, test.df)) * test.scale
    interval = (test.statistic - half, test.statistic + half)
    if -margin <= interval[0] and interval[1] <= margin:
        return "equivalent", interval
    if test.p_value < alpha:
        return ("remembers" if test.statistic > 0 else "over-forgets"), interval
    return "no power", interval
