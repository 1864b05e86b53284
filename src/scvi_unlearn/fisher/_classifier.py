"""The classifier control: an MLP predicting the cell type from the same cells as the VAE.

The study's explanation for why unlearning fails in VAEs is that forget and retain cells share
the decoder's Fisher information far more than they share a classifier's.  To test this with a
fair control, the classifier mirrors the VAE encoder (same input transform ``log1p``, same
number and width of hidden layers, same normalisation and dropout) and adds one
class-specific output layer; its Fisher is computed with the *same* per-sample estimator
(:func:`~scvi_unlearn.fisher.squared_gradient_mean`) on the same cells.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scvi.nn import FCLayers
from torch import nn
from torch.nn import functional as F

from scvi_unlearn._seeding import isolated_seed

#: Categories of classifier parameters and the VAE category each is compared with.
CLASSIFIER_COMPARABLE = {"encoder": "encoder", "output": "decoder output"}


class CellTypeClassifier(nn.Module):
    """MLP ``log1p(counts) -> hidden layers -> logits`` mirroring an scVI encoder.

    Parameters
    ----------
    n_input
        Number of genes.
    n_classes
        Number of cell types.
    n_hidden, n_layers, dropout_rate, use_batch_norm, use_layer_norm
        As in the VAE encoder (:class:`scvi.nn.FCLayers`).
    """

    def __init__(
        self,
        n_input: int,
        n_classes: int,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        use_batch_norm: bool = True,
        use_layer_norm: bool = False,
    ):
        super().__init__()
        self.n_classes = n_classes
        self.encoder = FCLayers(
            n_in=n_input,
            n_out=n_hidden,
            n_layers=n_layers,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
            use_batch_norm=use_batch_norm,
            use_layer_norm=use_layer_norm,
        )
        self.output = nn.Linear(n_hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(n, n_classes)`` for counts ``x`` of shape ``(n, n_input)``."""
        return self.output(self.encoder(torch.log1p(x)))


def classifier_cell_loss(module: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-cell cross-entropy of the true label (``inputs["X"]`` counts, ``inputs["y"]``)."""
    return F.cross_entropy(module(inputs["X"]), inputs["y"], reduction="none")


def classifier_category(name: str) -> str:
    """``encoder`` (shared hidden layers) or ``output`` (class-specific output layer)."""
    return "output" if name.startswith("output.") else "encoder"


def encoder_architecture(vae_module: nn.Module) -> dict:
    """Hidden sizes, depth, normalisation and dropout of an scVI module's ``z_encoder``."""
    layers = vae_module.z_encoder.encoder.fc_layers
    linears = [m for m in layers.modules() if isinstance(m, nn.Linear)]
    dropouts = [m.p for m in layers.modules() if isinstance(m, nn.Dropout)]
    return {
        "n_hidden": linears[0].out_features,
        "n_layers": len(linears),
        "dropout_rate": dropouts[0] if dropouts else 0.0,
        "use_batch_norm": any(isinstance(m, nn.BatchNorm1d) for m in layers.modules()),
        "use_layer_norm": any(isinstance(m, nn.LayerNorm) for m in layers.modules()),
    }


def train_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    *,
    max_epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    seed: int = 0,
    **architecture,
) -> tuple[CellTypeClassifier, dict]:
    """Train a :class:`CellTypeClassifier` with Adam on cross-entropy, reproducibly.

    Initialisation, shuffling and dropout draw from generators seeded by ``seed`` inside
    :func:`~scvi_unlearn._seeding.isolated_seed` (the caller's global RNG is restored).

    Returns
    -------
    The classifier (in eval mode) and a record with the training accuracy and final loss.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} cells but y has {y.shape[0]} labels.")
    if x.shape[0] < 2:
        raise ValueError("The classifier needs at least two cells.")
    x = x.float()
    y = y.long()
    with isolated_seed(seed), torch.enable_grad():
        clf = CellTypeClassifier(x.shape[1], n_classes, **architecture)
        opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        clf.train()
        loss = torch.tensor(float("nan"))
        for _ in range(max_epochs):
            order = torch.randperm(x.shape[0], generator=gen)
            for start in range(0, x.shape[0], batch_size):
                idx = order[start : start + batch_size]
                if (
                    idx.numel() < 2
                    and clf.encoder.fc_layers
                    and architecture.get("use_batch_norm", True)
                ):
                    continue  # BatchNorm cannot train on a single cell
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(clf(x[idx]), y[idx])
                loss.backward()
                opt.step()
    clf.eval()
    clf.requires_grad_(False)
    with torch.no_grad():
        accuracy = float((clf(x).argmax(1) == y).double().mean())
    record = {"train_accuracy": accuracy, "final_loss": float(loss.detach()), "seed": seed}
    return clf, record


def labels_as_codes(labels) -> tuple[np.ndarray, list[str]]:
    """Integer codes and class names of a label array (categorical order if categorical)."""
    import pandas as pd

    cat = pd.Categorical(labels)
    if (cat.codes < 0).any():
        raise ValueError("The cell-type labels contain missing values.")
    return cat.codes.astype(np.int64), [str(c) for c in cat.categories]
