"""Mixture-of-Gaussians data sets shaped like single-cell data, for VAE unlearning simulations."""

from __future__ import annotations

from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd

#: component separation presets: distance between component means in units of the noise s.d.
SEPARATIONS = {"separated": 8.0, "overlapping": 1.0}

#: forget-set kinds of :func:`mog_forget_set`
FORGET_KINDS = ("component", "partial", "scattered")


def make_mog_anndata(
    n_cells: int = 900,
    n_features: int = 20,
    n_components: int = 3,
    *,
    separation: float | Literal["separated", "overlapping"] = "separated",
    weights: tuple[float, ...] | None = None,
    offset: float = 20.0,
    noise_sd: float = 1.0,
    random_state: int | np.random.Generator | None = 0,
) -> ad.AnnData:
    """A Gaussian mixture as an AnnData that :class:`scvi_unlearn.SCVI` can model.

    Component ``k`` has mean ``offset + separation * noise_sd * u_k`` where the ``u_k`` are
    orthonormal directions (pairwise mean distance ``sqrt(2) * separation * noise_sd``), and
    isotropic noise ``noise_sd``. ``offset`` keeps every value positive: scVI's ``"normal"``
    likelihood models ``x ~ N(l * rho(z), sigma)`` with ``rho`` on the simplex and the observed
    library ``l = sum(x)`` (log-transformed), so the data must be non-negative with positive
    row sums; with the defaults a negative draw is a > 15-sigma event, and values are clipped at
    0 in any case (the count of clipped values is stored in ``uns["mog"]["n_clipped"]``).

    Parameters
    ----------
    n_cells, n_features, n_components
        Size of the data set (``n_features >= n_components``).
    separation
        Mean separation in noise s.d. along each component's direction, or a preset of
        :data:`SEPARATIONS` (``"separated"``: 8, ``"overlapping"``: 1).
    weights
        Mixture weights (default equal); component sizes are ``round(weights * n_cells)``.
    offset, noise_sd
        Baseline value of every feature and the noise s.d.
    random_state
        Seed or :class:`numpy.random.Generator` (the global RNG is never used).

    Returns
    -------
    anndata.AnnData
        ``X`` and ``layers["counts"]`` (the same continuous values, float32, so that functions
        reading ``layers["counts"]`` work), ``obs["cell_type"]`` (``"C0"``, ``"C1"``...),
        ``uns["mog"]`` (means, separation, noise).
    """
    if isinstance(separation, str):
        if separation not in SEPARATIONS:
            raise ValueError(
                f"separation must be a number or one of {sorted(SEPARATIONS)}; got {separation!r}."
            )
        separation = SEPARATIONS[separation]
    if separation < 0:
        raise ValueError(f"separation must be >= 0; got {separation}.")
    if n_components < 1 or n_features < n_components:
        raise ValueError(
            f"need 1 <= n_components <= n_features; got {n_components} and {n_features}."
        )
    if n_cells < 2 * n_components:
        raise ValueError(f"n_cells must be at least 2 per component; got {n_cells}.")
    if noise_sd <= 0:
        raise ValueError(f"noise_sd must be positive; got {noise_sd}.")
    w = np.full(n_components, 1.0 / n_components) if weights is None else np.asarray(weights)
    if w.shape != (n_components,) or np.any(w <= 0):
        raise ValueError("weights must be n_components positive numbers.")
    w = w / w.sum()
    rng = (
        random_state
        if isinstance(random_state, np.random.Generator)
        else np.random.default_rng(random_state)
    )
    sizes = np.maximum(1, np.round(w * n_cells).astype(int))
    sizes[-1] = n_cells - sizes[:-1].sum()
    if sizes[-1] < 1:
        raise ValueError("weights leave the last component empty; use more cells.")
    # orthonormal directions from a QR decomposition of a Gaussian matrix
    q, _ = np.linalg.qr(rng.standard_normal((n_features, n_components)))
    means = offset + separation * noise_sd * q.T  # (n_components, n_features)
    labels = np.repeat(np.arange(n_components), sizes)
    x = means[labels] + noise_sd * rng.standard_normal((n_cells, n_features))
    n_clipped = int((x < 0).sum())
    x = np.clip(x, 0.0, None).astype(np.float32)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"C{k}" for k in labels])},
        index=pd.Index([f"cell{i}" for i in range(n_cells)]),
    )
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"f{j}" for j in range(n_features)]))
    adata.layers["counts"] = x.copy()
    adata.uns["mog"] = {
        "means": means,
        "separation": float(separation),
        "noise_sd": float(noise_sd),
        "n_clipped": n_clipped,
    }
    return adata


def mog_forget_set(
    adata: ad.AnnData,
    kind: Literal["component", "partial", "scattered"],
    *,
    component: str = "C0",
    fraction: float = 0.5,
    n: int | None = None,
    seed: int = 0,
    key: str = "cell_type",
) -> np.ndarray:
    """``obs_names`` of a forget set among the training members of a MoG data set.

    Parameters
    ----------
    adata
        A data set from :func:`make_mog_anndata`, with ``obs["membership"]`` when only training
        members may be forgotten (:func:`scvi_unlearn.data.membership_split`).
    kind
        ``"component"``: every member of ``component``; ``"partial"``: a random ``fraction`` of
        them; ``"scattered"``: random members of all components, as many as ``"partial"`` gives
        (or ``n``).
    component, fraction
        The component and the fraction of it for ``"partial"``.
    n
        Size of the ``"scattered"`` set (default: the ``"partial"`` size).
    seed
        Seed of the random choices.
    key
        ``obs`` column of the component labels.
    """
    from scvi_unlearn.data import forget_by_label, forget_label_subset, forget_random

    if kind not in FORGET_KINDS:
        raise ValueError(f"kind must be one of {FORGET_KINDS}; got {kind!r}.")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}.")
    whole = forget_by_label(adata, component, key=key)
    if kind == "component":
        return whole
    n_partial = max(1, int(round(fraction * whole.size)))
    if kind == "partial":
        return forget_label_subset(adata, component, n_partial, key=key, seed=seed)
    return forget_random(adata, n_partial if n is None else int(n), seed=seed)
