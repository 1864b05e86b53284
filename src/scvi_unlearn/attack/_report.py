""":class:`AttackReport`: the result of one membership-inference audit of one model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from scvi_unlearn.attack._metrics import (
    DEFAULT_FPRS,
    attack_metrics,
    bootstrap_metrics,
    ci_from_replicates,
    roc_curve,
    tpr_key,
)

#: one-line description of each attack protocol (shown in reports and tables).
PROTOCOLS = {
    "mlp": "fresh spectral-norm MLP per model, label-blind grouped k-fold, out-of-fold scores",
    "shadow": "MLP fitted on other training vs other held-out cells, applied once",
    "threshold": "threshold on a single per-cell score with a fixed orientation",
    "calibrated": "per-cell score minus its mean under reference models that never saw it",
    "drift": "COMPARISON ONLY: attacker fitted on the baseline model, applied unchanged",
}


@dataclass
class TargetCheck:
    """Outcome of a target's ``check``: ``passed`` and a one-line ``reason``."""

    passed: bool
    advantage_ok: bool
    utility_ok: bool | None
    reason: str


class Judge(Protocol):
    """What an audit needs of a target (:class:`~scvi_unlearn.attack.RetrainTarget` is one).

    Defined here, below the target, so that the report and the audit never import it: the
    attack package's modules import one way (evaluation data, features, attackers, report,
    audit, equivalence, target).
    """

    models: list

    def check(self, report: AttackReport) -> TargetCheck: ...

    def check_protocol(self, report: AttackReport) -> None: ...

    def attach(self, model, report: AttackReport, adata) -> None: ...


