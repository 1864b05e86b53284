"""Matched non-members: held-out cells that resemble a forget set, chosen from the data only.

The seed study matched negatives by k-NN on a *sampled* latent of its baseline model, which was
non-deterministic and made the negative set depend on a model (98% of the "matches" had another
cell type).  Here the match depends on the data only, so every model is audited against the same
negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from scvi_unlearn._counts import check_counts
from scvi_unlearn.data._membership import HOLDOUT, SPLIT_KEY

#: most cells the matching PCA is fitted on (a seeded sample beyond it; the embedding of any
#: cell is then a projection), so that matching costs the same on an atlas as on 20k cells
MAX_PCA_FIT_CELLS = 20_000


def _log_normalized(x: sp.csr_matrix) -> sp.csr_matrix:
    x = x.astype(np.float64)
    totals = np.asarray(x.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    out = sp.csr_matrix(sp.diags(1e4 / totals) @ x)
    out.data = np.log1p(out.data)
    return out


def log_normalized_pca(
    adata: ad.AnnData,
    layer: str | None = "counts",
    n_pcs: int = 30,
    seed: int = 0,
    *,
    obs_names: Sequence[str] | None = None,
    max_fit_cells: int = MAX_PCA_FIT_CELLS,
) -> np.ndarray:
    """PCA of ``log1p(counts / total * 1e4)`` (deterministic; sparse counts stay sparse).

    Parameters
    ----------
    adata
        Cells to fit the PCA on: all of them, or a seeded random sample of ``max_fit_cells``
        when there are more.
    layer
        Layer of counts (``None`` for ``X``).
    n_pcs
        Number of principal components.
    seed
        Seed of the fitting sample and of the ARPACK solver.
    obs_names
        Cells to return the embedding of (default: every cell of ``adata``, in order).
    max_fit_cells
        Most cells the PCA is fitted on.

    Returns
    -------
    ``(len(obs_names), n_pcs)`` array.

    Notes
    -----
    The PCA is ARPACK's truncated SVD on the sparse matrix with implicit centring (scikit-learn
    ``svd_solver="arpack"``): nothing is densified, and on data up to ``max_fit_cells`` cells it
    gives the exact PCA (distances equal to those of a full SVD to 1e-13).  NaN, infinite or
    negative counts raise a :class:`ValueError` naming the first offending cell and gene
    (:func:`scvi_unlearn._counts.check_counts`).
    """
    x = adata.layers[layer] if layer is not None else adata.X
    what = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    check_counts(x, what, adata.obs_names, adata.var_names, warn_non_integer=False)
    x = sp.csr_matrix(x)  # rows are sliced before the float64 copy: only those are copied
    n_obs = x.shape[0]
    fit_rows = np.arange(n_obs)
    if n_obs > max_fit_cells:
        rng = np.random.default_rng(seed)
        fit_rows = np.sort(rng.choice(n_obs, max_fit_cells, replace=False))
    fit = _log_normalized(x[fit_rows])
    n_comp = int(min(n_pcs, fit.shape[0] - 1, fit.shape[1] - 1))
    pca = PCA(n_components=n_comp, svd_solver="arpack", random_state=seed).fit(fit)
    if obs_names is None:
        rows = np.arange(n_obs)
    else:
        rows = adata.obs_names.get_indexer(np.asarray(obs_names, dtype=str))
        if (rows < 0).any():
            raise KeyError("Some obs_names are not in adata.")
    if rows.size == fit_rows.size and np.array_equal(rows, fit_rows):
        return pca.transform(fit)
    return pca.transform(_log_normalized(x[rows]))


def matched_nonmembers(
    adata: ad.AnnData,
    forget: Sequence[str],
    n: int | None = None,
    method: str = "auto",
    label_key: str = "cell_type",
    heldout: Sequence[str] | None = None,
    layer: str | None = "counts",
    n_pcs: int = 30,
    seed: int = 0,
) -> np.ndarray:
    """Held-out cells matched to ``forget`` from the data itself, never from a model.

    Parameters
    ----------
    adata
        Dataset containing both the forget cells and the held-out cells.
    forget
        ``obs_names`` of the forget cells.
    n
        Number of non-members to return; default ``len(forget)`` (capped by what exists).
    method
        ``"label"``: held-out cells with the forget cells' labels, sampled in the same label
        proportions; ``"pca"``: for each forget cell in turn, its nearest not-yet-chosen held-out
        cell in a PCA of log-normalized counts (greedy matching without replacement);
        ``"auto"``: ``"label"`` first, then fills up to ``n`` with ``"pca"`` matches.
    label_key
        ``obs`` column of cell types (``"label"`` and ``"auto"``).
    heldout
        ``obs_names`` of candidate non-members; default the cells with
        ``obs["membership"] == "heldout"`` (see :func:`membership_split`).
    layer
        Layer of counts for the PCA (``None`` for ``X``).
    n_pcs
        Number of principal components.
    seed
        Seed for sampling and the PCA solver.

    Returns
    -------
    ``obs_names`` of the matched held-out cells (at most ``n``; fewer only if fewer exist).
    """
    forget = np.asarray(forget, dtype=str)
    if forget.size == 0:
        raise ValueError("The forget set is empty.")
    missing = np.setdiff1d(forget, np.asarray(adata.obs_names, dtype=str))
    if missing.size:
        raise KeyError(f"{missing.size} forget cells are not in adata, e.g. {list(missing[:5])}.")
    if heldout is None:
        if SPLIT_KEY not in adata.obs:
            raise ValueError(
                "No held-out cells: pass `heldout=` or run scvi_unlearn.data.membership_split."
            )
        heldout = adata.obs_names[(adata.obs[SPLIT_KEY].astype(str) == HOLDOUT).to_numpy()]
    heldout = np.setdiff1d(np.asarray(heldout, dtype=str), forget)
    if heldout.size == 0:
        raise ValueError("There are no held-out cells to match against.")
    if method not in ("label", "pca", "auto"):
        raise ValueError(f"method must be 'label', 'pca' or 'auto', got {method!r}.")
    n = forget.size if n is None else int(n)
    if n < 1:
        raise ValueError(f"n must be positive, got {n}.")
    n = min(n, heldout.size)
    rng = np.random.default_rng(seed)

    chosen: list[str] = []
    if method in ("label", "auto"):
        if label_key not in adata.obs:
            raise KeyError(f"Label column {label_key!r} is not in adata.obs.")
        labels = adata.obs[label_key].astype(str)
        f_counts = labels.loc[forget].value_counts()
        h_labels = labels.loc[heldout]
        for lab, cnt in f_counts.items():
            pool = np.sort(h_labels.index[h_labels.to_numpy() == lab].to_numpy(dtype=str))
            want = int(round(n * cnt / forget.size))
            take = min(want, pool.size)
            if take:
                chosen.extend(rng.choice(pool, size=take, replace=False).tolist())
        chosen = chosen[:n]
    if method in ("pca", "auto") and len(chosen) < n:
        taken_names = set(chosen)
        cand = np.array([c for c in heldout if c not in taken_names], dtype=str)
        emb = log_normalized_pca(
            adata, layer=layer, n_pcs=n_pcs, seed=seed, obs_names=np.concatenate([cand, forget])
        )
        cand_emb, f_emb = emb[: cand.size], emb[cand.size :]
        k = min(cand.size, n)
        nn = NearestNeighbors(n_neighbors=k).fit(cand_emb)
        _, neigh = nn.kneighbors(f_emb)
        taken = np.zeros(cand.size, dtype=bool)
        order = rng.permutation(forget.size)
        # greedy rounds: each forget cell claims its nearest free neighbour
        for rank in range(k):
            for i in order:
                if len(chosen) >= n:
                    break
                j = neigh[i, rank]
                if not taken[j]:
                    taken[j] = True
                    chosen.append(cand[j])
            if len(chosen) >= n:
                break
    return np.asarray(chosen, dtype=str)
