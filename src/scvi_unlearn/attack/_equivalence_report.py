""":class:`EquivalenceReport`: the per-cell retrain-equivalence verdict of one model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scvi_unlearn.attack._utility import utility_lines
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
        Held-out ELBO checks (:mod:`scvi_unlearn.attack._utility`), each failing only *below*
        the retrains by more than a stated margin: the forget cells' types against the
        retrains' 95% prediction interval minus ``same_type_margin`` (0.5%) of their mean
        ``|ELBO|`` (``same_type_*``; ``same_type_above``: fit better than any retrain); the
        other types pooled against the retrains' mean minus ``elbo_tolerance`` (2%,
        ``other_types_*``); and each other type with at least ``min_type_cells`` held-out
        cells against its own interval minus ``elbo_tolerance`` (``per_type``: a DataFrame with
        ``type``, ``n_cells``, ``elbo``, ``reference``, ``low``, ``high``, ``floor``,
        ``judged``, ``ok``; ``per_type_ok``).
    protocol
        Statistic, number of references / null models, draws, seed, cell counts, and
        ``power`` (null spread, interval half-width, probability that another retrain is
        declared equivalent, references needed: :func:`~scvi_unlearn.attack.references_needed`).
    exact
        The candidate is exact by construction (from its ``unlearn_record_``: a method in
        :data:`scvi_unlearn.unlearn.FROM_SCRATCH`, or ``exact=`` of the test).  Its output
        never depended on a forget cell, so the z-test against retrains of the original's
        recipe measures a *recipe difference*, not memory: :attr:`passed` is the utility checks
        alone.  Approximate methods start from the original and are judged on both.
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
    exact: bool = False

    @property
    def direction(self) -> str:
        """``"remembers"`` for a positive signed mean z, ``"over-forgets"`` for a negative one."""
        return "remembers" if self.statistic > 0 else "over-forgets"

    @property
    def utility_ok(self) -> bool:
        """Every held-out ELBO check passes: same type, other types pooled, and each other type
        with enough cells (a check without cells does not count)."""
        u = self.utility
        checks = [u.get("same_type_ok"), u.get("other_types_ok"), u.get("per_type_ok")]
        return all(c for c in checks if c is not None)

    @property
    def failing_types(self) -> list[str]:
        """Other cell types whose own held-out ELBO check fails."""
        table = self.utility.get("per_type")
        if table is None or not len(table):
            return []
        bad = table["judged"] & ~table["ok"].fillna(True).astype(bool)
        return [str(t) for t in table.loc[bad, "type"]]

    @property
    def global_shift(self) -> bool:
        """The decision is ``remembers`` / ``over-forgets``, but the unseen cells of the forget
        cells' type moved the same way (their shift test rejects at ``alpha`` with the same
        sign) and the membership contrast does not reject: the candidate fits the whole type
        differently from the references (e.g. a better or worse recipe), which the forget
        cells' mean z alone reads as remembering or over-forgetting.  Measured: the exact
        ``fast_retrain`` on 5,000 simulated cells (docs/results_fast_retrain.md)."""
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
        """Exact candidate (:attr:`exact`): :attr:`utility_ok`.  Approximate candidate:
        ``decision == "equivalent"`` and :attr:`utility_ok`."""
        if self.exact:
            return self.utility_ok
        return self.decision == "equivalent" and self.utility_ok

    def _z_text(self) -> str:
        lo, hi = self.interval
        return (
            f"forget mean z {self.statistic:+.2f}, {1 - 2 * self.alpha:.0%} interval "
            f"[{lo:+.2f}, {hi:+.2f}], margin +/-{self.margin:g}, p={self.p_value:.3g}, "
            f"{self.protocol.get('n_references')} references"
        )

    def _power_text(self) -> str | None:
        power = self.protocol.get("power")
        if self.decision != "no power" or not power:
            return None
        needed = power.get("references_needed")
        advice = (
            f"about {needed} references would be needed"
            if needed is not None
            else "at this spread no number of references reaches a decision on these cells"
        )
        return (
            f"{power['n_references']} references give +/-{power['half_width']:.2f} for a "
            f"margin of +/-{self.margin:g}: {advice}"
        )

    def verdict(self) -> str:
        """One line: PASS / FAIL and why, with every margin stated.

        Exact candidate: ``PASS (exact by construction): utility ...; against the original
        recipe's retrains: forget mean z ... (a recipe difference, not memory)``.  Approximate
        candidate: ``PASS / FAIL: <decision> (mean z, interval, p)``, the membership contrast
        (and whether unseen cells of the type are fit better than by any retrain), utility.
        """
        utility = utility_lines(self.utility)
        head = "PASS" if self.passed else "FAIL"
        if self.exact:
            if self.decision in ("remembers", "over-forgets"):
                reading = "a recipe difference, not memory"
            elif self.decision == "equivalent":
                reading = "fits them as they fit each other"
            else:
                reading = "no power"
            parts = [
                f"{head} (exact by construction): utility: "
                + ("; ".join(utility) if utility else "not measured (no held-out cells)"),
                f"against the original recipe's retrains: {self._z_text()} ({reading})",
            ]
        else:
            parts = [f"{head}: {self.decision} ({self._z_text()})"]
            if self.membership_test is not None and np.isfinite(self.membership_test.statistic):
                contrast = (
                    f"membership contrast {self.membership_test.statistic:+.2f} "
                    f"(p={self.membership_test.p_value:.3g})"
                )
                if self.utility.get("same_type_above"):
                    contrast += (
                        ", and it fits unseen cells of the type better than the retrains "
                        "(same-type held-out ELBO above their interval)"
                    )
                parts.append(contrast)
            if self.global_shift:
                parts.append(
                    "the unseen cells of the forget cells' type shift alike: a fit difference "
                    "of the whole type (global shift), not membership"
                )
            parts.extend(utility)
        power = self._power_text()
        if power is not None:
            parts.append(power)
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
            "eq_same_type_floor": self.utility.get("same_type_floor"),
            "eq_same_type_above": self.utility.get("same_type_above"),
            "eq_other_types_elbo": self.utility.get("other_types_elbo"),
            "eq_per_type_ok": self.utility.get("per_type_ok"),
            "eq_failing_types": ", ".join(self.failing_types),
            "eq_utility_ok": self.utility_ok,
            "eq_exact": self.exact,
            "eq_n_references": self.protocol.get("n_references"),
            "eq_power": self.protocol.get("power", {}).get("power"),
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


def is_exact(model) -> bool:
    """Whether ``model`` is the output of an exact, from-scratch unlearning method.

    Read from its ``unlearn_record_["method"]``: exact when the method is registered as
    ``from_scratch`` (:data:`scvi_unlearn.unlearn.FROM_SCRATCH`: ``retrain``,
    ``fast_retrain``, ``dp_sgd``).  A model without a record (an original, a model trained
    by hand) is not exact.
    """
    from scvi_unlearn.unlearn import FROM_SCRATCH

    record = getattr(model, "unlearn_record_", None)
    return isinstance(record, dict) and record.get("method") in FROM_SCRATCH
