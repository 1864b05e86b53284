"""Preprocessing shared by the downloaded datasets (the study's pipeline, with its bugs fixed)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp


def check_counts(adata: ad.AnnData, layer: str | None = "counts") -> None:
    """Raise a clear error unless ``adata`` holds non-negative integer counts in ``layer``."""
    x = adata.layers[layer] if layer is not None else adata.X
    data = x.data if sp.issparse(x) else np.asarray(x)
    where = f"layers[{layer!r}]" if layer is not None else "X"
    if data.size and (np.any(data < 0) or not np.all(np.equal(np.mod(data, 1), 0))):
        raise ValueError(
            f"adata.{where} must hold raw integer counts (scVI's likelihoods are for counts); "
            "found negative or non-integer values."
        )


def preprocess_counts(
    adata: ad.AnnData,
    *,
    min_genes: int = 200,
    min_cells: int = 3,
    max_pct_mito: float = 10.0,
    mito_prefix: str = "MT-",
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    resolution: float = 0.5,
    seed: int = 0,
) -> ad.AnnData:
    """QC, highly variable genes on counts and Leiden clusters; counts kept in a layer.

    Follows the original study where it was right — QC (``min_genes`` detected genes, at most
    ``max_pct_mito`` % mitochondrial counts, genes in at least ``min_cells`` cells), 2,000 HVGs
    (Seurat v3 flavour, selected on the *counts*), PCA, a k-NN graph and Leiden clusters — and
    fixes where it was wrong: the integer counts stay in ``layers["counts"]`` (the study trained
    an "NB" VAE on log data), ``X`` holds log-normalized values (not scaled in place), and every
    random step takes ``seed`` instead of reseeding the global RNG.

    Returns a new AnnData (the input is not modified) with ``layers["counts"]``,
    ``X = log1p(counts / total * 1e4)``, ``obs["leiden"]``, ``obsm["X_pca"]``,
    ``obs["n_genes"]``, ``obs["total_counts"]``, ``obs["pct_counts_mt"]``.
    """
    import scanpy as sc

    adata = adata.copy()
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    check_counts(adata, layer=None)
    adata.var_names_make_unique()
    adata.var["mt"] = adata.var_names.str.upper().str.startswith(mito_prefix.upper())
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    keep = (adata.obs["n_genes_by_counts"] >= min_genes) & (
        adata.obs["pct_counts_mt"] < max_pct_mito
    )
    adata = adata[keep.to_numpy()].copy()
    if adata.n_obs == 0:
        raise ValueError("No cell passes QC; check min_genes / max_pct_mito.")
    sc.pp.filter_genes(adata, min_cells=min_cells)
    adata.obs["n_genes"] = adata.obs["n_genes_by_counts"]
    adata.layers["counts"] = adata.X.copy()
    n_top = int(min(n_top_genes, adata.n_vars))
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top, flavor="seurat_v3", layer="counts")
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    scaled = sc.pp.scale(adata.X.toarray() if sp.issparse(adata.X) else adata.X, max_value=10)
    n_comps = int(min(n_pcs, adata.n_obs - 1, adata.n_vars - 1))
    adata.obsm["X_pca"] = sc.pp.pca(scaled, n_comps=n_comps, random_state=seed)
    sc.pp.neighbors(
        adata,
        n_neighbors=int(min(n_neighbors, adata.n_obs - 1)),
        use_rep="X_pca",
        random_state=seed,
    )
    sc.tl.leiden(
        adata,
        resolution=resolution,
        key_added="leiden",
        random_state=seed,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    return adata
