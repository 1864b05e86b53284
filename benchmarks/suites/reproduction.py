"""Reproduction: the condensed tables of docs/reproduction.md from benchmark output folders.

Experiment ``tables`` reads ``benchmark_summary.csv`` and ``benchmark_table.csv`` written by
``scvi-unlearn benchmark`` and gives one row per method: both attacks' AUC and advantage,
held-out ELBO, the per-cell equivalence (mean z and decisions), the same-type held-out ELBO,
time / retrain and the passes per attack (overall: membership, equivalence and both utility
checks).

With ``reruns`` (folder-name suffixes), the rows of the methods of a rerun (e.g. a folder
``CD56NK_extragradient`` next to ``CD56NK``, a run of the same command with ``--methods
extragradient``) replace the first run's rows for those methods (or are added, for a method the
first run did not have); several suffixes apply in turn.  This is valid because every run is
seeded: the original, the retrain references and the cost-matched retrains of both runs are
identical (checked: it raises otherwise); the rerun's wall-time ratios are against its own
retrains.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._harness import ROOT, Common, experiment


@dataclasses.dataclass
class TablesParams(Common):
    """Parameters of the ``tables`` experiment.

    Attributes
    ----------
    folders
        ``scvi-unlearn benchmark`` output folders (relative paths: from the repository root).
    reruns
        Suffixes of rerun folders (``<folder><suffix>``) whose methods' rows win.
    """

    folders: list[str] = dataclasses.field(default_factory=list)
    reruns: list[str] = dataclasses.field(default_factory=list)


def _f(v, digits: int = 3) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _read(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (
        pd.read_csv(folder / "benchmark_summary.csv"),
        pd.read_csv(folder / "benchmark_table.csv"),
    )


def _with_rerun(
    first: tuple[pd.DataFrame, pd.DataFrame], folder: Path, rerun: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first run's rows, with the rerun's methods' rows replacing theirs."""
    summary, runs = first
    re_summary, re_runs = _read(rerun)
    baselines = [m for m in re_runs["method"].unique() if m in ("original", "retrain")]
    for m in baselines:  # the seeded references of both runs must be the same models
        cols = [c for c in runs.select_dtypes("number").columns if "time" not in c]
        a = runs[runs["method"] == m][cols].reset_index(drop=True)
        b = re_runs[re_runs["method"] == m][cols].reset_index(drop=True)
        if not np.allclose(a.to_numpy(float), b.to_numpy(float), equal_nan=True):
            raise ValueError(f"{rerun}: its {m!r} rows differ from {folder}'s; not a rerun.")
    methods = [m for m in re_summary["method"].unique() if m not in baselines]
    methods = [m for m in methods if not m.startswith("retrain_")]
    keep = ~summary["method"].isin(methods)
    summary = pd.concat([summary[keep], re_summary[re_summary["method"].isin(methods)]])
    runs = pd.concat(
        [runs[~runs["method"].isin(methods)], re_runs[re_runs["method"].isin(methods)]]
    )
    return summary, runs


def table(folder: Path, reruns: list[Path] = ()) -> pd.DataFrame:
    """One row per method of ``folder`` (the reruns' methods from there)."""
    summary, runs = _read(folder)
    for rerun in reruns:
        summary, runs = _with_rerun((summary, runs), folder, rerun)
    attacks = list(dict.fromkeys(summary["attack"]))
    head = ["method"]
    for a in attacks:
        head += [f"{a} AUC", f"{a} adv."]
    head += [
        "held-out ELBO",
        "forget mean z",
        "equivalence",
        "same-type ELBO",
        "time / retrain",
        f"pass ({' / '.join(attacks)})",
    ]
    lines = []
    for m in dict.fromkeys(summary["method"]):
        rows = summary[summary["method"] == m].set_index("attack")
        first = rows.loc[attacks[0]]
        cells = [m]
        for a in attacks:
            cells += [_f(rows.loc[a, "auc"]), _f(rows.loc[a, "advantage"])]
        passes = []
        for a in attacks:
            r = runs[(runs["method"] == m) & (runs["attack"] == a)]
            passes.append(f"{int(r['passed'].sum())}/{len(r)}")
        cells += [
            _f(first["heldout_elbo"], 1),
            _f(first.get("eq_mean_z"), 2),
            str(first.get("eq_decisions", "–")),
            _f(first.get("eq_same_type_elbo"), 1),
            _f(first["time_vs_retrain"], 2),
            ", ".join(passes),
        ]
        lines.append(cells)
    return pd.DataFrame(lines, columns=head)


@experiment("tables", TablesParams)
def tables(args: TablesParams) -> dict[str, pd.DataFrame]:
    """The condensed tables of docs/reproduction.md, one per benchmark output folder."""
    out = {}
    for name in args.folders:
        folder = ROOT.parent / name  # relative to the repository root
        reruns = [folder.with_name(folder.name + suffix) for suffix in args.reruns]
        names = ", ".join(r.name for r in reruns)
        title = str(Path(name)) + (f" (the methods of {names} from there)" if reruns else "")
        out[title] = table(folder, reruns)
    return out
