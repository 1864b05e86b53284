"""Forget-set builders: which cells a user asks the model to forget.

Each builder returns ``obs_names`` (a :class:`numpy.ndarray` of ``str``), is deterministic given
its seed, and by default draws only from training members when ``adata.obs`` has the column
written by :func:`~scvi_unlearn.data.membership_split`.  :func:`forget_donor` also reads
TileDB-SOMA experiments (the ``atlas`` extra) and can return ``soma_joinid`` instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import anndata as ad
import numpy as np

from scvi_unlearn.data._membership import SPLIT_KEY, TRAIN

_ID_KINDS = ("obs_id", "soma_joinid")


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


def forget_donor(
    data,
    donors: str | Sequence[str],
    *,
    key: str = "donor",
    members_only: bool = True,
    ids: str = "obs_id",
) -> np.ndarray:
    """All (member) cells of one or several donors: a donor-level forget set.

    Parameters
    ----------
    data
        A TileDB-SOMA experiment (its URI or an open :class:`tiledbsoma.Experiment`), e.g.
        one written by :func:`~scvi_unlearn.data.simulate_to_soma`, or an
        :class:`~anndata.AnnData` (then as :func:`forget_by_label` with ``key``).
    donors
        One donor (``"donor_7"``) or several.
    key
        ``obs`` column of the donors (strings or categorical).
    members_only
        Restrict to ``obs["membership"] == "train"`` when that column exists.
    ids
        ``"obs_id"``: the cells' ``obs_id`` (``obs_names`` for AnnData); ``"soma_joinid"``:
        their SOMA row ids (int64; SOMA stores only).

    Returns
    -------
    The cells' ids in row order (:class:`numpy.ndarray` of ``str`` or ``int64``).

    Raises
    ------
    KeyError
        ``key`` (or the ``obs_id`` column) is not in ``obs``.
    ValueError
        An unknown donor, no donor given, an empty forget set, or a bad ``ids``.
    """
    if ids not in _ID_KINDS:
        raise ValueError(f"ids must be one of {_ID_KINDS}, got {ids!r}.")
    if isinstance(data, ad.AnnData):
        if ids != "obs_id":
            raise ValueError("ids='soma_joinid' needs a SOMA experiment, not an AnnData.")
        mask = _label_mask(data, donors, key) & _candidate_mask(data, members_only)
        return _names(data, mask, f"training member of {key} {donors!r}")
    from scvi_unlearn.data._soma import _import_soma

    soma = _import_soma()
    if isinstance(data, str | os.PathLike):
        with soma.Experiment.open(os.fspath(data)) as exp:
            return _forget_donor_soma(exp, donors, key, members_only, ids)
    if isinstance(data, soma.Experiment):
        return _forget_donor_soma(data, donors, key, members_only, ids)
    raise ValueError(
        "data must be a SOMA experiment (URI or tiledbsoma.Experiment) or an AnnData, got "
        f"{type(data).__name__}."
    )


def _forget_donor_soma(exp, donors, key, members_only, ids) -> np.ndarray:
    import pandas as pd

    columns = set(exp.obs.schema.names)
    if key not in columns:
        raise KeyError(
            f"Donor column {key!r} is not in the experiment's obs (columns: {sorted(columns)})."
        )
    if ids not in columns:
        raise KeyError(f"Id column {ids!r} is not in the experiment's obs.")
    wanted = [donors] if isinstance(donors, str) else [str(d) for d in donors]
    if not wanted:
        raise ValueError("No donor given: pass at least one donor to forget.")
    values = exp.obs.read(column_names=[key]).concat().to_pandas()[key]
    present = set(pd.unique(values).astype(str))
    unknown = [w for w in wanted if w not in present]
    if unknown:
        shown = sorted(map(str, present))
        shown = shown if len(shown) <= 20 else [*shown[:20], "..."]
        raise ValueError(f"Unknown donor(s) {unknown} in obs[{key!r}]; available: {shown}.")
    condition = f"{key} in {wanted!r}"
    if members_only and SPLIT_KEY in columns:
        condition += f" and {SPLIT_KEY} == {TRAIN!r}"
    names = list(dict.fromkeys(["soma_joinid", ids]))
    table = exp.obs.read(column_names=names, value_filter=condition).concat()
    table = table.sort_by("soma_joinid")
    out = table.column(ids).to_numpy()
    out = out.astype(str) if ids == "obs_id" else out.astype(np.int64)
    if out.size == 0:
        raise ValueError(f"The forget set is empty: no training member of {key} {wanted!r}.")
    return out
