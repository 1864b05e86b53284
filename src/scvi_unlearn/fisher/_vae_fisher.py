"""Per-sample diagonal Fisher of scVI's negative ELBO, with fixed posterior noise.

The per-cell loss is scVI's negative ELBO with ``kl_weight=1``,

.. math:: \\ell_i(\\theta) = \\frac{1}{K}\\sum_{k=1}^{K}
   \\left[-\\log p_\\theta(x_i \\mid z_{ik}, l_i) \\right]
   + \\mathrm{KL}(q_\\phi(z \\mid x_i) \\,\\|\\, p(z)) + \\mathrm{KL}_l ,

with :math:`z_{ik} = g(\\mu_\\phi(x_i) + \\sigma_\\phi(x_i)\\,\\varepsilon_{ik})` (the
reparameterisation of :cite:p:`Kingma14`, :math:`g` the model's ``z_transformation``) and the
noise :math:`\\varepsilon_{ik}` drawn once from ``torch.Generator().manual_seed(seed)``, so the
loss is a deterministic function of the parameters and the global RNG is untouched.  With
``use_observed_lib_size=False`` the library size is reparameterised the same way.  The
Fisher is that of the *averaged* loss: gradients are averaged over the ``K`` draws first and
then squared (the empirical Fisher of :math:`\\ell_i`), not the mean of squared per-draw
gradients.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from torch import nn

from scvi_unlearn._evaluation import evaluation_adata
from scvi_unlearn.fisher._per_sample import DiagonalFisher, squared_gradient_mean

_EPS_Z = "_eps_z"
_EPS_L = "_eps_l"


def draw_noise(n_cells: int, n_latent: int, n_draws: int, seed: int) -> dict[str, torch.Tensor]:
    """The standard-normal reparameterisation noise used for ``n_cells`` cells.

    Cell ``i`` (in the order of the selection) gets ``eps_z[i]`` of shape
    ``(n_draws, n_latent)`` and ``eps_l[i]`` of shape ``(n_draws, 1)``, drawn from
    ``torch.Generator().manual_seed(seed)`` (``eps_z`` first, then ``eps_l``), independently
    of the mini-batch size.
    """
    gen = torch.Generator().manual_seed(int(seed))
    eps_z = torch.randn((n_cells, n_draws, n_latent), generator=gen)
    eps_l = torch.randn((n_cells, n_draws, 1), generator=gen)
    return {_EPS_Z: eps_z, _EPS_L: eps_l}


def vae_cell_loss(module: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-cell negative ELBO (kl_weight=1) of a :class:`scvi.module.VAE` with fixed noise.

    ``inputs`` holds the registry tensors of a mini-batch plus the noise of
    :func:`draw_noise` (keys ``"_eps_z"`` ``(n, K, n_latent)`` and ``"_eps_l"``
    ``(n, K, 1)``).  Returns a tensor of shape ``(n,)``: the loss averaged over the ``K``
    draws.  Uses the module's own ``inference``, ``generative`` and ``loss`` so that every
    scVI option (likelihood, dispersion, covariates, normalisation layers) is honoured.
    """
    tensors = {k: v for k, v in inputs.items() if k not in (_EPS_Z, _EPS_L)}
    eps_z, eps_l = inputs[_EPS_Z], inputs[_EPS_L]
    inference = module.inference(**module._get_inference_input(tensors))
    qz, ql = inference["qz"], inference.get("ql")
    n_draws = eps_z.shape[1]
    total = 0.0
    for k in range(n_draws):
        draw = dict(inference)
        draw["z"] = module.z_encoder.z_transformation(qz.loc + qz.scale * eps_z[:, k])
        if ql is not None:
            draw["library"] = ql.loc + ql.scale * eps_l[:, k]
        generative = module.generative(**module._get_generative_input(tensors, draw))
        losses = module.loss(tensors, draw, generative, kl_weight=1.0)
        total = total + (
            losses.reconstruction_loss["reconstruction_loss"]
            + losses.kl_local["kl_divergence_z"]
            + losses.kl_local["kl_divergence_l"]
        )
    return total / n_draws


def _check_module(model) -> nn.Module:
    module = getattr(model, "module", None)
    if module is None or not all(
        hasattr(module, a) for a in ("inference", "generative", "loss", "z_encoder")
    ):
        raise TypeError(
            "diagonal_fisher needs an scvi-tools model whose module is a scvi.module.VAE "
            f"(inference/generative/loss and z_encoder); got {type(model).__name__}."
        )
    if getattr(module, "minified_data_type", None) is not None:
        raise ValueError(
            "The model's AnnData is minified (no counts): a Fisher of the ELBO needs the counts."
        )
    return module


def _batches(model, adata, indices, batch_size, noise) -> Iterator[dict[str, torch.Tensor]]:
    loader = model._make_data_loader(
        adata=adata, indices=indices, batch_size=batch_size, shuffle=False
    )
    keys = (
        REGISTRY_KEYS.X_KEY,
        REGISTRY_KEYS.BATCH_KEY,
        REGISTRY_KEYS.LABELS_KEY,
        REGISTRY_KEYS.CONT_COVS_KEY,
        REGISTRY_KEYS.CAT_COVS_KEY,
        REGISTRY_KEYS.SIZE_FACTOR_KEY,
    )
    start = 0
    for tensors in loader:
        n = tensors[REGISTRY_KEYS.X_KEY].shape[0]
        batch = {k: tensors[k] for k in keys if tensors.get(k) is not None}
        batch[_EPS_Z] = noise[_EPS_Z][start : start + n]
        batch[_EPS_L] = noise[_EPS_L][start : start + n]
        start += n
        yield batch


