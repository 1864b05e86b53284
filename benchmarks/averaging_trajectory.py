"""When fast_retrain's weight average reaches the original's fit, by time constant.

On simulated data (``scale_verdict.simulated_setting``: ``--cells`` cells x ``--genes`` genes,
the original trained with scvi-tools' recipe and epoch heuristic, seed 0, cached in ``--cache``)
``fast_retrain`` is trained for ``--epochs`` epochs on the members less a forget set (50 random
members, or the "CD56+ NK" members with ``--set nk``; seed 0, no fit matching).  A callback keeps
exponential moving averages of the weights with time constants of ``--taus`` optimizer steps
(besides the method's own average, 3 epochs capped at ``max_average_steps``) and scores, every
``1 / --checks`` of an epoch, the mean ELBO on the retain validation cells that fit matching
scores (4 seeded draws) of the current weights and of every average.  Printed: the trace, and
for each the first check at which it reaches the original's ELBO on the same cells, the target
``match_fit`` stops at.  No verdict: this shows how far behind the weights an average lags.

    python benchmarks/averaging_trajectory.py --threads 1 --cells 100000 \\
        --cache /tmp/scale_refs_100k --epochs 10 --checks 4
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
from equivalence_power import markdown
from lightning.pytorch.callbacks import Callback
from scale_verdict import simulated_setting
from scaling import quiet


class AverageTrace(Callback):
    """Every ``1 / checks`` of an epoch, the validation ELBO of the weights and their averages.

    Takes the method's own fit-matching callback (for its cells and target, which it sets out of
    reach so that training runs the given epochs) and its averaging callback.
    """

    def __init__(self, taus: list[float], checks: int):
        self.taus, self.checks = taus, checks
        self.rows: list[dict] = []

    def on_train_start(self, trainer, pl_module) -> None:
        from scvi_unlearn.unlearn.core._averaging import ExponentialAveraging, exponential_average
        from scvi_unlearn.unlearn.core._fit_match import FitMatchStopping

        self.stopper = next(c for c in trainer.callbacks if isinstance(c, FitMatchStopping))
        self.own = next(c for c in trainer.callbacks if isinstance(c, ExponentialAveraging))
        self.target, self.stopper.target = self.stopper.target, math.inf
        self.per_epoch = int(trainer.num_training_batches)
        self.every = max(1, self.per_epoch // self.checks)
        self.averages = {tau: exponential_average(pl_module.module, tau) for tau in self.taus}
        self.step, self.t0 = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from scvi_unlearn.unlearn.core._guard import mean_elbo

        self.step += 1
        for average in self.averages.values():
            average.update_parameters(pl_module.module)
        if self.step % self.every:
            return
        modules = {"weights": pl_module.module}
        modules |= {f"{tau:g} steps": a.module for tau, a in self.averages.items()}
        modules["method's average"] = self.own.module
        row = {"step": self.step, "epoch": round(self.step / self.per_epoch, 2)}
        for name, module in modules.items():
            row[name] = mean_elbo(module, self.stopper.manager, self.stopper.cells)
        self.rows.append(row)
        print({k: round(v, 2) for k, v in row.items()}, f"({time.perf_counter() - self.t0:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--cache", required=True, help="folder of the original")
    parser.add_argument("--set", choices=("random", "nk"), default="random")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--checks", type=int, default=4, help="scores an epoch")
    parser.add_argument("--taus", type=float, nargs="*", default=[30, 60, 100, 300])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default=None, help="CSV of the trace")
    args = parser.parse_args()
    quiet(args.threads)
    cache = Path(args.cache)
    su, adata, model = simulated_setting(args.cells, args.genes, cache)
    if args.set == "nk":
        forget = su.data.forget_by_label(adata, "CD56+ NK")
    else:
        forget = su.data.forget_random(adata, 50, seed=0)
    trace = AverageTrace(args.taus, args.checks)
    model.unlearn(forget, method="fast_retrain", seed=0, max_epochs=args.epochs, callbacks=[trace])
    table = pd.DataFrame(trace.rows)
    if args.out:
        table.to_csv(args.out, index=False)
    print(
        f"\n{args.cells} cells, {args.set} set: {trace.per_epoch} steps an epoch, target "
        f"{trace.target:.2f} (the original's ELBO on the {trace.stopper.cells.size} cells)"
    )
    first = []
    for column in table.columns[2:]:
        reached = table.loc[table[column] >= trace.target, "epoch"]
        first.append(
            {
                "scored": column,
                "first epoch at the target": reached.iloc[0] if len(reached) else "not reached",
            }
        )
    print(markdown(pd.DataFrame(first)))


if __name__ == "__main__":
    main()
