"""The ``speed`` experiment: a DP-SGD epoch against a non-private epoch on simulated data, and
the epsilon check (:func:`epsilon_check`).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment

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
