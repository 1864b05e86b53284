"""The offline real dataset: 700 PBMCs with integer counts recovered from scanpy's copy."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

#: scanpy's ``pbmc68k_reduced.raw.X`` is ``round(log1p(count / n_counts * SCALE), 3)``.
_SCALE = 1e4


def counts_from_pbmc68k_reduced(reduced: ad.AnnData) -> sp.csr_matrix:
    """Recover the integer UMI counts behind ``pbmc68k_reduced.raw.X``.

    ``raw.X`` stores ``round(log1p(count / n_counts * 1e4), 3)`` with ``n_counts`` the cell's
    total count over *all* genes of the original experiment (``obs["n_counts"]``), so
    ``rint(expm1(raw.X) * n_counts / 1e4)`` inverts it exactly (the rounding error of the third
    decimal is far below half a count for the counts present).
    """
    logx = reduced.raw.X
    logx = sp.csr_matrix(logx, dtype=np.float64)
    n_counts = reduced.obs["n_counts"].to_numpy(dtype=np.float64)
    counts = logx.copy()
    # expm1 keeps zeros at zero, so operate on the stored values only
    counts.data = np.expm1(counts.data)
    counts = sp.diags(n_counts / _SCALE) @ counts
    counts = sp.csr_matrix(counts)
    counts.data = np.rint(counts.data)
    counts.eliminate_zeros()
    return counts.astype(np.float32)


def log_normalize_like_pbmc68k(counts: sp.spmatrix, n_counts: np.ndarray) -> sp.csr_matrix:
    """Re-encode counts as ``round(log1p(count / n_counts * 1e4), 3)`` (``raw.X``'s encoding)."""
    x = sp.csr_matrix(counts, dtype=np.float64)
    x = sp.diags(_SCALE / np.asarray(n_counts, dtype=np.float64)) @ x
    x = sp.csr_matrix(x)
    x.data = np.round(np.log1p(x.data), 3)
    return x.astype(np.float32)


def pbmc68k() -> ad.AnnData:
    """700 real peripheral blood mononuclear cells with integer counts, available offline.

    Built from :func:`scanpy.datasets.pbmc68k_reduced` (a subsample of 10x Genomics' Fresh
    68k PBMCs, :cite:p:`Zheng17`), which ships with scanpy.  Its ``raw.X`` holds rounded
    log-normalized values; the integer UMI counts are recovered exactly (see
    :func:`counts_from_pbmc68k_reduced`).

    Returns
    -------
    AnnData with 700 cells x 765 genes:

    * ``layers["counts"]``: integer UMI counts (sparse, float32 dtype);
    * ``X``: ``log1p(count / n_counts * 1e4)`` with the original library sizes (as ``raw.X``);
    * ``obs["cell_type"]``: the 10 ``bulk_labels`` cell types (categorical), plus the original
      ``obs`` columns (``n_counts`` is the library size over all genes of the experiment);
    * ``obsm["X_umap"]``, ``obsm["X_pca"]``: the embeddings scanpy ships.
    """
    import scanpy as sc

    reduced = sc.datasets.pbmc68k_reduced()
    counts = counts_from_pbmc68k_reduced(reduced)
    obs = reduced.obs.copy()
    obs["cell_type"] = pd.Categorical(obs["bulk_labels"].astype(str))
    obs.index = obs.index.astype(str)
    obs.index.name = None
    var = pd.DataFrame(index=reduced.raw.var_names.astype(str))
    adata = ad.AnnData(
        X=log_normalize_like_pbmc68k(counts, obs["n_counts"].to_numpy()),
        obs=obs,
        var=var,
        layers={"counts": counts},
        obsm={k: np.asarray(reduced.obsm[k]) for k in ("X_umap", "X_pca")},
    )
    adata.uns["dataset"] = "pbmc68k_reduced (scanpy), integer counts recovered from raw.X"
    return adata
