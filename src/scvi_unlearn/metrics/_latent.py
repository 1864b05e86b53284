"""Latent-space utility: cell-type silhouette and clustering ARI, neighbourhood preservation.

All three are computed on the posterior means of ``q(z | x)`` (``get_latent_representation``
with ``give_mean=True``) with the module in eval mode, so for scVI's default normal latent they
are deterministic; for the logistic-normal latent (``latent_distribution="ln"``) the Monte Carlo
mean is drawn under :func:`~scvi_unlearn._seeding.isolated_seed`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scvi_unlearn._evaluation import eval_mode, evaluation_adata
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.metrics._evaluation_data import cell_labels

Clustering = Literal["kmeans", "leiden"]


def latent_means(
    model, adata: AnnData | None = None, *, seed: int = 0, batch_size: int = 256
) -> np.ndarray:
    """Posterior mean of ``z`` for every cell of ``adata``, in eval mode, reproducibly.

    Parameters
    ----------
    model
        A trained scvi-tools model (:class:`scvi_unlearn.SCVI` or :class:`scvi.model.SCVI`).
    adata
        Cells to embed (need not be the model's own; it is not mutated); default the model's.
    seed
        Seed of the Monte Carlo mean for a logistic-normal latent (unused for the normal
        latent, whose mean is exact).  The global RNG is left untouched.
    batch_size
        Cells per forward pass.

    Returns
    -------
    Array of shape ``(n_cells, n_latent)``.
    """
    with evaluation_adata(model, adata) as ad:
        return _latent_means_registered(model, ad, seed=seed, batch_size=batch_size)


def _latent_means_registered(model, adata: AnnData, *, seed: int, batch_size: int) -> np.ndarray:
    with eval_mode(model.module), isolated_seed(seed):
        z = model.get_latent_representation(adata, give_mean=True, batch_size=batch_size)
    return np.asarray(z, dtype=np.float64)


def _labelled(latent: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """Drop cells with a missing label; check that at least two labels remain."""
    labels = np.asarray(labels, dtype=object)
    if labels.shape[0] != latent.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {latent.shape[0]} cells.")
    keep = np.array([lab is not None for lab in labels], dtype=bool)
    latent, labels = latent[keep], labels[keep].astype(str)
    n_labels = np.unique(labels).size
    if n_labels < 2 or n_labels >= latent.shape[0]:
        raise ValueError(
            f"Silhouette and ARI need 2 <= number of labels < number of labelled cells; got "
            f"{n_labels} labels for {latent.shape[0]} labelled cells."
        )
    return latent, labels


def silhouette_from_latent(latent: np.ndarray, labels) -> float:
    """Mean silhouette width of the labels in ``latent`` (Euclidean), in ``[-1, 1]``.

    Cells whose label is ``None`` are ignored.  See :func:`latent_silhouette`.
    """
    from sklearn.metrics import silhouette_score

    latent, labels = _labelled(np.asarray(latent, dtype=np.float64), labels)
    return float(silhouette_score(latent, labels, metric="euclidean"))


def ari_from_latent(
    latent: np.ndarray,
    labels,
    *,
    clustering: Clustering = "kmeans",
    n_clusters: int | None = None,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    seed: int = 0,
) -> float:
    """Adjusted Rand index between a clustering of ``latent`` and the labels.

    Cells whose label is ``None`` are ignored.  See :func:`latent_ari` for the clusterings.
    """
    from sklearn.metrics import adjusted_rand_score

    latent, labels = _labelled(np.asarray(latent, dtype=np.float64), labels)
    clusters = _cluster(
        latent,
        clustering=clustering,
        n_clusters=np.unique(labels).size if n_clusters is None else n_clusters,
        resolution=resolution,
        n_neighbors=n_neighbors,
        seed=seed,
    )
    return float(adjusted_rand_score(labels, clusters))


def _cluster(
    latent: np.ndarray,
    *,
    clustering: str,
    n_clusters: int,
    resolution: float,
    n_neighbors: int,
    seed: int,
) -> np.ndarray:
    if clustering == "kmeans":
        from sklearn.cluster import KMeans

        if not 1 <= n_clusters <= latent.shape[0]:
            raise ValueError(f"n_clusters must be in [1, n_cells], got {n_clusters}.")
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
        return km.fit_predict(latent)
    if clustering == "leiden":
        import scanpy as sc

        n = latent.shape[0]
        if not 1 <= n_neighbors < n:
            raise ValueError(f"n_neighbors must be in [1, n_cells), got {n_neighbors}.")
        tmp = AnnData(obs=pd.DataFrame(index=np.arange(n).astype(str)))
        sc.tl.leiden(
            tmp,
            adjacency=_knn_graph(latent, n_neighbors),
            resolution=resolution,
            random_state=seed,
            flavor="igraph",
            n_iterations=2,
            directed=False,
        )
        return tmp.obs["leiden"].to_numpy()
    raise ValueError(f"clustering must be 'kmeans' or 'leiden', got {clustering!r}.")


def _knn_graph(latent: np.ndarray, n_neighbors: int) -> sp.csr_matrix:
    """Symmetrized, unweighted exact kNN graph (the cell itself excluded)."""
    idx = _neighbour_indices(latent, n_neighbors)
    n = latent.shape[0]
    rows = np.repeat(np.arange(n), n_neighbors)
    graph = sp.csr_matrix((np.ones(rows.size), (rows, idx.ravel())), shape=(n, n))
    graph = ((graph + graph.T) > 0).astype(np.float64)
    return sp.csr_matrix(graph)


def _neighbour_indices(x: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Indices of each row's ``n_neighbors`` nearest other rows (exact Euclidean search)."""
    from sklearn.neighbors import NearestNeighbors

    n = x.shape[0]
    if not 1 <= n_neighbors < n:
        raise ValueError(f"n_neighbors must be in [1, n_cells) = [1, {n}), got {n_neighbors}.")
    idx = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(x).kneighbors(x)[1]
    # drop the cell itself (usually, but with duplicates not always, in the first column);
    # a stable sort moves it last and keeps the distance order of the others
    is_self = idx == np.arange(n)[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)[:, :n_neighbors]


def latent_silhouette(
    model,
    adata: AnnData | None = None,
    *,
    labels_key: str = "cell_type",
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    """Silhouette width of the cell types in the model's latent space.

    The mean over cells of ``(b - a) / max(a, b)``, with ``a`` the mean Euclidean distance of a
    cell's latent mean to the other cells of its type and ``b`` that to the cells of the nearest
    other type (:func:`sklearn.metrics.silhouette_score`; Rousseeuw, 1987).  Range ``[-1, 1]``,
    higher means cell types are better separated.  This is the raw silhouette, not the scIB
    rescaling ``(s + 1) / 2``.  Cells with a missing label are ignored.

    Parameters
    ----------
    model
        A trained scvi-tools model (:class:`scvi_unlearn.SCVI` or :class:`scvi.model.SCVI`).
    adata
        Cells to evaluate (need not be the model's own; not mutated); default the model's.
    labels_key
        Column of ``adata.obs`` holding the cell types.
    seed
        Seed of the latent means (only used by a logistic-normal latent).
    batch_size
        Cells per forward pass.

    Returns
    -------
    The silhouette, a float in ``[-1, 1]``.
    """
    with evaluation_adata(model, adata) as ad:
        labels = cell_labels(ad, labels_key)
        latent = _latent_means_registered(model, ad, seed=seed, batch_size=batch_size)
    return silhouette_from_latent(latent, labels.to_numpy())


def latent_ari(
    model,
    adata: AnnData | None = None,
    *,
    labels_key: str = "cell_type",
    clustering: Clustering = "kmeans",
    n_clusters: int | None = None,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    """Adjusted Rand index between a deterministic clustering of the latent and the cell types.

    Default clustering: k-means (:class:`sklearn.cluster.KMeans`, ``n_init=10``,
    ``random_state=seed``) of the latent means with ``k`` = the number of cell types present.
    k-means is chosen as the default because it has no resolution parameter to tune, so the
    ARI compares models at the same number of clusters.  ``clustering="leiden"`` instead runs
    Leiden (Traag et al., 2019; igraph implementation through :func:`scanpy.tl.leiden`,
    ``n_iterations=2``, ``random_state=seed``) at ``resolution`` on the symmetrized,
    unweighted exact ``n_neighbors``-nearest-neighbour graph of the latent means (as in scIB,
    Luecken et al., 2022, but at one fixed resolution and without scanpy's UMAP weights).
    ARI (Hubert & Arabie, 1985) is 1 for identical partitions, about 0 for a random one.
    Cells with a missing label are ignored.

    Parameters
    ----------
    model
        A trained scvi-tools model (:class:`scvi_unlearn.SCVI` or :class:`scvi.model.SCVI`).
    adata
        Cells to evaluate (need not be the model's own; not mutated); default the model's.
    labels_key
        Column of ``adata.obs`` holding the cell types.
    clustering
        ``"kmeans"`` (default) or ``"leiden"``.
    n_clusters
        k of k-means; default the number of distinct labels.
    resolution
        Leiden resolution.
    n_neighbors
        Neighbours of the Leiden kNN graph.
    seed
        Seed of the clustering (and of the latent means for a logistic-normal latent).
    batch_size
        Cells per forward pass.

    Returns
    -------
    The ARI, a float in ``[-1, 1]`` (``[-0.5, 1]`` in practice).
    """
    with evaluation_adata(model, adata) as ad:
        labels = cell_labels(ad, labels_key)
        latent = _latent_means_registered(model, ad, seed=seed, batch_size=batch_size)
    return ari_from_latent(
        latent,
        labels.to_numpy(),
        clustering=clustering,
        n_clusters=n_clusters,
        resolution=resolution,
        n_neighbors=n_neighbors,
        seed=seed,
    )


def knn_jaccard(latent_a: np.ndarray, latent_b: np.ndarray, n_neighbors: int = 15) -> float:
    """Mean Jaccard overlap of each cell's k nearest neighbours in two embeddings of the cells.

    For cell ``i``, ``N_a(i)`` and ``N_b(i)`` are its ``n_neighbors`` nearest other cells
    (exact Euclidean search, the cell itself excluded) in ``latent_a`` and ``latent_b``; the
    score is the mean over cells of ``|N_a(i) & N_b(i)| / |N_a(i) | N_b(i)|``, in ``[0, 1]``,
    1 when every neighbourhood is preserved.  Rows of the two arrays must be the same cells.
    """
    latent_a = np.asarray(latent_a, dtype=np.float64)
    latent_b = np.asarray(latent_b, dtype=np.float64)
    if latent_a.ndim != 2 or latent_b.ndim != 2 or latent_a.shape[0] != latent_b.shape[0]:
        raise ValueError(
            "The two embeddings must be 2-d arrays with the same cells as rows; got shapes "
            f"{latent_a.shape} and {latent_b.shape}."
        )
    neighbours_a = _neighbour_indices(latent_a, n_neighbors)
    neighbours_b = _neighbour_indices(latent_b, n_neighbors)
    both = np.sort(np.concatenate([neighbours_a, neighbours_b], axis=1), axis=1)
    shared = (both[:, 1:] == both[:, :-1]).sum(axis=1)
    return float(np.mean(shared / (2 * n_neighbors - shared)))


def neighborhood_preservation(
    model,
    reference,
    adata: AnnData | None = None,
    *,
    n_neighbors: int = 15,
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    """How well ``model`` preserves the latent neighbourhoods of ``reference`` on the same cells.

    Both models embed the cells of ``adata`` (posterior means, eval mode) and the result is
    :func:`knn_jaccard` of the two embeddings: the mean Jaccard overlap of every cell's
    ``n_neighbors`` nearest neighbours.  The reference is typically the model retrained without
    the forget set, so 1 means the unlearned model organises the cells exactly as the exact
    retrain does.  A model against itself scores 1.

    Parameters
    ----------
    model
        The evaluated model (:class:`scvi_unlearn.SCVI` or :class:`scvi.model.SCVI`).
    reference
        The reference model; it may have been set up with another AnnData object.
    adata
        Cells to embed (not mutated); default the evaluated model's AnnData.
    n_neighbors
        Size of each neighbourhood (the cell itself excluded).
    seed
        Seed of the latent means (only used by a logistic-normal latent).
    batch_size
        Cells per forward pass.

    Returns
    -------
    The mean Jaccard overlap, a float in ``[0, 1]``.
    """
    cells = model.adata if adata is None else adata
    za = latent_means(model, cells, seed=seed, batch_size=batch_size)
    zb = latent_means(reference, cells, seed=seed, batch_size=batch_size)
    return knn_jaccard(za, zb, n_neighbors=n_neighbors)