def _resolve_cells(model, adata: AnnData | None, indices: Sequence[int] | None):
    adata = model._validate_anndata(adata)
    if indices is None:
        indices = np.arange(adata.n_obs)
    indices = np.asarray(indices)
    if indices.dtype == bool:
        if indices.shape != (adata.n_obs,):
            raise ValueError(
                f"A boolean mask of cells must have length adata.n_obs={adata.n_obs}, "
                f"got shape {indices.shape}."
            )
        indices = np.flatnonzero(indices)
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"indices must be positional integers, got dtype {indices.dtype}.")
    indices = indices.astype(int)
    if indices.size == 0:
        raise ValueError("No cells selected: indices is empty.")
    if indices.min() < 0 or indices.max() >= adata.n_obs:
        raise IndexError(f"indices out of range for an AnnData with {adata.n_obs} cells.")
    return adata, indices


def fisher_of_cells(
    model,
    adata: AnnData | None = None,
    indices: Sequence[int] | None = None,
    *,
    n_draws: int = 1,
    seed: int = 0,
    batch_size: int = 128,
) -> DiagonalFisher:
    """Per-sample diagonal empirical Fisher of scVI's negative ELBO, with its bookkeeping.

    Same arguments as :func:`diagonal_fisher`; returns a :class:`DiagonalFisher` whose
    ``excluded`` lists the parameters that receive no gradient (e.g. ``decoder.px_r_decoder``
    with ``dispersion="gene"``, ``l_encoder`` with the observed library size).
    """
    if int(n_draws) != n_draws or n_draws < 1:
        raise ValueError(f"n_draws must be a positive integer, got {n_draws!r}.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    module = _check_module(model)
    if adata is None:
        # the model's own registered AnnData, read as is (unlearning methods call this on a
        # weight copy of the trained original that is not flagged as trained yet)
        if model.adata is None:
            raise ValueError(
                "The model holds no AnnData (loaded without one): pass the cells as `adata`."
            )
        return _fisher_of_registered(
            model, model.adata, indices, module, n_draws, seed, batch_size
        )
    # any other AnnData: a private registered copy, genes aligned; the user's is not modified
    with evaluation_adata(model, adata) as ad:
        return _fisher_of_registered(model, ad, indices, module, n_draws, seed, batch_size)


def _fisher_of_registered(model, adata, indices, module, n_draws, seed, batch_size):
    adata, indices = _resolve_cells(model, adata, indices)
    noise = draw_noise(len(indices), module.n_latent, int(n_draws), seed)
    result = squared_gradient_mean(
        module,
        vae_cell_loss,
        _batches(model, adata, indices, int(batch_size), noise),
        n_draws=int(n_draws),
        seed=seed,
        # dispersion="gene": px_r (genes,) only broadcasts against the cells
        expandable=("px_r",) if getattr(module, "dispersion", None) == "gene" else (),
    )
    result.meta["obs_names"] = np.asarray(adata.obs_names, dtype=str)[indices]
    return result


def diagonal_fisher(
    model,
    adata: AnnData | None = None,
    indices: Sequence[int] | None = None,
    *,
    n_draws: int = 1,
    seed: int = 0,
    batch_size: int = 128,
) -> dict[str, torch.Tensor]:
    """Per-sample diagonal empirical Fisher of scVI's negative ELBO over a set of cells.

    For every parameter of ``model.module`` that receives a gradient, the mean over the cells
    of the squared per-cell gradient of that cell's negative ELBO (``kl_weight=1``),

    .. math:: F = \\frac{1}{n}\\sum_{i} \\left(\\nabla_\\theta \\ell_i\\right)^{2},

    the diagonal empirical Fisher :cite:p:`Kunstner19` used by Fisher forgetting
    :cite:p:`Golatkar20` and Selective Synaptic Dampening :cite:p:`Foster24`.  Per-cell
    gradients are computed with :func:`torch.func.vmap` (one vectorised backward per
    mini-batch), in eval mode (no dropout; BatchNorm with running statistics).

    Parameters
    ----------
    model
        An scvi-tools model whose module is a :class:`scvi.module.VAE` (e.g.
        :class:`scvi_unlearn.SCVI`).  Left unchanged (parameters, ``requires_grad`` flags,
        training mode).
    adata
        AnnData holding the cells (registered or registrable with the model; genes in any
        order); default the model's.  Never modified: an AnnData other than the model's own
        registered one is evaluated on a private registered copy
        (:func:`scvi_unlearn._evaluation.evaluation_adata`, which refuses an untrained model).
    indices
        Positional indices (or a boolean mask) of the cells in ``adata``; default all.
    n_draws
        Number ``K`` of posterior draws of ``z`` per cell.  The per-cell loss is the negative
        ELBO averaged over the draws; its gradient is squared (gradients are averaged over
        draws, then squared).
    seed
        Seed of the reparameterisation noise (:func:`draw_noise`: a private
        :class:`torch.Generator`; the global RNG is untouched).
    batch_size
        Cells per vectorised backward pass (memory grows as ``batch_size x n_parameters``).

    Returns
    -------
    dict
        Parameter name (as in ``model.module.named_parameters()``) -> float64 CPU tensor of
        the parameter's shape.  Parameters that receive no gradient are absent (see
        :func:`fisher_of_cells` for the list).
    """
    return fisher_of_cells(
        model, adata, indices, n_draws=n_draws, seed=seed, batch_size=batch_size
    ).values
