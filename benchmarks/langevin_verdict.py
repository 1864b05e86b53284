"""Per-cell retrain-equivalence verdict of ``langevin`` against fast_retrain and finetune.

The setting of ``equivalence_power.py`` / ``distill_verdict.py`` (whose cached original and
retrains it reuses): pbmc68k, 30% held out, scVI ``n_latent=10`` trained 200 epochs (seed 0)
on the members; forget = the 22 "CD56+ NK" members and the 90 "CD14+ Monocyte" members; each
run (seeds 0-2) is judged by :func:`scvi_unlearn.attack.equivalence_test` against 5
default-recipe retrains (seeds 0-4) of the cached original (:func:`verdict_grid.run_grid`).
The grid crosses the noise (``--noises``, in units of the learning rate; 0 is ``finetune``),
the budget in epochs (``--epochs``) and the annealing of the noise (``--anneals``:
``anneal_fraction``), at learning rate ``--lr``; ``fast_retrain`` with its defaults is the
baseline.  Every run passes ``on_degradation="warn"``.  Cost = wall time over that of
``method="retrain"`` (the recorded 200-epoch recipe) on the first forget set, the mean of two
timings in this process (``--retrain-time`` to pass a measured value instead).

Besides the verdict, the calibration of the noise to the retrains' spread: for each (set,
setting), from the forget cells' per-cell ELBO (8 posterior draws, seed 0: the equivalence
test's own scores, read from its cache),

- ``spread ratio (mean)``: the standard deviation across the setting's runs (seeds) of the
  forget cells' mean ELBO, over the same standard deviation across the 5 retrains;
- ``spread ratio (per cell)``: the mean over the forget cells of each cell's standard deviation
  across the runs, over the same mean for the 5 retrains.

"Calibrated" means a ratio near 1.  With 3 runs against 5 retrains, a ratio of standard
deviations has a wide interval (the 90% interval of an F(2, 4) ratio of variances is
0.05-6.9, so about 0.2-2.6 for the ratio of standard deviations); the per-cell ratio averages
over the cells and is the steadier of the two.  Printed as a second table and saved as
``<out>_spread.csv``.

The defaults of ``langevin`` come from a single-run probe (NK, seed 0, 20 epochs: noise 0 /
0.3 / 1 / 3 / 10 / 30 gave mean z +2.88 / +2.31 / -3.06 / -46.7 / -345 and the other types'
held-out ELBO -0.6% / -0.8% / -3.0% / -27% / -650%; noise 30 made the retain ELBO NaN) and two
grids (2026-12-01)::

    python benchmarks/langevin_verdict.py --threads 1 --cache /tmp/eqrefs \\
        --noises 0 0.1 0.3 0.5 1 --epochs 20 30 --anneals 0 0.5 \\
        --out /tmp/langevin_verdict.csv > /tmp/langevin_verdict.log
    python benchmarks/langevin_verdict.py --threads 1 --cache /tmp/eqrefs \\
        --noises 0 0.3 1 --epochs 30 --anneals 0 0.5 --lr 1e-2 --baselines \\
        --retrain-time 13.9 --out /tmp/langevin_verdict_lr1e-2.csv \\
        > /tmp/langevin_verdict_lr1e-2.log

(the second grid, beyond the planned one at lr 5e-3, because nothing passed there; its cost
column uses the retrain time of the first), and were then checked once on three forget sets
not used to choose them::

    python benchmarks/langevin_verdict.py --threads 1 --cache /tmp/eqrefs \\
        --sets "random (50)" "CD8+ Cytotoxic T (38)" "CD56+ NK subset (10)" \\
        --noises 0 1 --epochs 30 --anneals 0.5 --lr 1e-2 \\
        --out /tmp/langevin_verdict_oos.csv > /tmp/langevin_verdict_oos.log

Results (passed = equivalent and both held-out checks, of 6 runs = 2 sets x 3 seeds; mean z
NK seeds 0-2 | monocytes seeds 0-2; spread = per-cell spread ratio NK / monocytes):

=========================  ==========================================  ======  ===========
setting (noise, epochs,    mean z                                      passed  spread
anneal, lr)
=========================  ==========================================  ======  ===========
0 (finetune), 20, -, 5e-3  +2.88 +2.32 +3.32 | +3.53 +4.10 +4.43       0/6     0.94 / 0.73
0 (finetune), 30, -, 5e-3  +0.80 +2.71 +2.60 | +3.57 +3.31 +3.80       0/6     1.28 / 0.73
0.1, 20, 0, 5e-3           +2.88 +1.99 +3.43 | +3.70 +4.32 +4.43       0/6     1.06 / 0.72
0.3, 20, 0, 5e-3           +2.31 +1.89 +3.36 | +3.55 +4.02 +4.20       0/6     1.16 / 0.81
0.5, 20, 0, 5e-3           +0.51 +0.92 +2.91 | +3.30 +3.35 +3.62       0/6     1.67 / 0.89
1, 20, 0, 5e-3             -3.06 -2.86 +0.71 | +0.79 +0.59 +1.28       0/6     2.67 / 1.66
1, 20, 0.5, 5e-3           +0.92 +0.73 +1.39 | +2.67 +2.65 +3.34       0/6     1.20 / 1.09
0.5, 30, 0, 5e-3           -1.49 +1.67 +2.25 | +2.99 +2.83 +3.32       0/6     2.37 / 0.96
1, 30, 0, 5e-3             -6.25 -0.73 -0.32 | -0.38 +1.13 +1.01       0/6     3.90 / 2.03
1, 30, 0.5, 5e-3           -0.19 +1.70 +1.91 | +2.82 +3.08 +3.09       0/6     1.58 / 1.05
0 (finetune), 30, -, 1e-2  -3.47 -1.10 +0.04 | +1.53 +1.58 +1.79       0/6     2.16 / 0.95
0.3, 30, 0, 1e-2           -6.83 -1.29 -0.37 | +1.23 +0.89 +1.44       1/6     3.87 / 1.15
0.3, 30, 0.5, 1e-2         -3.98 -0.51 +0.20 | +1.68 +1.60 +1.90       0/6     2.54 / 0.98
1, 30, 0, 1e-2             -16.6 -4.72 -8.52 | -6.26 -3.58 -5.81       0/6     7.59 / 4.15
**1, 30, 0.5, 1e-2**       -3.80 -0.37 -1.18 | +1.07 +1.40 +1.01       2/6     2.47 / 1.73
fast_retrain               +0.18 +0.39 +0.56 | +0.59 +0.93 +1.00       6/6     0.82 / 0.99
=========================  ==========================================  ======  ===========

(The other lr-5e-3 settings -- 0.1 and 0.3 annealed, 0.1 / 0.3 / 0.5 at 30 epochs -- sit
between their neighbours, 0/6 each; full tables in the logs.)  Every lr-5e-3 setting with
noise <= 0.5 kept both held-out checks in 4-6 of 6 runs but remembered the monocytes; noise 1
constant reached the retrains' mean z only by costing 1.8-5.8% of the other types' held-out
ELBO.  The default (bold: the most passes) passed 0 of 9 on the held-back sets (mean z random
-1.46 / -0.76 / -1.10, CD8+ Cytotoxic T -0.02 / +0.93 / +0.41, NK subset -1.36 / -2.11 /
-3.88; the same-type check failed in 9 of 9), noise 0 with the same arguments 0 of 9,
``fast_retrain`` 2 of 9.  Costs: ``fast_retrain`` 0.12-0.16x a default retrain's wall time,
``langevin`` / ``finetune`` 0.09-0.14x at 20 epochs and 0.12-0.20x at 30.  No setting with a
spread ratio near 1 on both sets passed (the closest, noise 1 annealed at 20 epochs, lr 5e-3:
0/6).  Summary in the Notes of ``scvi_unlearn.unlearn.langevin``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from equivalence_power import markdown, setting
from verdict_grid import grid_parser, run_grid

NOISES = (0.0, 0.3, 1.0, 3.0)
EPOCHS = (20, 30)
ANNEALS = (0.0,)
BASELINES = ("fast_retrain",)


class SpreadRecorder:
    """``on_report`` of :func:`verdict_grid.run_grid`: after each test, keeps the candidate's
    and the references' per-cell ELBO of the forget cells (from the test's
    :class:`~scvi_unlearn.attack.ScoreCache`, so nothing is recomputed), in call order."""

    def __init__(self):
        self.candidates: list[np.ndarray] = []
        self.references: list[np.ndarray] = []

    def __call__(self, rep, model, references, cache) -> None:
        per_cell = rep.per_cell
        names = per_cell.index[per_cell["group"] == "forget"].to_numpy()
        self.candidates.append(cache.scores([model], "forget", names, "elbo")[0])
        self.references.append(cache.scores(list(references), "forget", names, "elbo"))


def spread_table(table: pd.DataFrame, recorder: SpreadRecorder) -> pd.DataFrame:
    """One row per (forget set, method): the two spread ratios (module docstring)."""
    table = table.assign(_run=np.arange(len(table)))
    out = []
    for (set_name, name), g in table.groupby(["forget set", "method"], sort=False):
        runs = np.vstack([recorder.candidates[i] for i in g["_run"]])  # seeds x cells
        refs = recorder.references[int(g["_run"].iloc[0])]  # 5 x cells
        out.append(
            {
                "forget set": set_name,
                "method": name,
                "forget ELBO (runs)": " / ".join(f"{v:.1f}" for v in runs.mean(axis=1)),
                "forget ELBO (retrains)": f"{refs.mean():.1f}",
                "sd of mean (runs)": f"{runs.mean(axis=1).std(ddof=1):.2f}",
                "sd of mean (retrains)": f"{refs.mean(axis=1).std(ddof=1):.2f}",
                "spread ratio (mean)": f"{_ratio(runs.mean(axis=1), refs.mean(axis=1)):.2f}",
                "spread ratio (per cell)": (
                    f"{runs.std(axis=0, ddof=1).mean() / refs.std(axis=0, ddof=1).mean():.2f}"
                ),
            }
        )
    return pd.DataFrame(out)


def _ratio(runs: np.ndarray, refs: np.ndarray) -> float:
    return float(runs.std(ddof=1) / refs.std(ddof=1))


def main() -> None:
    parser = grid_parser(__doc__.splitlines()[0], BASELINES)
    parser.add_argument("--noises", nargs="*", type=float, default=list(NOISES))
    parser.add_argument("--epochs", nargs="*", type=int, default=list(EPOCHS))
    parser.add_argument("--anneals", nargs="*", type=float, default=list(ANNEALS))
    parser.add_argument("--lr", type=float, default=5e-3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    su, adata, model = setting(args.cache, args.threads)
    recorder = SpreadRecorder()
    runs = [
        (
            f"langevin n{n:g} e{e} a{a:g} lr{args.lr:g}",
            model,
            "langevin",
            {"noise": n, "max_epochs": e, "anneal_fraction": a, "lr": args.lr},
        )
        for n in args.noises
        for e in args.epochs
        for a in (args.anneals if n > 0 else (0.0,))
    ]
    table = run_grid(su, adata, model, runs, args, t0, on_report=recorder)
    spread = spread_table(table, recorder)
    print("\n## Calibration: spread of the forget cells' ELBO across seeds vs the retrains'\n")
    print(markdown(spread))
    if args.out:
        path = Path(args.out)
        spread.to_csv(path.with_name(path.stem + "_spread.csv"), index=False)


if __name__ == "__main__":
    main()
