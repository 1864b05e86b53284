"""DP-SGD training of an scVI module through Opacus: the training loop and its accounting.

The machinery behind :func:`scvi_unlearn.unlearn.dp_sgd` and
:func:`scvi_unlearn.unlearn.train_private` (Abadi et al. 2016, "Deep Learning with Differential
Privacy", ACM CCS; Yousefpour et al. 2021, "Opacus: User-Friendly Differential Privacy Library in
PyTorch", arXiv:2109.12298).  What Opacus needs of scVI is listed in the docstring of
:mod:`scvi_unlearn.unlearn.private._dp_sgd` and in ``docs/dp_sgd.md``.  The per-cell loss module
is in
:mod:`scvi_unlearn.unlearn.private._dp_wrapper`, the argument checks in
:mod:`scvi_unlearn.unlearn.private._dp_checks`.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from torch import nn

from scvi_unlearn.unlearn.private._dp_checks import (
    _check_hyperparameters,
    _check_no_batch_norm,
    _device,
)
from scvi_unlearn.unlearn.private._dp_split import clipped_backward, split_is_complete
from scvi_unlearn.unlearn.private._dp_wrapper import PerCellCriterion, PerCellELBO

#: Opacus / torch warnings that do not concern the user: secure_mode off (noise from torch's
#: ordinary generator, see the Notes of :func:`dp_sgd`), the RDP order grid, and full backward
#: hooks firing on module outputs (the inputs are data, which need no gradient)
_OPACUS_NOISE = (
    ".*Secure RNG turned off.*",
    ".*Optimal order is the largest alpha.*",
    ".*Full backward hook is firing.*",
)

#: registry keys that are not per-cell tensors
_SKIP_KEYS = (REGISTRY_KEYS.MINIFY_TYPE_KEY,)


# ---------------------------------------------------------------------------- data
def _keys(manager) -> list[str]:
    keys = [k for k in manager.data_registry if k not in _SKIP_KEYS]
    # X first: its first dimension is the number of cells of the minibatch
    return [REGISTRY_KEYS.X_KEY] + [k for k in keys if k != REGISTRY_KEYS.X_KEY]


def _fetch_batch(dataset, positions: np.ndarray, keys: Sequence[str], device) -> list:
    """Registry tensors of the cells at ``positions`` of the model's AnnData."""
    data = dataset[np.asarray(positions, dtype=int)]
    return [torch.as_tensor(data[k]).to(device) for k in keys]


def _probe_inputs(dataset, keys: Sequence[str], device) -> list[torch.Tensor]:
    """Two synthetic cells (counts 1, first category, zero covariates): a data-independent
    input for finding the parameters that receive a gradient."""
    one = dataset[[0]]
    out = []
    for k in keys:
        ref = torch.as_tensor(one[k])
        fill = 1 if k == REGISTRY_KEYS.X_KEY else 0
        out.append(torch.full((2, *ref.shape[1:]), fill, dtype=ref.dtype, device=device))
    return out


def _freeze_unused(wrapper: PerCellELBO, probe: list[torch.Tensor]) -> list[str]:
    """Freeze the parameters the loss does not reach; return their names."""
    params = [(n, p) for n, p in wrapper.named_parameters() if p.requires_grad]
    with torch.enable_grad(), torch.random.fork_rng(devices=[]):
        loss = wrapper(*probe).sum()
        grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    frozen = []
    for (name, p), g in zip(params, grads):
        if g is None:
            p.requires_grad_(False)
            frozen.append(name.removeprefix("vae."))
    return frozen


def _can_split(wrapper: PerCellELBO, probe: list[torch.Tensor], params: list) -> bool:
    """Whether the loss can be cut at its inputs (``_dp_split``): every differentiable tensor
    of its distributions is one row per cell and no parameter reaches the loss around them."""
    wrapper.split_likelihood = True
    try:
        with torch.enable_grad(), torch.random.fork_rng(devices=[]):
            loss = wrapper(*probe).sum()
            return wrapper.pairs is not None and split_is_complete(loss, params)
    finally:
        wrapper.split_likelihood = False
        wrapper.pairs = None


