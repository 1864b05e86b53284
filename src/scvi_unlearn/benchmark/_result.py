"""The benchmark's result: a tidy table, a per-method summary, files and figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import stats

#: Columns of :attr:`BenchmarkResult.summary` are computed from these table columns.
_SUMMARY_COLUMNS = (
    "auc",
    "advantage",
    "yeom_advantage",
    "heldout_elbo",
    "utility_silhouette",
    "utility_ari",
    "utility_marker_correlation",
    "utility_neighborhood_jaccard",
    "time_vs_retrain",
    "eq_mean_z",
    "eq_membership_contrast",
    "eq_same_type_elbo",
)


#: colours of the approximate methods in the cost figures (green marks the exact methods)
_NON_GREEN = (
    "tab:blue",
    "tab:orange",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t ``level`` interval of ``values`` (NaNs dropped; NaN bounds if n < 2)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (np.nan, np.nan, np.nan)
    m = float(v.mean())
    if v.size < 2:
        return (m, np.nan, np.nan)
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return (m, m - half, m + half)


@dataclass
class BenchmarkResult:
    """Result of :func:`scvi_unlearn.benchmark.run`.

    Attributes
    ----------
    table
        One row per attack and model (original, each retrain, each cost-matched retrain, each
        method x seed): AUC with CI, advantage with CI, Yeom advantage, TPR at fixed FPRs,
        pass / fail against the retrain target and why, held-out ELBO and every utility metric
        (``utility_*``), wall time and time relative to retrain.
    targets
        ``{attack: RetrainTarget}`` (:class:`scvi_unlearn.attack.RetrainTarget`).
    reports
        ``{(attack, method, seed): AttackReport}``.
    equivalences
        ``{(method, seed): EquivalenceReport}`` (:class:`scvi_unlearn.attack.EquivalenceReport`).
    settings
        The run's settings (methods, seeds, protocol).
    """

    table: pd.DataFrame
    targets: dict[str, Any]
    reports: dict[tuple[str, str, int], Any]
    adata: AnnData = field(repr=False)
    forget: np.ndarray = field(repr=False)
    equivalences: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)
    label_key: str = "cell_type"
    latent_models: dict[str, Any] | None = field(default=None, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    def audit_has_power(self, attack: str | None = None) -> bool:
        """Whether the original model fails the retrain target of ``attack``.

        If the model that trained on the forget cells passes, the target's interval is too
        wide for the audit to detect remembering at all, and no verdict on an unlearned model
        means anything.
        """
        attack = attack or self.attacks[0]
        t = self.table
        orig = t[(t["attack"] == attack) & (t["method"] == "original")]
        if orig.empty:
            return True
        return bool(orig["advantage"].iloc[0] > self.targets[attack].interval[1])

    @property
    def attacks(self) -> list[str]:
        """The audit's attacks, the primary one first."""
        return list(self.targets)

    @property
    def summary(self) -> pd.DataFrame:
        """Per attack and method: runs, pass rate, and mean with 95% CI of the main columns."""
        rows = []
        for (attack, method), grp in self.table.groupby(["attack", "method"], sort=False):
            row: dict[str, Any] = {"attack": attack, "method": method, "n_runs": len(grp)}
            row["pass_rate"] = float(grp["passed"].mean())
            if "membership_passed" in grp:
                row["membership_pass_rate"] = float(grp["membership_passed"].mean())
            if "eq_decision" in grp:
                counts = grp["eq_decision"].dropna().value_counts()
                row["eq_decisions"] = ", ".join(f"{d} {n}/{len(grp)}" for d, n in counts.items())
                row["eq_pass_rate"] = float(grp["eq_passed"].fillna(False).astype(bool).mean())
            for col in _SUMMARY_COLUMNS:
                if col not in grp:
                    continue
                m, lo, hi = mean_ci(grp[col])
                row[col] = m
                row[f"{col}_ci_low"] = lo
                row[f"{col}_ci_high"] = hi
            rows.append(row)
        return pd.DataFrame(rows)

    def to_csv(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``benchmark_table.csv`` and ``benchmark_summary.csv``; return their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        t, s = directory / "benchmark_table.csv", directory / "benchmark_summary.csv"
        self.table.to_csv(t, index=False)
        self.summary.to_csv(s, index=False)
        return t, s

    def to_markdown(self, digits: int = 3) -> str:
        """The summary as Markdown tables, one per attack (mean [95% CI] across seeds)."""

        def fmt(row, col, d=digits):
            m, a, b = row.get(col), row.get(f"{col}_ci_low"), row.get(f"{col}_ci_high")
            if m is None or not np.isfinite(m):
                return "–"
            if a is None or not np.isfinite(a):
                return f"{m:.{d}f}"
            return f"{m:.{d}f} [{a:.{d}f}, {b:.{d}f}]"

        parts = []
        for attack in self.attacks:
            target = self.targets[attack]
            lo, hi = target.interval
            s = self.summary[self.summary["attack"] == attack]
            head = (
                f"**{attack} attack**\n\n"
                "| method | runs | AUC | advantage | held-out ELBO | forget mean z | "
                "equivalence | same-type ELBO | time / retrain | membership pass | pass |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|\n"
            )
            lines = [
                f"| {r['method']} | {r['n_runs']} | {fmt(r, 'auc')} | {fmt(r, 'advantage')} | "
                f"{fmt(r, 'heldout_elbo', 1)} | {fmt(r, 'eq_mean_z', 2)} | "
                f"{r.get('eq_decisions') or '–'} | {fmt(r, 'eq_same_type_elbo', 1)} | "
                f"{fmt(r, 'time_vs_retrain', 2)} | {r.get('membership_pass_rate', np.nan):.0%} | "
                f"{r['pass_rate']:.0%} |"
                for _, r in s.iterrows()
            ]
            margin = self.settings.get("margin")
            foot = (
                f"\nMembership pass: advantage <= {hi:.3f} (retrain 95% interval "
                f"[{lo:.3f}, {hi:.3f}], {len(target.reports)} retrains) and held-out ELBO >= "
                f"{target.elbo_floor:.1f}. Pass: membership pass **and** the per-cell verdict: "
                f"the forget cells' mean z within +/-{margin:g} of the retrains' (90% interval) "
                "and the held-out ELBO of the forgotten type not more than 0.5% below the "
                "retrains' 95% prediction interval and of the other types not more than 2% "
                "below theirs (pooled, and per type with at least 10 held-out cells); an exact "
                "method (retrain, fast_retrain, dp_sgd) is judged on the held-out ELBO alone. "
                "Each retrain is tested against the other retrains.\n"
            )
            if not self.audit_has_power(attack):
                foot += (
                    "\n**No power:** the original model's advantage lies inside the retrain "
                    "interval, so this audit cannot tell a model that remembers the forget set "
                    "from one that never saw it (too few cells, or too weak an attack); its "
                    "pass / fail says nothing about forgetting.\n"
                )
            parts.append(head + "\n".join(lines) + "\n" + foot)
        intro = (
            f"Forget set: {self.settings.get('n_forget')} cells; means over seeds with 95% "
            "t-intervals; time relative to the mean exact retrain.\n\n"
        )
        return intro + "\n".join(parts)

    # ------------------------------------------------------------------ figures
    def plot_roc(self, ax=None, attack: str | None = None, seed: int | None = None):
        """ROC curves of every method (first seed) with the original and a retrain."""
        import matplotlib.pyplot as plt

        attack = attack or self.attacks[0]
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 5))
        done = set()
        for (a, method, s), report in self.reports.items():
            if a != attack or method in done or (seed is not None and s != seed):
                continue
            done.add(method)
            report.plot_roc(ax=ax, label=f"{method} (AUC {report.auc:.2f})", chance=False)
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
        ax.set_title(f"{attack} attack ROC (forget vs matched held-out)", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        return ax

    def plot_advantage_vs_cost(self, ax=None, attack: str | None = None):
        """Advantage vs time / retrain time, with the retrain band and the budget curve."""
        import matplotlib.pyplot as plt

        attack = attack or self.attacks[0]
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4.5))
        lo, hi = self.targets[attack].interval
        ax.axhspan(lo, hi, color="tab:green", alpha=0.15, label="retrain 95% interval")
        table = self.table[self.table["attack"] == attack]
        t = table[table["method"] != "original"]
        budget = t[t["method"].str.startswith("retrain")]
        curve = budget.groupby("method")[["time_vs_retrain", "advantage"]].mean()
        curve = curve.sort_values("time_vs_retrain")
        ax.plot(
            curve["time_vs_retrain"],
            curve["advantage"],
            "s--",
            color="tab:green",
            label="exact retrain (epoch budgets)",
        )
        for method, grp in t[~t["method"].str.startswith("retrain")].groupby("method"):
            ax.errorbar(
                grp["time_vs_retrain"].mean(),
                grp["advantage"].mean(),
                yerr=grp["advantage"].std(ddof=1) if len(grp) > 1 else None,
                fmt="o",
                capsize=3,
                label=method,
            )
        orig = table[table["method"] == "original"]
        if len(orig):
            ax.axhline(orig["advantage"].iloc[0], color="tab:red", ls=":", label="original")
        ax.set_xscale("log")
        ax.set_xlabel("wall time / retrain wall time")
        ax.set_ylabel("membership advantage 2|AUC - 0.5|")
        ax.set_title(f"Forgetting vs cost ({attack} attack)", fontsize=10)
        ax.legend(fontsize=7)
        return ax

    def plot_equivalence_vs_cost(self, axes=None):
        """Forget cells' mean z and held-out ELBO against time / retrain time, every method.

        Two panels: the per-cell equivalence statistic (the margin band in green, 0 = the
        retrains' level) and the held-out ELBO (the retrains' mean and floor).  Both exact cost
        curves are drawn: the default recipe with an epoch budget (``retrain_*pct``) and the
        fast schedule (``fast_retrain``), so that an approximate method can be read as
        dominated (above / below the curves at equal cost) or not.
        """
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        t = self.table[self.table["attack"] == self.attacks[0]]
        t = t[t["method"] != "original"]
        margin = self.settings.get("margin")
        target = self.targets[self.attacks[0]]
        for ax, col, label in (
            (axes[0], "eq_mean_z", "forget cells' mean z (per-cell equivalence)"),
            (axes[1], "heldout_elbo", "held-out ELBO"),
        ):
            if col not in t:
                continue
            budget = t[t["method"].str.startswith("retrain")]
            curve = budget.groupby("method")[["time_vs_retrain", col]].mean()
            curve = curve.sort_values("time_vs_retrain")
            ax.plot(
                curve["time_vs_retrain"],
                curve[col],
                "s--",
                color="tab:green",
                label="exact: default recipe, epoch budgets",
            )
            others = iter(_NON_GREEN)  # green is for the exact methods
            for method, grp in t[~t["method"].str.startswith("retrain")].groupby("method"):
                exact = method == "fast_retrain"
                ax.errorbar(
                    grp["time_vs_retrain"].mean(),
                    grp[col].mean(),
                    yerr=grp[col].std(ddof=1) if len(grp) > 1 else None,
                    fmt="D" if exact else "o",
                    ms=8 if exact else 6,
                    color="tab:green" if exact else next(others, None),
                    capsize=3,
                    label=f"exact: {method}" if exact else method,
                )
            if col == "eq_mean_z" and margin is not None:
                ax.axhspan(
                    -margin,
                    margin,
                    color="tab:green",
                    alpha=0.12,
                    lw=0,
                    label=f"equivalence margin +/-{margin:g}",
                )
                ax.axhline(0, color="grey", lw=0.8)
            if col == "heldout_elbo":
                ax.axhline(
                    np.mean(target.heldout_elbos), color="grey", lw=0.8, label="retrains' mean"
                )
                ax.axhline(target.elbo_floor, color="tab:red", ls=":", label="floor")
            ax.set_xscale("log")
            ax.set_xlabel("wall time / retrain wall time")
            ax.set_ylabel(label)
            ax.legend(fontsize=6)
        axes[0].figure.suptitle("Equivalence and utility vs cost", fontsize=10)
        return axes

    def plot_umap(self, axes=None, seed: int = 0):
        """Latent UMAP of the original, an unlearned and a retrained model (forget cells red)."""
        import matplotlib.pyplot as plt
        import scanpy as sc

        if not self.latent_models:
            raise ValueError("No latent models kept: run the benchmark with umap=True.")
        from scvi_unlearn.metrics import latent_means

        n = len(self.latent_models)
        if axes is None:
            _, axes = plt.subplots(1, n, figsize=(4 * n, 4))
        is_forget = np.isin(np.asarray(self.adata.obs_names, dtype=str), self.forget)
        for ax, (name, mdl) in zip(np.atleast_1d(axes), self.latent_models.items()):
            z = latent_means(mdl, self.adata, seed=seed)
            tmp = AnnData(np.zeros((z.shape[0], 1), dtype=np.float32), obsm={"X_z": z})
            sc.pp.neighbors(tmp, use_rep="X_z", random_state=seed)
            sc.tl.umap(tmp, random_state=seed)
            xy = tmp.obsm["X_umap"]
            ax.scatter(xy[~is_forget, 0], xy[~is_forget, 1], s=3, c="lightgrey")
            ax.scatter(xy[is_forget, 0], xy[is_forget, 1], s=8, c="tab:red", label="forget")
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        np.atleast_1d(axes)[0].legend(fontsize=7)
        return axes

    def save_figures(self, directory: str | Path) -> list[Path]:
        """Write ``roc_<attack>.png``, ``advantage_vs_cost_<attack>.png``,
        ``equivalence_vs_cost.png`` and ``latent_umap.png``."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = []
        for attack in self.attacks:
            for name, fn in (
                ("roc", self.plot_roc),
                ("advantage_vs_cost", self.plot_advantage_vs_cost),
            ):
                ax = fn(attack=attack)
                ax.figure.tight_layout()
                path = directory / f"{name}_{attack}.png"
                ax.figure.savefig(path, dpi=150)
                plt.close(ax.figure)
                out.append(path)
        if "eq_mean_z" in self.table:
            axes = self.plot_equivalence_vs_cost()
            fig = axes[0].figure
            fig.tight_layout()
            fig.savefig(directory / "equivalence_vs_cost.png", dpi=150)
            plt.close(fig)
            out.append(directory / "equivalence_vs_cost.png")
        if self.latent_models:
            axes = self.plot_umap()
            fig = np.atleast_1d(axes)[0].figure
            fig.tight_layout()
            fig.savefig(directory / "latent_umap.png", dpi=150)
            plt.close(fig)
            out.append(directory / "latent_umap.png")
        return out
