"""Forget-set builders: which cells a user asks the model to forget.

Each builder returns ``obs_names`` (a :class:`numpy.ndarray` of ``str``), is deterministic given
its seed, and by default draws only from training members when ``adata.obs`` has the column
written by :func:`~scvi_unlearn.data.membership_split`.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np

from scvi_unlearn.data._membership import SPLIT_KEY, TRAIN


def _candidate_mask(adata: ad.AnnData, members_only: bool) -> np.ndarray:
    if members_only and SPLIT_KEY in adata.obs:
        return (adata.obs[SPLIT_KEY].astype(str) == TRAIN).to_numpy()
    return np.ones(adata.n_obs, dtype=bool)


def _label_mask(adata: ad.AnnData, labels: str | Sequence[str], key: str) -> np.ndarray:
    if key not in adata.obs:
        raise KeyError(f"Label column {key!r} is not in adata.obs (columns: {list(adata.obs)}).")
    wanted = [labels] if isinstance(labels, str) else list(labels)
    if not wanted:
        raise ValueError("No label given: pass at least one label to forget.")
    values = adata.obs[key].astype(str)
    present = set(values.unique())
    unknown = [w for w in map(str, wanted) if w not in present]
    if unknown:
        raise ValueError(
            f"Unknown label(s) {unknown} in adata.obs[{key!r}]; available: {sorted(present)}."
        )
    return values.isin([str(w) for w in wanted]).to_numpy()


def _names(adata: ad.AnnData, mask: np.ndarray, what: str) -> np.ndarray:
    names = np.asarray(adata.obs_names[mask], dtype=str)
    if names.size == 0:
        raise ValueError(f"The forget set is empty: no {what}.")
    return names


def forget_by_label(
    adata: ad.AnnData,
    labels: str | Sequence[str],
    key: str = "cell_type",
    members_only: bool = True,
) -> np.ndarray:
    """All (member) cells whose ``obs[key]`` is one of ``labels`` (a cell type, a cluster...).

    Parameters
    ----------
    adata
        The dataset.
    labels
        One label or several.
    key
        ``obs`` column of the labels.
    members_only
        Restrict to ``obs["membership"] == "train"`` when that column exists.
    """
    mask = _label_mask(adata, labels, key) & _candidate_mask(adata, members_only)
    return _names(adata, mask, f"training member with {key} in {labels!r}")


def forget_label_subset(
    adata: ad.AnnData,
    label: str,
    n: int,
    key: str = "cell_type",
    seed: int = 0,
    members_only: bool = True,
) -> np.ndarray:
    """A random subset of ``n`` (member) cells of one label, deterministic given ``seed``."""
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of cells, got {n!r}.")
    pool = _names(
        adata,
        _label_mask(adata, label, key) & _candidate_mask(adata, members_only),
        f"training member with {key} == {label!r}",
    )
    if n > pool.size:
        raise ValueError(f"Asked for {n} cells of {label!r} but only {pool.size} are available.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=int(n), replace=False))


def forget_random(
    adata: ad.AnnData,
    n: int | float,
    seed: int = 0,
    members_only: bool = True,
) -> np.ndarray:
    """A scattered random set of (member) cells: ``n`` cells, or a fraction if ``0 < n < 1``."""
    pool = _names(adata, _candidate_mask(adata, members_only), "training member")
    if isinstance(n, float) and 0.0 < n < 1.0:
        n = max(1, int(round(n * pool.size)))
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive number (or fraction) of cells, got {n!r}.")
    if n > pool.size:
        raise ValueError(f"Asked for {n} cells but only {pool.size} candidates are available.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=n, replace=False))