@dataclass
class AttackReport:
    """Result of :meth:`~scvi_unlearn.model.MembershipAttackMixin.membership_attack`.

    Attributes
    ----------
    attack
        ``"mlp"``, ``"threshold"``, ``"calibrated"`` or ``"drift"``.
    protocol
        Everything needed to rerun the audit (attack options, seeds, ``n_draws``, cells).
    scores
        Per-cell attack scores (``Series`` indexed by ``obs_names``; higher = member-like).
    labels
        1 for members, 0 for non-members (same index as ``scores``).
    metrics
        ``auc``, ``advantage`` (``2|AUC - 0.5|``), ``yeom_advantage`` (``max|TPR - FPR|``)
        and ``tpr@{x}%fpr``.
    ci
        Stratified bootstrap interval of every metric, ``{metric: (low, high)}``.
    level
        Confidence level of ``ci``.
    features
        The per-cell feature table the attack used (``None`` if not kept).
    fold
        Fold in which each cell was scored (cross-fitted attacks), else ``None``.
    target
        A :class:`~scvi_unlearn.attack.RetrainTarget` to judge the model against, if given.
    heldout_elbo
        Mean held-out ELBO of the evaluated model (computed when a target is given).
    bootstrap
        The stratified bootstrap replicates of every metric behind ``ci``.
    """

    attack: str
    protocol: dict[str, Any]
    scores: pd.Series
    labels: pd.Series
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    level: float = 0.95
    features: pd.DataFrame | None = field(default=None, repr=False)
    fold: pd.Series | None = field(default=None, repr=False)
    target: Judge | None = field(default=None, repr=False)
    heldout_elbo: float | None = None
    bootstrap: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def from_scores(
        cls,
        labels,
        scores,
        attack: str,
        protocol: dict[str, Any] | None = None,
        index=None,
        n_bootstrap: int = 1000,
        level: float = 0.95,
        seed: int = 0,
        fprs=DEFAULT_FPRS,
        **fields,
    ) -> AttackReport:
        """A report from per-cell ``labels`` (1 = member) and ``scores`` (higher = member).

        Computes the metrics and their stratified bootstrap intervals (``n_bootstrap``
        replicates, ``seed``); usable for attacks implemented outside this package.
        """
        labels = np.asarray(labels).astype(int)
        scores = np.asarray(scores, dtype=np.float64)
        point = attack_metrics(labels, scores, fprs)
        reps = bootstrap_metrics(labels, scores, n_bootstrap=n_bootstrap, seed=seed, fprs=fprs)
        protocol = dict(protocol or {})
        protocol.setdefault("attack", attack)
        protocol.setdefault("seed", seed)
        protocol.setdefault("n_bootstrap", n_bootstrap)
        protocol["fprs"] = tuple(fprs)
        index = pd.Index(np.arange(labels.size) if index is None else index)
        return cls(
            attack=attack,
            protocol=protocol,
            scores=pd.Series(scores, index=index, name="score"),
            labels=pd.Series(labels, index=index, name="label"),
            metrics=point,
            ci=ci_from_replicates(point, reps, level),
            level=level,
            bootstrap=reps,
            **fields,
        )

    # -- numbers ---------------------------------------------------------------------------
    @property
    def auc(self) -> float:
        """Area under the ROC curve."""
        return self.metrics["auc"]

    @property
    def advantage(self) -> float:
        """``2 |AUC - 0.5|``."""
        return self.metrics["advantage"]

    @property
    def yeom_advantage(self) -> float:
        """Yeom et al.'s membership advantage, ``max |TPR - FPR|``."""
        return self.metrics["yeom_advantage"]

    @property
    def tpr_at_fpr(self) -> dict[float, float]:
        """``{fpr: tpr}`` at the reported false-positive rates."""
        return {f: self.metrics[tpr_key(f)] for f in self.protocol["fprs"]}

    @property
    def n_members(self) -> int:
        return int(self.labels.sum())

    @property
    def n_nonmembers(self) -> int:
        return int((self.labels == 0).sum())

    @property
    def detectable(self) -> bool:
        """The AUC interval lies entirely above 0.5: the members are detected."""
        return self.ci["auc"][0] > 0.5

    @property
    def leak_below_chance(self) -> bool:
        """The AUC interval lies entirely below 0.5: the members stand out in reverse.

        The "Streisand effect": a method that pushes the forgotten cells *away* from where a
        retrained model puts them makes them detectable again, only reversed.  For cross-fitted
        attackers a mildly low AUC is the usual small-sample anti-learning, hence the interval
        rather than the point estimate.
        """
        return self.ci["auc"][1] < 0.5

    # -- judging ---------------------------------------------------------------------------
    def verdict(self, target: Judge | None = None) -> str:
        """A one-line verdict: against ``target`` (or the report's own) if any, else vs chance."""
        target = target if target is not None else self.target
        lo, hi = self.ci["auc"]
        head = (
            f"{self.attack} attack: AUC {self.auc:.3f} [{lo:.3f}, {hi:.3f}], "
            f"advantage {self.advantage:.3f}"
        )
        if target is not None:
            check = target.check(self)
            return f"{'PASS' if check.passed else 'FAIL'}: {head}; {check.reason}"
        if self.leak_below_chance:
            return f"LEAK (below chance, Streisand effect): {head}; AUC interval below 0.5"
        if self.detectable:
            return f"DETECTED: {head}; AUC interval above 0.5"
        return f"NOT DETECTED: {head}; AUC interval covers 0.5"

    # -- tables and figures ----------------------------------------------------------------
    def to_frame(self, per_cell: bool = False) -> pd.DataFrame:
        """One tidy row of metrics with interval columns, or the per-cell scores.

        Parameters
        ----------
        per_cell
            ``True``: a table indexed by ``obs_names`` with ``label``, ``score`` (and ``fold``).
        """
        if per_cell:
            out = pd.DataFrame({"label": self.labels, "score": self.scores})
            if self.fold is not None:
                out["fold"] = self.fold
            return out
        row: dict[str, Any] = {"attack": self.attack}
        for key, value in self.metrics.items():
            row[key] = value
            row[f"{key}_low"], row[f"{key}_high"] = self.ci[key]
        row.update(
            n_members=self.n_members,
            n_nonmembers=self.n_nonmembers,
            level=self.level,
            leak_below_chance=self.leak_below_chance,
            seed=self.protocol.get("seed"),
            n_draws=self.protocol.get("n_draws"),
        )
        if self.heldout_elbo is not None:
            row["heldout_elbo"] = self.heldout_elbo
        target = self.target
        if target is not None:
            check = target.check(self)
            row.update(
                target_low=target.interval[0],
                target_high=target.interval[1],
                passed=check.passed,
            )
        return pd.DataFrame([row])

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """``(fpr, tpr)`` of the attack's ROC curve."""
        return roc_curve(self.labels.to_numpy(), self.scores.to_numpy())

    def plot_roc(self, ax=None, label: str | None = None, chance: bool = True, **kwargs):
        """Draw the ROC curve (log-free axes, chance diagonal); returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 4))
        fpr, tpr = self.roc()
        lo, hi = self.ci["auc"]
        if label is None:
            label = f"{self.attack} AUC {self.auc:.2f} [{lo:.2f}, {hi:.2f}]"
        ax.plot(fpr, tpr, label=label, **kwargs)  # straight segments: ties are diagonal
        if chance:
            ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false-positive rate (non-members)")
        ax.set_ylabel("true-positive rate (members)")
        ax.set_title(f"Membership attack ({self.n_members} vs {self.n_nonmembers} cells)")
        ax.legend(loc="lower right", fontsize="small")
        return ax

    def __repr__(self) -> str:
        pct = int(round(self.level * 100))
        lines = [
            f"AttackReport({self.attack}: {self.n_members} members vs "
            f"{self.n_nonmembers} non-members, seed={self.protocol.get('seed')}, "
            f"n_draws={self.protocol.get('n_draws')})",
            f"  protocol        {PROTOCOLS.get(self.attack, self.attack)}",
        ]
        for key, value in self.metrics.items():
            lo, hi = self.ci[key]
            lines.append(f"  {key:<15} {value:.3f}  {pct}% CI [{lo:.3f}, {hi:.3f}]")
        if self.heldout_elbo is not None:
            lines.append(f"  heldout_elbo    {self.heldout_elbo:.2f}")
        try:
            verdict = self.verdict()
        except ValueError as err:  # e.g. a target built with another protocol
            verdict = f"unavailable ({err})"
        lines.append(f"  verdict         {verdict}")
        return "\n".join(lines)