@contextlib.contextmanager
def _quiet_opacus():
    with warnings.catch_warnings():
        for message in _OPACUS_NOISE:
            warnings.filterwarnings("ignore", message=message)
        yield


# ---------------------------------------------------------------------------- training
def train_dp_module(
    module: nn.Module,
    manager,
    train_indices: np.ndarray,
    *,
    target_epsilon: float = 8.0,
    target_delta: float | None = None,
    max_grad_norm: float = 1.0,
    max_epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-2,
    accountant: str = "prv",
    accelerator: str = "auto",
    enable_progress_bar: bool = False,
    log: list | None = None,
    log_loss: bool = False,
    on_epoch_end: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train a scVI module in place with DP-SGD (Opacus, ghost clipping) on some cells.

    The core of :func:`dp_sgd` and :func:`train_private`: DP-SGD (Abadi et al. 2016) through
    Opacus' ``PrivacyEngine.make_private_with_epsilon`` (Yousefpour et al. 2021) (Poisson
    sampling, ghost clipping, noise calibrated to ``(target_epsilon, target_delta)`` for
    ``max_epochs`` epochs).  Training runs on a deep copy of ``module`` (Opacus attaches hooks
    and attributes to the parameters it trains) whose weights are then loaded into ``module``,
    so ``module`` comes out as a plain scVI module, in eval mode.

    Parameters
    ----------
    module
        A scVI :class:`~scvi.module.VAE` without BatchNorm.
    manager
        The :class:`~scvi.data.AnnDataManager` of the model's AnnData.
    train_indices
        Positions (in the manager's AnnData) of the training cells: the only cells read.
    target_epsilon, target_delta, max_grad_norm, max_epochs, batch_size, lr, accountant, \
accelerator, enable_progress_bar, log_loss
        See :func:`dp_sgd`.
    log
        List to which one dict per epoch is appended (``epoch``, ``step``, and ``loss`` with
        ``log_loss``); the last one also holds ``epsilon`` and ``delta``.
    on_epoch_end
        Optional callable ``f(epoch)`` called after every epoch (used for timing by
        ``python -m benchmarks run dp --config speed``).

    Returns
    -------
    dict
        The privacy accounting: ``epsilon`` (Opacus' accountant for the steps taken, an upper
        bound for ``"prv"``), ``delta``, ``target_epsilon``, ``noise_multiplier``,
        ``sample_rate``, ``steps``, ``epochs``, ``max_grad_norm``, ``expected_batch_size``,
        ``n_train``, ``accountant``, ``grad_sample_mode``, ``poisson_sampling``, ``frozen``
        (parameters that receive no gradient and keep their initial values).

    Raises
    ------
    ValueError
        For a hyper-parameter out of range, a module with BatchNorm, or fewer than 2 cells.
    """
    from opacus import PrivacyEngine
    from scvi.data import AnnTorchDataset

    _check_hyperparameters(
        target_epsilon, target_delta, max_grad_norm, max_epochs, batch_size, lr, accountant
    )
    _check_no_batch_norm(module)
    train_indices = np.asarray(train_indices, dtype=int)
    n = int(train_indices.size)
    if n < 2:
        raise ValueError(f"DP-SGD needs at least 2 training cells, got {n}.")
    delta = float(target_delta) if target_delta is not None else 1.0 / n**2
    device = _device(accelerator)

    keys = _keys(manager)
    dataset = AnnTorchDataset(manager)
    work = copy.deepcopy(module).to(device)
    work.train()  # Opacus records activations only in train mode (dropout stays on)
    wrapper = PerCellELBO(work, keys).to(device)
    probe = _probe_inputs(dataset, keys, device)
    frozen = _freeze_unused(wrapper, probe)
    params = [p for p in wrapper.parameters() if p.requires_grad]
    wrapper.split_likelihood = _can_split(wrapper, probe, params)

    # the loader serves positions into train_indices; Opacus replaces its sampler by Poisson
    # sampling with rate 1 / len(loader) (expected batch size n / ceil(n / batch_size))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(n)), batch_size=min(int(batch_size), n)
    )
    with _quiet_opacus():
        engine = PrivacyEngine(accountant=accountant)
        dp_module, optimizer, criterion, dp_loader = engine.make_private_with_epsilon(
            module=wrapper,
            optimizer=torch.optim.Adam(params, lr=float(lr)),
            criterion=PerCellCriterion("mean"),
            data_loader=loader,
            target_epsilon=float(target_epsilon),
            target_delta=delta,
            epochs=int(max_epochs),
            max_grad_norm=float(max_grad_norm),
            poisson_sampling=True,
            grad_sample_mode="ghost",
        )
    epochs: Any = range(int(max_epochs))
    if enable_progress_bar:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="DP-SGD", unit="epoch")
    step = 0
    try:
        with _quiet_opacus():
            dp_module.train()
            for epoch in epochs:
                total, count = 0.0, 0
                for (positions,) in dp_loader:
                    optimizer.zero_grad(set_to_none=True)
                    if positions.numel() == 0:
                        # an empty Poisson sample is still a step (pure noise), as the
                        # privacy analysis assumes
                        for p in params:
                            p.grad = torch.zeros_like(p)
                        optimizer.step()
                        step += 1
                        continue
                    cells = train_indices[positions.numpy()]
                    per_cell = dp_module(*_fetch_batch(dataset, cells, keys, device))
                    if wrapper.pairs is not None:  # ghost clipping, one likelihood pass
                        clipped_backward(
                            dp_module, optimizer, per_cell, wrapper.pairs, criterion.loss_reduction
                        )
                    else:  # Opacus' ghost clipping: two backward passes over everything
                        criterion(per_cell).backward()
                    optimizer.step()  # clipped sum + Gaussian noise, accountant step
                    step += 1
                    if log_loss:
                        total += float(per_cell.detach().sum())
                        count += int(per_cell.shape[0])
                if log is not None:
                    entry: dict[str, float] = {"epoch": float(epoch), "step": float(step)}
                    if log_loss:
                        entry["loss"] = total / max(count, 1)
                    log.append(entry)
                if on_epoch_end is not None:
                    on_epoch_end(epoch)
    finally:
        dp_module._close()  # remove Opacus' hooks and parameter attributes
    with _quiet_opacus():
        epsilon = float(engine.get_epsilon(delta))
    wrapper.write_back()
    module.load_state_dict(work.state_dict())
    module.eval()
    accounting = {
        "epsilon": epsilon,
        "delta": delta,
        "target_epsilon": float(target_epsilon),
        "noise_multiplier": float(optimizer.noise_multiplier),
        "sample_rate": 1.0 / len(dp_loader),
        "steps": int(step),
        "epochs": int(max_epochs),
        "max_grad_norm": float(max_grad_norm),
        "expected_batch_size": n / len(dp_loader),
        "n_train": n,
        "accountant": accountant,
        "grad_sample_mode": "ghost",
        # 1: the likelihood is differentiated once per step (_dp_split), 2: Opacus' two passes
        "likelihood_passes": 1 if wrapper.split_likelihood else 2,
        "poisson_sampling": True,
        "frozen": frozen,
    }
    if log:
        log[-1]["epsilon"] = epsilon
        log[-1]["delta"] = delta
    return accounting


def _attach_accounting(model, accounting: dict[str, Any]) -> None:
    """Saved attributes (scvi-tools saves every attribute ending in ``_``)."""
    model.dp_epsilon_ = accounting["epsilon"]
    model.dp_delta_ = accounting["delta"]
    model.dp_accounting_ = dict(accounting)


def _warn_library_prior(model) -> None:
    if not getattr(model.module, "use_observed_lib_size", True):
        warnings.warn(
            "use_observed_lib_size=False: the library-size prior (library_log_means / "
            "library_log_vars buffers) is computed by scvi-tools from the model's cells "
            "without noise, so it is not covered by the DP guarantee. Use the observed "
            "library size (the default) for a fully private model.",
            UserWarning,
            stacklevel=3,
        )
