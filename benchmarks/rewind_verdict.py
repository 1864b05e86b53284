"""Per-cell retrain-equivalence verdict of ``rewind`` against fast_retrain.

The setting of ``equivalence_power.py`` / ``reinit_verdict.py`` (whose cached retrains it
reuses): pbmc68k, 30% held out, scVI ``n_latent=10`` trained 200 epochs (seed 0) on the
members; forget = the 22 "CD56+ NK" members and the 90 "CD14+ Monocyte" members; each run
(seeds 0-2) is judged by :func:`scvi_unlearn.attack.equivalence_test` against 5 default-recipe
retrains (seeds 0-4) of the cached original.  ``rewind`` needs a checkpoint, so the original is
trained again for each checkpoint epoch ``k`` (``--rewind-epochs``) with
``train(..., rewind_epoch=k)`` (cached in ``--cache`` as ``original_rewind{k}``); its weights
are compared with the cached original's (a checkpoint must not change training).  Each ``k``
is crossed with the fast-schedule epochs ``--epochs`` and learning rates ``--lr``;
``fast_retrain`` with its defaults is the baseline.  Every run passes
``on_degradation="warn"``.  Cost = wall time over the wall time of ``method="retrain"`` (the
recorded 200-epoch recipe) on the first forget set, the mean of two timings in this process, at
the start and at the end (``--retrain-time`` to pass a measured value instead).

    python benchmarks/rewind_verdict.py --threads 1 --cache /tmp/eqrefs

The defaults of ``rewind`` come from that grid and three more (2026-11-30, 48 settings)::

    python benchmarks/rewind_verdict.py --threads 1 --cache /tmp/eqrefs \
        --rewind-epochs 20 40 100 --epochs 10 15 20 --lr 1.2e-2 5e-3 2e-3
    python benchmarks/rewind_verdict.py --threads 1 --cache /tmp/eqrefs \
        --rewind-epochs 60 100 --epochs 8 10 --lr 8e-3 6e-3 --baselines
    python benchmarks/rewind_verdict.py --threads 1 --cache /tmp/eqrefs \
        --rewind-epochs 60 80 --epochs 12 15 --lr 6e-3 5e-3 --baselines

and were then checked on three forget sets not used to choose them::

    python benchmarks/rewind_verdict.py --threads 1 --cache /tmp/eqrefs \
        --sets "random (50)" "CD8+ Cytotoxic T (38)" "CD56+ NK subset (10)" \
        --rewind-epochs 80 --epochs 12 --lr 5e-3

Results: the docstring of ``scvi_unlearn.unlearn.rewind``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from equivalence_power import setting
from verdict_grid import grid_parser, run_grid

REWIND_EPOCHS = (10, 20, 40)
EPOCHS = (5, 10, 15)
LRS = (1.2e-2,)
BASELINES = ("fast_retrain",)


def rewound_original(su, adata, cache: str, k: int, reference):
    """The 200-epoch original (seed 0) trained with a checkpoint after ``k`` epochs: loaded
    from ``cache/original_rewind{k}`` or trained and saved there; prints whether its weights
    equal ``reference``'s."""
    from scvi_unlearn.benchmark._runner import train_original

    path = Path(cache) / f"original_rewind{k}"
    if path.exists():
        model = su.SCVI.load(str(path))
    else:
        model = train_original(adata, train_kwargs={"max_epochs": 200, "rewind_epoch": k}, seed=0)
        model.save(str(path), save_anndata=True)
    ours, ref = model.module.state_dict(), reference.module.state_dict()
    diff = max(float((ours[n].double() - ref[n].double()).abs().max()) for n in ref)
    same = ours.keys() == ref.keys() and all(torch.equal(ours[n], ref[n]) for n in ref)
    verdict = "equal" if same else "DIFFER"
    print(
        f"original with rewind_epoch={k}: weights {verdict} to the cached original's (max "
        f"|diff| {diff:.3g}); checkpoint epoch {model.rewind_checkpoint_['epoch']}",
        flush=True,
    )
    return model


def main() -> None:
    parser = grid_parser(__doc__.splitlines()[0], BASELINES)
    parser.add_argument("--rewind-epochs", nargs="*", type=int, default=list(REWIND_EPOCHS))
    parser.add_argument("--epochs", nargs="*", type=int, default=list(EPOCHS))
    parser.add_argument("--lr", nargs="*", type=float, default=list(LRS))
    args = parser.parse_args()

    t0 = time.perf_counter()
    su, adata, model = setting(args.cache, args.threads)
    originals = {k: rewound_original(su, adata, args.cache, k, model) for k in args.rewind_epochs}
    runs = [
        (f"rewind k{k} e{e} lr{lr:g}", originals[k], "rewind", {"max_epochs": e, "lr": lr})
        for k in args.rewind_epochs
        for e in args.epochs
        for lr in args.lr
    ]
    run_grid(su, adata, model, runs, args, t0)


if __name__ == "__main__":
    main()
