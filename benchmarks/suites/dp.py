"""DP speed: cost, privacy accounting and utility of the ``dp_sgd`` unlearning method.

Experiments:

* ``speed``: a DP-SGD epoch against a non-private epoch on simulated data, and the epsilon
  check (the reported epsilon recomputed by a fresh accountant);
* ``utility``: held-out ELBO of ``dp_sgd`` at several epsilons against ``retrain`` and
  ``fast_retrain`` on pbmc68k;
* ``grid``: the hyper-parameter study behind ``dp_sgd``'s defaults on pbmc68k (the grid is the
  config's data).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import statistics
import tempfile
import time

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._settings import FORGET_LABEL, setup

#: the default folder of the cached pbmc68k original (:func:`benchmarks.suites._settings.setup`)
DP_CACHE = os.path.join(tempfile.gettempdir(), "su_dp_speed")

# ---------------------------------------------------------------------------- speed


@dataclasses.dataclass
class SpeedParams(Common):
    """Parameters of the ``speed`` experiment.

    ``su.data.simulate(cells, genes, random_state=0)``, an ``su.SCVI`` with LayerNorm
    (``use_batch_norm="none", use_layer_norm="both"``, otherwise the default architecture).
    It times, in one process and interleaved (DP, plain, DP, plain, ...) so that both see the
    same machine load:

    * a **DP epoch**: one epoch of
      :func:`scvi_unlearn.unlearn.private._dp_training.train_dp_module` (Opacus, ghost clipping
      with the likelihood differentiated once per step (``_dp_split``), Poisson sampling at
      rate ``1 / ceil(n / batch)``, Adam), timed by its ``on_epoch_end`` callback, so the
      one-off accountant calibration is excluded (reported apart);
    * a **plain epoch**: the same model, the same per-cell loss (:class:`PerCellELBO`), the
      same minibatch fetching and Adam, shuffled minibatches of the same size, ordinary
      backward;
    * for context, one epoch of scvi-tools' own ``model.train`` (Lightning) on the same model.

    Reported: the median epoch times over ``repeats`` epochs of each and their ratios.  The
    **epsilon check**: after the DP run, epsilon recomputed from a fresh Opacus accountant of
    the same kind, fed the noise multiplier, sample rate and number of steps actually taken,
    and with the other accountant (RDP vs PRV) for comparison; the reported epsilon must equal
    the first and be <= the target.

    Attributes
    ----------
    cells
        Cells simulated.
    genes
        Genes simulated.
    batch
        Minibatch size.
    repeats
        Repeats (median).
    epsilon
        Target epsilon of the DP run.
    accountant
        Opacus accountant (``"prv"`` or ``"rdp"``).
    """

    cells: int = 5000
    genes: int = 2000
    batch: int = 256
    repeats: int = 5
    epsilon: float = 8.0
    accountant: str = "prv"


class _EpochClock:
    """``on_epoch_end`` callback: wall time of every epoch after the first (warm-up)."""

    def __init__(self):
        self.last: float | None = None
        self.times: list[float] = []

    def __call__(self, epoch) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now


def plain_epochs(module, manager, train_indices, *, batch_size, lr, epochs, loss, on_epoch_end):
    """Non-private epochs with the DP loop's data path and optimiser.

    ``loss="scvi"``: scvi-tools' own loss (``module(tensors)``, mean negative ELBO, KL weight
    1); ``loss="wrapper"``: the mean of :class:`PerCellELBO`'s per-cell losses (the DP loop's
    loss, with the per-cell dispersion).
    """
    import torch
    from scvi.data import AnnTorchDataset

    from scvi_unlearn.unlearn.private._dp_training import (
        PerCellELBO,
        _fetch_batch,
        _freeze_unused,
        _keys,
        _probe_inputs,
    )

    keys = _keys(manager)
    dataset = AnnTorchDataset(manager)
    work = copy.deepcopy(module)
    work.train()
    wrapper = PerCellELBO(work, keys)
    if loss == "scvi":
        wrapper.write_back()  # px_r back in the VAE, trained by broadcasting as usual
        wrapper.dispersion = None
    _freeze_unused(wrapper, _probe_inputs(dataset, keys, "cpu"))
    params = [p for p in wrapper.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    n = len(train_indices)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(n)), batch_size=batch_size, shuffle=True
    )
    for epoch in range(epochs):
        for (positions,) in loader:
            optimizer.zero_grad(set_to_none=True)
            inputs = _fetch_batch(dataset, train_indices[positions.numpy()], keys, "cpu")
            if loss == "scvi":
                _, _, out = work(dict(zip(keys, inputs)))
                value = out.loss
            else:
                value = wrapper(*inputs).mean()
            value.backward()
            optimizer.step()
        on_epoch_end(epoch)


@experiment("speed", SpeedParams)
def speed(args: SpeedParams) -> dict[str, pd.DataFrame]:
    """A DP-SGD epoch against a non-private epoch (medians, interleaved) and the epsilon check."""
    import torch

    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed
    from scvi_unlearn.unlearn.private._dp_sgd import LAYER_NORM
    from scvi_unlearn.unlearn.private._dp_training import train_dp_module

    adata = su.data.simulate(args.cells, args.genes, random_state=0)
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    with isolated_seed(0):
        model = su.SCVI(adata, **LAYER_NORM)
    manager = model.adata_manager
    train = np.arange(adata.n_obs)
    print(
        f"data: {adata.n_obs} cells x {adata.n_vars} genes; LayerNorm scVI (n_hidden 128, "
        f"n_latent 10, zinb, dispersion 'gene'); batch {args.batch}; torch threads "
        f"{torch.get_num_threads()}; {args.repeats} repeats, median"
    )
    times: dict[str, list[float]] = {"dp": [], "scvi": [], "wrapper": [], "lightning": []}
    setup_times: list[float] = []
    accounting = None
    for r in range(args.repeats):
        with isolated_seed(r):
            clock = _EpochClock()
            t0 = time.perf_counter()
            accounting = train_dp_module(
                copy.deepcopy(model.module),
                manager,
                train,
                target_epsilon=args.epsilon,
                max_epochs=2,
                batch_size=args.batch,
                lr=3e-3,
                accountant=args.accountant,
                accelerator="cpu",
                enable_progress_bar=False,
                on_epoch_end=clock,
            )
            total = time.perf_counter() - t0
        times["dp"] += clock.times
        # the rest of the call: Opacus' noise calibration, the final epsilon, copies
        setup_times.append(total - 2 * clock.times[-1])
        for loss in ("scvi", "wrapper"):
            with isolated_seed(r):
                clock = _EpochClock()
                plain_epochs(
                    copy.deepcopy(model.module),
                    manager,
                    train,
                    batch_size=args.batch,
                    lr=3e-3,
                    epochs=2,
                    loss=loss,
                    on_epoch_end=clock,
                )
            times[loss] += clock.times
        # scvi-tools' own training (Lightning), per epoch: (T(3 epochs) - T(1 epoch)) / 2
        spans = []
        for epochs in (1, 3):
            with isolated_seed(r):
                m = su.SCVI(adata, **LAYER_NORM)
                t0 = time.perf_counter()
                m.train(
                    max_epochs=epochs,
                    batch_size=args.batch,
                    train_size=1.0,
                    enable_progress_bar=False,
                    accelerator="cpu",
                    plan_kwargs={"n_epochs_kl_warmup": None},
                )
                spans.append(time.perf_counter() - t0)
        times["lightning"].append((spans[1] - spans[0]) / 2)
        print(
            f"  repeat {r}: DP {times['dp'][-1]:.2f} s, plain (scvi loss) "
            f"{times['scvi'][-1]:.2f} s, plain (wrapper) {times['wrapper'][-1]:.2f} s, "
            f"Lightning {times['lightning'][-1]:.2f} s per epoch"
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    labels = (
        ("dp", "DP-SGD: ghost clipping (one likelihood pass), Poisson sampling"),
        ("scvi", "plain loop, scvi-tools loss (same data path, Adam)"),
        ("wrapper", "plain loop, the DP loss wrapper (per-cell dispersion)"),
        ("lightning", "scvi-tools `model.train` (Lightning)"),
    )
    epochs_table = pd.DataFrame(
        {
            "epoch (LayerNorm scVI)": label,
            "median time (s)": f"{med[key]:.2f}",
            "DP / this": f"{med['dp'] / med[key]:.2f}x",
        }
        for key, label in labels
    )
    print(
        f"DP epoch / non-private epoch (plain loop, scvi-tools loss): "
        f"{med['dp'] / med['scvi']:.2f}x; one-off cost per DP run (noise calibration + final "
        f"epsilon): {statistics.median(setup_times):.2f} s"
    )
    return {"epoch time": epochs_table, "epsilon check": epsilon_check(accounting)}


def epsilon_check(acc: dict) -> pd.DataFrame:
    """The reported epsilon against a fresh accountant of the same kind and of the other."""
    from opacus.accountants import create_accountant

    print(
        f"accounting: sigma {acc['noise_multiplier']:.4f}, q {acc['sample_rate']:.5f}, "
        f"steps {acc['steps']}, delta {acc['delta']:.3g}, target epsilon {acc['target_epsilon']}"
    )
    history = [(acc["noise_multiplier"], acc["sample_rate"], acc["steps"])]
    same = create_accountant(acc["accountant"])
    same.history = list(history)
    eps_same = same.get_epsilon(acc["delta"])
    other_name = "rdp" if acc["accountant"] != "rdp" else "prv"
    other = create_accountant(other_name)
    other.history = list(history)
    eps_other = other.get_epsilon(acc["delta"])
    ok = abs(eps_same - acc["epsilon"]) <= 1e-9 * max(1.0, eps_same)
    return pd.DataFrame(
        [
            {"epsilon": f"reported ({acc['accountant']})", "value": f"{acc['epsilon']:.6f}"},
            {"epsilon": f"recomputed, fresh {acc['accountant']}", "value": f"{eps_same:.6f}"},
            {"epsilon": f"recomputed, {other_name}", "value": f"{eps_other:.6f}"},
            {"epsilon": "match", "value": str(ok)},
            {
                "epsilon": "reported <= target",
                "value": str(acc["epsilon"] <= acc["target_epsilon"]),
            },
        ]
    )


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
