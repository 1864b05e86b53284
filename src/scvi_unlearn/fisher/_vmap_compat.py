"""Context managers that let :func:`torch.func.vmap` batch scvi-tools' forward pass.

Entered by :func:`~scvi_unlearn.fisher.squared_gradient_mean` for the whole estimation (its
vmap route needs them): argument validation of ``torch.distributions`` is switched off and
``one_hot`` is replaced by a comparison, both of which would otherwise need data-dependent
control flow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def _no_distribution_validation() -> Iterator[None]:
    """Disable torch.distributions argument checks (data-dependent control flow breaks vmap)."""
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)


def _batchable_one_hot(tensor: torch.Tensor, num_classes: int = -1) -> torch.Tensor:
    """``one_hot`` without the data-dependent range checks that :func:`torch.func.vmap` rejects."""
    if num_classes < 0:
        return _ORIGINAL_ONE_HOT(tensor, num_classes)
    classes = torch.arange(num_classes, device=tensor.device)
    return (tensor.unsqueeze(-1) == classes).long()


_ORIGINAL_ONE_HOT = torch.nn.functional.one_hot


@contextlib.contextmanager
def _vmap_compatible_one_hot() -> Iterator[None]:
    """Swap ``one_hot`` (in torch.nn.functional and scvi modules importing it) while vmapping.

    scvi-tools one-hot encodes batch / label indices (covariate injection, ``gene-batch`` and
    ``gene-label`` dispersion, library-size priors); torch's ``one_hot`` validates the index
    range with data-dependent checks, which vmap cannot batch.  The replacement computes the
    same tensor by comparison.  Everything is restored on exit.
    """
    import sys

    patched = [(torch.nn.functional, "one_hot")]
    for name, mod in list(sys.modules.items()):
        if name.startswith("scvi.") and getattr(mod, "one_hot", None) is _ORIGINAL_ONE_HOT:
            patched.append((mod, "one_hot"))
    for mod, attr in patched:
        setattr(mod, attr, _batchable_one_hot)
    try:
        yield
    finally:
        for mod, attr in patched:
            setattr(mod, attr, _ORIGINAL_ONE_HOT)
