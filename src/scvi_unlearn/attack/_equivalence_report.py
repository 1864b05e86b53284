""":class:`EquivalenceReport`: the per-cell retrain-equivalence verdict of one model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scvi_unlearn.attack._zscores import NullTest


@dataclass
class EquivalenceReport:
    """Result of :func:`scvi_unlearn.attack.equivalence_test` (or
    :meth:`RetrainTarget.equivalence <scvi_unlearn.attack.RetrainTarget.equivalence>`).

    Attributes
    ----------
    decision
        ``"equivalent"`` (the ``1 - 2 alpha`` interval of the forget cells' signed mean z lies
        inside ``[-margin, margin]``), ``"remembers"`` (significantly above the null: the forget
        cells are fit better than retrains fit them), ``"over-forgets"`` (significantly below:
        fit worse, the Streisand effect) or ``"no power"`` (neither: the null is too wide for
        this margin; use more references or more forget cells).
    statistic
        Signed mean z of the forget cells (+ remembers, - over-forgets).
    p_value
        Two-sided p-value of ``statistic`` against the null models' values.
    interval
        ``1 - 2 alpha`` interval of ``statistic`` used by the equivalence decision.
    margin, alpha
        Equivalence margin (mean-z units) and level.
    test, spread_test, membership_test
        :class:`~scvi_unlearn.attack._zscores.NullTest` of the signed mean z, of the mean z^2
        (a spread that the mean can hide: some cells remembered, others over-forgotten), and of
        the membership contrast ``mean z (forget) - mean z (same-type held-out)``: a shift the
        forget cells share with unseen cells of their type is not membership.
    shift_tests
        ``{"same_type", "other_types"}``: the same mean-z test on held-out cells, separating a
        globally better / worse model from one that treats the forget cells specially.
    aggregates
        Per group (rows ``forget``, ``same_type``, ``other_types``): ``mean_z``, ``mean_z2``,
        ``frac_beyond`` (fraction with ``|z|`` above the per-cell critical value) and
        ``q90_abs_z`` (where the worst 10% of cells start).
    null_aggregates
        The same aggregates of every null model (references left out in turn, extra retrains).
    per_cell
        One row per cell (index ``obs_name``): ``group``, ``z``, the references' mean and
        moderated s.d. of the score.
    null_z
        Per group, the per-cell z of every null model (for the plot).
    critical, cell_df
        Per-cell two-sided critical value of ``|z|`` and the z's degrees of freedom.
    utility
        Held-out ELBO of the forget cells' types against the retrains' prediction interval
        (``same_type_*``; a method that erases the type falls below it) and of the other types
        against the retrains' mean minus ``elbo_tolerance`` (``other_types_*``).
    protocol
        Statistic, number of references / null models, draws, seed, cell counts.
    """

    decision: str
    statistic: float
    p_value: float
    interval: tuple[float, float]
    margin: float
    alpha: float
    test: NullTest = field(repr=False)
    spread_test: NullTest = field(repr=False)
    membership_test: NullTest = field(repr=False)
    shift_tests: dict[str, NullTest] = field(repr=False)
    aggregates: pd.DataFrame = field(repr=False)
    null_aggregates: pd.DataFrame = field(repr=False)
    per_cell: pd.DataFrame = field(repr=False)
    null_z: dict[str, list[np.ndarray]] = field(repr=False)
    critical: float = np.nan
    cell_df: float = np.nan
    utility: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        """``"remembers"`` for a positive signed mean z, ``"over-forgets"`` for a negative one."""
        return "remembers" if self.statistic > 0 else "over-forgets"

    @property
    def utility_ok(self) -> bool:
        """Both held-out ELBO checks pass (a group without cells does not count)."""
        checks = [self.utility.get("same_type_ok"), self.utility.get("other_types_ok")]
        return all(c for c in checks if c is not None)

    @property
    def global_shift(self) -> bool:
        """The decision is ``remembers`` / ``over-forgets``, but the unseen cells of the forget
        cells' type moved the same way (their shift test rejects at ``alpha`` with the same
        sign) and the membership contrast does not reject: the candidate fits the whole type
        differently from the references (e.g. a better or worse recipe), which the forget
        cells' mean z alone reads as remembering or over-forgetting.  Measured: the exact
        ``fast_retrain`` on 5,000 simulated cells (docs/fast_unlearning.md)."""
        if self.decision not in ("remembers", "over-forgets"):
            return False
        same, contrast = self.shift_tests.get("same_type"), self.membership_test
        if same is None or contrast is None:
            return False
        if not (np.isfinite(same.p_value) and np.isfinite(contrast.p_value)):
            return False
        return bool(
            same.p_value < self.alpha
            and np.sign(same.statistic) == np.sign(self.statistic)
            and contrast.p_value >= self.alpha
        )

    @property
    def passed(self) -> bool:
        """``decision == "equivalent"`` and :attr:`utility_ok`."""
        return self.decision == "equivalent" and self.utility_ok

    def verdict(self) -> str:
        """One line: PASS / FAIL, the decision, mean z with interval and p, utility."""
        lo, hi = self.interval
        u = self.utility
        parts = [
            f"{'PASS' if self.passed else 'FAIL'}: {self.decision} "
            f"(forget mean z {self.statistic:+.2f}, {1 - 2 * self.alpha:.0%} interval "
            f"[{lo:+.2f}, {hi:+.2f}], margin +/-{self.margin:g}, p={self.p_value:.3g}, "
            f"{self.protocol.get('n_references')} references)"
        ]
        if self.membership_test is not None and np.isfinite(self.membership_test.statistic):
            parts.append(
                f"membership contrast {self.membership_test.statistic:+.2f} "
                f"(p={self.membership_test.p_value:.3g})"
            )
        if self.global_shift:
            parts.append(
                "the unseen cells of the forget cells' type shift alike: a fit difference of the "
                "whole type (global shift), not membership"
            )
        if u.get("same_type_ok") is not None:
            lo_u, hi_u = u["same_type_interval"]
            parts.append(
                f"same-type held-out ELBO {u['same_type_elbo']:.1f} "
                f"{'inside' if u['same_type_ok'] else 'outside'} [{lo_u:.1f}, {hi_u:.1f}]"
            )
        if u.get("other_types_ok") is not None:
            parts.append(
                f"other-type held-out ELBO {u['other_types_elbo']:.1f} "
                f"{'>=' if u['other_types_ok'] else '<'} floor {u['other_types_floor']:.1f}"
            )
        return "; ".join(parts)

    def to_frame(self) -> pd.DataFrame:
        """One tidy row: decision, statistics, p-values, utility (for benchmark tables)."""
        agg = self.aggregates
        row: dict[str, Any] = {
            "eq_decision": self.decision,
            "eq_passed": self.passed,
            "eq_mean_z": self.statistic,
            "eq_low": self.interval[0],
            "eq_high": self.interval[1],
            "eq_p_value": self.p_value,
            "eq_margin": self.margin,
            "eq_mean_z2": agg.loc["forget", "mean_z2"],
            "eq_mean_z2_p_value": self.spread_test.p_value,
            "eq_frac_beyond": agg.loc["forget", "frac_beyond"],
            "eq_q90_abs_z": agg.loc["forget", "q90_abs_z"],
            "eq_membership_contrast": self.membership_test.statistic,
            "eq_membership_p_value": self.membership_test.p_value,
            "eq_global_shift": self.global_shift,
            "eq_same_type_mean_z": agg.loc["same_type", "mean_z"],
            "eq_other_types_mean_z": agg.loc["other_types", "mean_z"],
            "eq_same_type_elbo": self.utility.get("same_type_elbo"),
            "eq_same_type_low": self.utility.get("same_type_interval", (np.nan, np.nan))[0],
            "eq_same_type_high": self.utility.get("same_type_interval", (np.nan, np.nan))[1],
            "eq_other_types_elbo": self.utility.get("other_types_elbo"),
            "eq_utility_ok": self.utility_ok,
            "eq_n_references": self.protocol.get("n_references"),
        }
        return pd.DataFrame([row])

    def plot(self, ax=None, group: str = "forget"):
        """Per-cell z of ``group`` under the candidate next to every null model's; returns Axes.

        Each column is one model (null models first, grey; the candidate last, coloured by the
        decision); the dashed lines are the per-cell critical values, the dotted band the
        equivalence margin on the mean (diamonds: each model's mean z).
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(max(4.0, 0.45 * (len(self.null_z[group]) + 2)), 3.5))
        rng = np.random.default_rng(0)  # horizontal jitter only
        columns = [*self.null_z[group], self.per_cell.loc[self.per_cell["group"] == group, "z"]]
        colour = {"equivalent": "tab:green", "no power": "tab:orange"}.get(
            self.decision, "tab:red"
        )
        for i, z in enumerate(columns):
            z = np.asarray(z, dtype=float)
            c = colour if i == len(columns) - 1 else "0.55"
            ax.scatter(i + rng.uniform(-0.18, 0.18, z.size), z, s=8, color=c, alpha=0.7)
            if z.size:
                ax.scatter([i], [z.mean()], marker="D", s=40, color="k", zorder=3)
        for y in (-self.critical, self.critical):
            ax.axhline(y, ls="--", lw=0.8, color="grey")
        ax.axhspan(-self.margin, self.margin, color="tab:green", alpha=0.08, lw=0)
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(
            [f"null {i}" for i in range(len(columns) - 1)] + ["candidate"],
            rotation=60,
            fontsize="small",
        )
        ax.set_ylabel(f"per-cell z ({self.protocol.get('statistic', 'elbo')})")
        ax.set_title(
            f"{group}: {self.decision} (mean z {self.statistic:+.2f})"
            if group == "forget"
            else group
        )
        return ax

    def __repr__(self) -> str:
        n = self.protocol.get("n_cells", {})
        agg = self.aggregates
        lines = [
            f"EquivalenceReport({n.get('forget')} forget cells, "
            f"{self.protocol.get('n_references')} references, "
            f"{self.protocol.get('n_null_models', 0)} extra null models, "
            f"statistic={self.protocol.get('statistic')})",
        ]
        for g in agg.index:
            r = agg.loc[g]
            lines.append(
                f"  {g:<12} ({n.get(g, 0):>4} cells) mean z {r['mean_z']:+6.2f}  "
                f"mean z^2 {r['mean_z2']:6.2f}  |z|>{self.critical:.2f}: {r['frac_beyond']:.0%}"
                f"  q90|z| {r['q90_abs_z']:.2f}"
            )
        lines.append(f"  verdict      {self.verdict()}")
        return "\n".join(lines)
