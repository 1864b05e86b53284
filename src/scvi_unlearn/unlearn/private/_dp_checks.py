"""Argument checks of DP-SGD training, shared by the loop and :func:`~scvi_unlearn.unlearn.dp_sgd`.

Hyper-parameter ranges and the accountant (:func:`_check_hyperparameters`), a module without
BatchNorm (:func:`_check_no_batch_norm`) and the device of an ``accelerator`` (:func:`_device`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

#: accountants of Opacus' ``PrivacyEngine`` accepted here
ACCOUNTANTS = ("prv", "rdp", "gdp")


def _check_hyperparameters(
    target_epsilon, target_delta, max_grad_norm, max_epochs, batch_size, lr, accountant
) -> None:
    def real(value) -> bool:
        return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        )

    if not real(target_epsilon) or not math.isfinite(target_epsilon) or target_epsilon <= 0:
        raise ValueError(
            f"target_epsilon must be a finite number > 0, got {target_epsilon!r} (epsilon is "
            "the privacy budget; smaller is more private, typical values 1-10)."
        )
    if target_delta is not None and (
        not real(target_delta) or not math.isfinite(target_delta) or not 0 < target_delta < 1
    ):
        raise ValueError(
            f"target_delta must be in (0, 1) or None (1 / n^2 for n training cells), got "
            f"{target_delta!r}; it should be well below 1 / n."
        )
    if not real(max_grad_norm) or not math.isfinite(max_grad_norm) or max_grad_norm <= 0:
        raise ValueError(
            f"max_grad_norm must be a finite number > 0 (the per-cell clipping norm), got "
            f"{max_grad_norm!r}."
        )
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int | np.integer):
        raise ValueError(f"max_epochs must be an integer >= 1, got {max_epochs!r}.")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if not real(lr) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}.")
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}.")


def _check_no_batch_norm(module: nn.Module) -> None:
    bad = [n for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    if bad:
        raise ValueError(
            f"DP-SGD needs a model without BatchNorm (found {bad[:3]}): BatchNorm mixes the "
            "cells of a minibatch, so a per-cell gradient is not defined. Build the model "
            "with use_batch_norm='none', use_layer_norm='both'."
        )


def _device(accelerator: str) -> torch.device:
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if accelerator in ("gpu", "cuda"):
        return torch.device("cuda")
    if accelerator in ("cpu", "mps"):
        return torch.device(accelerator)
    raise ValueError(
        f"accelerator must be 'auto', 'cpu', 'gpu', 'cuda' or 'mps', got {accelerator!r}."
    )
