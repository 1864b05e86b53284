"""The condensed tables of docs/reproduction.md, from a benchmark's output folder.

    python benchmarks/reproduction_tables.py docs/reproduction/CD56NK

reads ``benchmark_summary.csv`` and ``benchmark_table.csv`` written by ``scvi-unlearn benchmark``
and prints one Markdown row per method: both attacks' AUC and advantage, held-out ELBO, the
per-cell equivalence (mean z and decisions), the same-type held-out ELBO, time / retrain and the
passes per attack (overall: membership, equivalence and both utility checks).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def _f(v, digits: int = 3) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def table(folder: Path) -> str:
    summary = pd.read_csv(folder / "benchmark_summary.csv")
    runs = pd.read_csv(folder / "benchmark_table.csv")
    attacks = list(dict.fromkeys(summary["attack"]))
    methods = list(dict.fromkeys(summary["method"]))
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
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
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
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="benchmark output folders")
    args = parser.parse_args()
    for folder in args.folders:
        print(f"### {folder}\n")
        print(table(folder))
        print()


if __name__ == "__main__":
    main()
