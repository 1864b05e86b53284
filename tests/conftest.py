"""Shared fixtures: the offline PBMC data and a small trained model (session-scoped, read-only).

Tests that need to change a model or an AnnData must copy it first; fixtures are shared.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

# The test models are tiny: one intra-op thread is as fast on 2 cores and far faster when the
# machine is shared (OpenMP spin-waiting across oversubscribed cores costs 10-25x).
torch.set_num_threads(1)


def load_script(name: str):
    """``scripts/<name>.py`` of the repository (not a package), imported as a module."""
    path = Path(__file__).parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: rare cell type used as the structured forget set in tests (31 cells in pbmc68k_reduced)
FORGET_LABEL = "CD56+ NK"


@pytest.fixture(scope="session")
def pbmc():
    """pbmc68k with integer counts and a stratified membership split (holdout 0.3, seed 0)."""
    import scvi_unlearn as su

    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    return adata


@pytest.fixture(scope="session")
def pbmc_train(pbmc):
    """Training members only, registered with ``su.SCVI`` (counts layer, cell-type labels)."""
    import scvi_unlearn as su

    adata = pbmc[pbmc.obs["membership"] == "train"].copy()
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    return adata


@pytest.fixture
def fresh_train(pbmc_train):
    """A private copy of ``pbmc_train`` registered under its own AnnData uuid.

    A plain ``.copy()`` keeps the uuid, so registering it takes over ``pbmc_train``'s entry in
    scvi-tools' class-level registry, and a later ``su.SCVI(pbmc_train)`` fails ("does not
    match the AnnData object previously provided"): tests that build their own model use this.
    """
    from scvi.data._constants import _SCVI_UUID_KEY

    import scvi_unlearn as su

    adata = pbmc_train.copy()
    adata.uns.pop(_SCVI_UUID_KEY, None)
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    return adata


def small_model(adata, max_epochs: int = 30):
    """The tests' small su.SCVI on ``adata`` (registered), trained ``max_epochs`` epochs with
    seed 0, 90% / 10% train / validation, no progress bar."""
    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed

    with isolated_seed(0):
        model = su.SCVI(adata, n_latent=10, n_hidden=64)
        model.train(max_epochs=max_epochs, enable_progress_bar=False, train_size=0.9)
    return model


@pytest.fixture(scope="session")
def trained_model(pbmc_train):
    """A small su.SCVI trained 30 epochs on the training members (seeded, no progress bar)."""
    return small_model(pbmc_train)


@pytest.fixture(scope="session")
def forget_names(pbmc):
    """obs_names of the training members of the rare cell type."""
    import scvi_unlearn as su

    return su.data.forget_by_label(pbmc, FORGET_LABEL)


def forget_advantage(model, pbmc, forget_names) -> float:
    """Mean ELBO of the forget cells minus that of the held-out cells of the other types under
    ``model``: how much better the model fits the forget cells than unseen cells.  Methods that
    train a fresh model are judged by it rather than by absolute ELBOs (a fast schedule can be
    better everywhere than the 30-epoch fixture model)."""
    from scvi_unlearn.metrics import per_cell_elbo

    heldout = pbmc[(pbmc.obs["membership"] == "heldout").to_numpy()]
    other = heldout[heldout.obs["cell_type"] != FORGET_LABEL].copy()
    cells = pbmc[list(forget_names)].copy()
    return float(
        per_cell_elbo(model, cells)["elbo"].mean() - per_cell_elbo(model, other)["elbo"].mean()
    )


def module_state(model) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer of ``model.module``."""
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    """Whether two :func:`module_state` copies are equal, key for key, bit for bit."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def dense(x):
    """A dense numpy array of a (sparse or dense) matrix."""
    import numpy as np

    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)
