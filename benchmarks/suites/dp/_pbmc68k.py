"""``dp_sgd`` on pbmc68k: its held-out ELBO at several epsilons against ``retrain`` and
``fast_retrain`` (``utility``) and the hyper-parameter study behind its defaults (``grid``).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import tempfile
import time

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._settings import FORGET_LABEL, setup

#: the default folder of the cached pbmc68k original (:func:`benchmarks.suites._settings.setup`)
DP_CACHE = os.path.join(tempfile.gettempdir(), "su_dp_speed")

# ---------------------------------------------------------------------------- utility


@dataclasses.dataclass
class UtilityParams(Common):
    """Parameters of the ``utility`` experiment.

    pbmc68k (``membership_split(holdout=0.3, stratify="cell_type", seed=0)``), the original of
    ``docs/unlearning.md`` (default architecture and recipe, 400 epochs, seed 0;
    :func:`benchmarks.suites._settings.setup`), forget = the 22 training "CD56+ NK" cells.
    Mean held-out ELBO (``su.metrics.per_cell_elbo``, 8 draws, seed 0) of the held-out cells
    under: the original, a non-private ``retrain`` (exact recipe), a non-private
    ``fast_retrain``, and ``dp_sgd`` at each of ``epsilons`` (``seeds`` seeds each), with the
    wall time of each call.

    Attributes
    ----------
    epsilons
        Target epsilons of ``dp_sgd``.
    seeds
        Seeds per model.
    cache
        Folder of the cached original.
    """

    epsilons: list[float] = dataclasses.field(default_factory=lambda: [8.0, 1.0])
    seeds: int = 3
    cache: str = DP_CACHE


def _pbmc(cache: str):
    """The pbmc68k setting of the defaults study: ``(original, held-out cells, forget)`` and
    the held-out ELBO (8 draws, seed 0) of a model."""
    from scvi_unlearn.metrics import per_cell_elbo

    os.makedirs(cache, exist_ok=True)
    model, _, heldout, forget = setup(cache, None)

    def heldout_elbo(m) -> float:
        return float(per_cell_elbo(m, heldout, n_draws=8, seed=0)["elbo"].mean())

    return model, heldout, forget, heldout_elbo


@experiment("utility", UtilityParams)
def utility(args: UtilityParams) -> pd.DataFrame:
    """Held-out ELBO of dp_sgd at several epsilons against retrain and fast_retrain (pbmc68k)."""
    model, heldout, forget, heldout_elbo = _pbmc(args.cache)
    print(
        f"pbmc68k: {model.adata.n_obs} members, forget {len(forget)} {FORGET_LABEL!r} cells, "
        f"{heldout.n_obs} held-out cells; original: default architecture and recipe "
        f"({model.train_recipe_['max_epochs']} epochs, seed 0)"
    )
    original = heldout_elbo(model)
    configs = [("retrain", {}), ("fast_retrain", {})]
    configs += [("dp_sgd", {"target_epsilon": eps}) for eps in args.epsilons]
    results: dict[str, list] = {}
    for method, kwargs in configs:
        label = method + (f" eps={kwargs['target_epsilon']:g}" if kwargs else "")
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            new = model.unlearn(
                forget, method=method, seed=seed, enable_progress_bar=False, **kwargs
            )
            elapsed = time.perf_counter() - t0
            eps = getattr(new, "dp_epsilon_", None)
            value = heldout_elbo(new)
            results.setdefault(label, []).append((value, elapsed, eps))
            print(f"  {label} seed {seed}: held-out ELBO {value:.1f}, {elapsed:.1f} s")
    reference = float(np.mean([r[0] for r in results["retrain"]]))
    rows = [
        {
            "model": "original",
            "seeds": "-",
            "held-out ELBO (mean, sd)": f"{original:.1f}",
            "change vs retrain": f"{100 * (original - reference) / abs(reference):+.2f}%",
            "wall time (s)": "-",
            "epsilon (delta = 1/n^2)": "-",
        }
    ]
    for label, runs in results.items():
        values = np.array([r[0] for r in runs])
        eps = [r[2] for r in runs if r[2] is not None]
        rows.append(
            {
                "model": label,
                "seeds": len(runs),
                "held-out ELBO (mean, sd)": f"{values.mean():.1f} ({values.std(ddof=1):.1f})",
                "change vs retrain": f"{100 * (values.mean() - reference) / abs(reference):+.2f}%",
                "wall time (s)": f"{float(np.mean([r[1] for r in runs])):.1f}",
                "epsilon (delta = 1/n^2)": f"{max(eps):.3f}" if eps else "-",
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- grid


@dataclasses.dataclass
class GridParams(Common):
    """Parameters of the ``grid`` experiment.

    The setting of ``utility``; ``dp_sgd`` at epsilon 8 (unless a configuration says
    otherwise) over ``epochs`` x ``batch_sizes`` x ``lrs`` (seed 0), then each of ``extra``
    (seed 0), then each of ``seeded`` at every seed of ``extra_seeds``.  Reported per run: the
    held-out ELBO (8 draws, seed 0), the epsilon spent and the wall time.

    Attributes
    ----------
    epochs
        ``max_epochs`` of the grid.
    batch_sizes
        ``batch_size`` of the grid.
    lrs
        ``lr`` of the grid.
    extra
        Further configurations (``dp_sgd`` keyword arguments) at seed 0.
    seeded
        Configurations run again at ``extra_seeds``.
    extra_seeds
        The seeds of ``seeded``.
    cache
        Folder of the cached original.
    """

    epochs: list[int] = dataclasses.field(default_factory=lambda: [20, 50, 100])
    batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [64, 128, 256])
    lrs: list[float] = dataclasses.field(default_factory=lambda: [1e-3, 3e-3, 1e-2])
    extra: list[dict] = dataclasses.field(default_factory=list)
    seeded: list[dict] = dataclasses.field(default_factory=list)
    extra_seeds: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    cache: str = DP_CACHE


@experiment("grid", GridParams)
def grid(args: GridParams) -> pd.DataFrame:
    """The hyper-parameter study behind dp_sgd's defaults (epsilon 8 unless stated, pbmc68k)."""
    model, _, forget, heldout_elbo = _pbmc(args.cache)
    rows = []

    def run(seed: int, config: dict) -> None:
        kwargs = {"target_epsilon": 8.0, **config}
        t0 = time.perf_counter()
        new = model.unlearn(
            forget, method="dp_sgd", seed=seed, enable_progress_bar=False, **kwargs
        )
        elapsed = time.perf_counter() - t0
        text = ", ".join(
            f"{k}={v:g}" if not isinstance(v, str) else f"{k}={v}" for k, v in kwargs.items()
        )
        rows.append(
            {
                "seed": seed,
                "configuration": text,
                "held-out ELBO": f"{heldout_elbo(new):.1f}",
                "epsilon": f"{new.dp_epsilon_:.3f}",
                "wall time (s)": f"{elapsed:.1f}",
            }
        )
        print(rows[-1], flush=True)

    for epochs, batch, lr in itertools.product(args.epochs, args.batch_sizes, args.lrs):
        run(0, {"max_epochs": epochs, "batch_size": batch, "lr": lr})
    for config in args.extra:
        run(0, config)
    for config in args.seeded:
        for seed in args.extra_seeds:
            run(seed, config)
    return pd.DataFrame(rows)
