"""The verdict's tables: one row per (forget set, method) (:func:`summary`) and the calibration
of the seed-to-seed spread (:class:`SpreadRecorder`, :func:`spread_table`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class SpreadRecorder:
    """After each test, keeps the candidate's and the references' per-cell ELBO of the forget
    cells (from the test's :class:`~scvi_unlearn.attack.ScoreCache`, so nothing is
    recomputed), in the order of the runs."""

    def __init__(self):
        self.candidates: list[np.ndarray] = []
        self.references: list[np.ndarray] = []

    def __call__(self, rep, model, references, cache) -> None:
        per_cell = rep.per_cell
        names = per_cell.index[per_cell["group"] == "forget"].to_numpy()
        self.candidates.append(cache.scores([model], "forget", names, "elbo")[0])
        self.references.append(cache.scores(list(references), "forget", names, "elbo"))


def spread_table(table: pd.DataFrame, recorder: SpreadRecorder) -> pd.DataFrame:
    """One row per (forget set, method): the calibration of the seed-to-seed spread.

    ``spread ratio (mean)``: the standard deviation across the runs (seeds) of the forget cells'
    mean ELBO over the same across the retrains; ``spread ratio (per cell)``: the mean over the
    forget cells of each cell's standard deviation across the runs over the same for the
    retrains.  Near 1 is calibrated; with 3 runs against 5 retrains a ratio of standard
    deviations has a wide interval (about 0.2-2.6 at 90%), the per-cell one is the steadier.
    """
    table = table.assign(_run=np.arange(len(table)))
    out = []
    for (set_name, name), g in table.groupby(["forget set", "method"], sort=False):
        runs = np.vstack([recorder.candidates[i] for i in g["_run"]])  # seeds x cells
        refs = recorder.references[int(g["_run"].iloc[0])]  # references x cells
        ratio = runs.mean(axis=1).std(ddof=1) / refs.mean(axis=1).std(ddof=1)
        out.append(
            {
                "forget set": set_name,
                "method": name,
                "forget ELBO (runs)": " / ".join(f"{v:.1f}" for v in runs.mean(axis=1)),
                "forget ELBO (retrains)": f"{refs.mean():.1f}",
                "sd of mean (runs)": f"{runs.mean(axis=1).std(ddof=1):.2f}",
                "sd of mean (retrains)": f"{refs.mean(axis=1).std(ddof=1):.2f}",
                "spread ratio (mean)": f"{ratio:.2f}",
                "spread ratio (per cell)": (
                    f"{runs.std(axis=0, ddof=1).mean() / refs.std(axis=0, ddof=1).mean():.2f}"
                ),
            }
        )
    return pd.DataFrame(out)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (forget set, method): mean cost, per-seed mean z and utility, counts."""
    out = []
    for (set_name, name), g in table.groupby(["forget set", "method"], sort=False):
        counts = g["decision"].value_counts()
        out.append(
            {
                "forget set": set_name,
                "method": name,
                "time / retrain": f"{g['time / retrain'].mean():.3f}",
                "mean z (seeds)": " / ".join(f"{z:+.2f}" for z in g["mean z"]),
                "decision": ", ".join(f"{d} {n}/{len(g)}" for d, n in counts.items()),
                "same-type ELBO ok": f"{int(g['same-type ok'].sum())}/{len(g)}",
                "other-type held-out ELBO vs retrains": " / ".join(
                    f"{v:+.2f}%" for v in g["other types vs retrains (%)"]
                ),
                "retain drop": " / ".join(f"{v:+.2f}%" for v in g["retain check drop (%)"]),
                "passed": f"{int(g['passed'].sum())}/{len(g)}",
            }
        )
    return pd.DataFrame(out)
