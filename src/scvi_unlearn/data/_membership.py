"""Member / non-member split: cells held out before training are the audit's negatives."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

#: ``obs`` column written by :func:`membership_split`.
SPLIT_KEY = "membership"
TRAIN = "train"
HOLDOUT = "heldout"


def _heldout_mask(n_obs: int, strata: np.ndarray | None, holdout: float, seed: int) -> np.ndarray:
    """The held-out cells of :func:`membership_split` from the number of cells and the strata.

    Needs no count matrix: :func:`~scvi_unlearn.data.simulate_to_soma` calls it with the
    simulated labels to write the same split as :func:`membership_split` would.
    """
    if not 0.0 < float(holdout) < 1.0:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout!r}.")
    if n_obs < 2:
        raise ValueError("membership_split needs at least two cells.")
    rng = np.random.default_rng(seed)
    heldout = np.zeros(n_obs, dtype=bool)
    if strata is None:
        groups = [np.arange(n_obs)]
    else:
        codes = pd.Categorical(strata).codes
        groups = [np.flatnonzero(codes == c) for c in np.unique(codes)]
    for idx in groups:
        n_out = int(round(holdout * idx.size))
        if strata is not None and idx.size >= 2:
            n_out = min(max(n_out, 1), idx.size - 1)
        heldout[rng.permutation(idx)[:n_out]] = True
    if heldout.all() or not heldout.any():
        raise ValueError(f"holdout={holdout} leaves an empty train or held-out set.")
    return heldout


def membership_split(
    adata: ad.AnnData,
    holdout: float = 0.15,
    stratify: str | None = None,
    seed: int = 0,
    key_added: str = SPLIT_KEY,
    copy: bool = False,
) -> ad.AnnData | None:
    """Mark cells as training members or held-out non-members.

    Held-out cells must never be given to the model's training; the membership audit uses them
    as non-members (DESIGN section 7).  The split is deterministic given ``seed``.

    Parameters
    ----------
    adata
        The dataset.
    holdout
        Fraction of cells held out, in ``(0, 1)``.  With ``stratify``, the fraction is applied
        within every category (rounded, at least one held-out cell per category with two or
        more cells).
    stratify
        Optional ``obs`` column (e.g. the cell type) to split within.
    seed
        Seed of the permutation.
    key_added
        ``obs`` column receiving ``"train"`` / ``"heldout"`` (categorical).
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (writes ``adata.obs[key_added]``), or the copy when ``copy=True``.
    """
    if stratify is not None and stratify not in adata.obs:
        raise KeyError(f"stratify column {stratify!r} is not in adata.obs.")
    codes = None if stratify is None else adata.obs[stratify].astype(str).to_numpy()
    heldout = _heldout_mask(adata.n_obs, codes, holdout, seed)
    target = adata.copy() if copy else adata
    target.obs[key_added] = pd.Categorical(
        np.where(heldout, HOLDOUT, TRAIN), categories=[TRAIN, HOLDOUT]
    )
    return target if copy else None
