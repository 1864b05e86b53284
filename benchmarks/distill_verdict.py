"""Per-cell retrain-equivalence verdict of ``distill`` against fast_retrain.

The setting of ``equivalence_power.py`` / ``rewind_verdict.py`` (whose cached original and
retrains it reuses): pbmc68k, 30% held out, scVI ``n_latent=10`` trained 200 epochs (seed 0)
on the members; forget = the 22 "CD56+ NK" members and the 90 "CD14+ Monocyte" members; each
run (seeds 0-2) is judged by :func:`scvi_unlearn.attack.equivalence_test` against 5
default-recipe retrains (seeds 0-4) of the cached original (:func:`verdict_grid.run_grid`).
The grid crosses the guard against transferred memory (``--guards``: ``off``, ``knn`` =
neighbour exclusion with ``--neighbors`` k, ``anneal`` = the distillation weight annealed to 0
over the last ``--anneal`` of the budget, ``both``), the budget in epochs (``--epochs``; each
epoch is one pass over the default retain sample, here every retain training cell) and the
distillation weight (``--weights``), at learning rate ``--lr``; ``fast_retrain`` with its
defaults is the baseline.  Every run passes ``on_degradation="warn"``.  Cost = wall time over
that of ``method="retrain"`` (the recorded 200-epoch recipe) on the first forget set, the mean
of two timings in this process (``--retrain-time`` to pass a measured value instead).

The defaults of ``distill`` come from two grids (2026-12-01, 12 + 12 settings, lr 6e-3, k 15,
anneal 0.5)::

    python benchmarks/distill_verdict.py --threads 1 --cache /tmp/eqrefs \
        --out /tmp/distill_verdict1.csv > /tmp/distill_verdict1.log
    python benchmarks/distill_verdict.py --threads 1 --cache /tmp/eqrefs \
        --guards off anneal both --epochs 25 40 --weights 1 3 --baselines \
        --out /tmp/distill_verdict2.csv > /tmp/distill_verdict2.log

and were then checked on three forget sets not used to choose them::

    python benchmarks/distill_verdict.py --threads 1 --cache /tmp/eqrefs \
        --sets "random (50)" "CD8+ Cytotoxic T (38)" "CD56+ NK subset (10)" \
        --guards off anneal both --epochs 25 --weights 1 3 \
        --out /tmp/distill_verdict_oos.csv > /tmp/distill_verdict_oos.log

Results: the docstring of ``scvi_unlearn.unlearn.distill``.
"""

from __future__ import annotations

import time

from equivalence_power import setting
from verdict_grid import grid_parser, run_grid

GUARDS = ("off", "knn", "anneal", "both")
EPOCHS = (10, 20, 30)
WEIGHTS = (1.0,)
BASELINES = ("fast_retrain",)


def guard_kwargs(guard: str, neighbors: int, anneal: float) -> dict:
    """``distill``'s guard hyper-parameters for a guard name of the grid."""
    return {
        "guard_neighbors": neighbors if guard in ("knn", "both") else 0,
        "anneal_fraction": anneal if guard in ("anneal", "both") else 0.0,
    }


def guard_label(guard: str, neighbors: int, anneal: float) -> str:
    """``off``, ``knn{k}``, ``anneal{a}`` or ``knn{k}+anneal{a}``."""
    return {
        "off": "off",
        "knn": f"knn{neighbors}",
        "anneal": f"anneal{anneal:g}",
        "both": f"knn{neighbors}+anneal{anneal:g}",
    }[guard]


def main() -> None:
    parser = grid_parser(__doc__.splitlines()[0], BASELINES)
    parser.add_argument("--guards", nargs="*", default=list(GUARDS), choices=GUARDS)
    parser.add_argument("--epochs", nargs="*", type=int, default=list(EPOCHS))
    parser.add_argument("--weights", nargs="*", type=float, default=list(WEIGHTS))
    parser.add_argument("--lr", type=float, default=6e-3)
    parser.add_argument("--neighbors", type=int, default=15, help="k of the knn guard")
    parser.add_argument("--anneal", type=float, default=0.5, help="anneal_fraction")
    args = parser.parse_args()

    t0 = time.perf_counter()
    su, adata, model = setting(args.cache, args.threads)
    runs = [
        (
            f"distill {guard_label(g, args.neighbors, args.anneal)} e{e} w{w:g} lr{args.lr:g}",
            model,
            "distill",
            {
                "max_epochs": e,
                "distill_weight": w,
                "lr": args.lr,
                **guard_kwargs(g, args.neighbors, args.anneal),
            },
        )
        for g in args.guards
        for e in args.epochs
        for w in args.weights
    ]
    run_grid(su, adata, model, runs, args, t0)


if __name__ == "__main__":
    main()
