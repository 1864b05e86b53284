"""10x Genomics' 33k PBMCs from a healthy donor (the study's main dataset), downloaded."""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from scvi_unlearn.data._download import fetch
from scvi_unlearn.data._preprocess import preprocess_counts
from scvi_unlearn.data._tenx import read_10x_tar


def pbmc33k(
    directory: str | Path | None = None,
    *,
    preprocess: bool = True,
    seed: int = 0,
    progressbar: bool = True,
    downloader=None,
    **preprocess_kwargs,
) -> ad.AnnData:
    """33k PBMCs (10x Genomics, CellRanger 1.1.0 filtered matrices, hg19), with Leiden clusters.

    Downloads ``pbmc33k_filtered_gene_bc_matrices.tar.gz`` once into the cache (see
    :func:`~scvi_unlearn.data.fetch`), verifies its checksum and reads the matrix.  With
    ``preprocess=True`` it applies :func:`~scvi_unlearn.data.preprocess_counts` (QC, 2,000 HVGs
    on counts, Leiden clusters in ``obs["leiden"]``; the study forgot its Leiden cluster 13, 30
    megakaryocytes).  The dataset has no curated cell types.

    Parameters
    ----------
    directory
        Cache directory (default :func:`~scvi_unlearn.data.cache_dir`).
    preprocess
        Apply the preprocessing; otherwise return the raw filtered counts.
    seed
        Seed of the PCA and Leiden steps.
    progressbar
        Show a download progress bar.
    downloader
        Custom pooch downloader (used by the tests to mock the network).
    **preprocess_kwargs
        Passed to :func:`~scvi_unlearn.data.preprocess_counts`.

    Returns
    -------
    AnnData with integer counts in ``layers["counts"]`` (and ``X`` when not preprocessed).
    """
    path = fetch("pbmc33k", directory=directory, progressbar=progressbar, downloader=downloader)
    adata = read_10x_tar(path)
    adata.obs_names_make_unique()
    adata.uns["dataset"] = "pbmc33k (10x Genomics 1.1.0 filtered_gene_bc_matrices, hg19)"
    if not preprocess:
        adata.layers["counts"] = adata.X.copy()
        return adata
    return preprocess_counts(adata, seed=seed, mito_prefix="MT-", **preprocess_kwargs)
