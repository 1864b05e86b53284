"""Marker-gene correlation between observed counts and the model's expected counts.

The original study decoded without the cells' library sizes, so its "marker correlation" did not
depend on the model (bug 5 of the design notes).  Here the model's expected count of gene ``g``
in cell ``n`` is the mean of its negative binomial, ``mu_ng = l_n * rho_ng`` with ``l_n`` the
cell's library size as the model sees it (the observed total count over the model's genes for
the default ``use_observed_lib_size=True``, the latent library otherwise) and ``rho_ng`` the
decoded expression frequencies: ``get_normalized_expression(library_size="latent")``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scvi_unlearn._evaluation import eval_mode, evaluation_adata
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.metrics._evaluation_data import cell_labels

Markers = Mapping[str, Sequence[str]] | Sequence[str]


def _counts_matrix(adata: AnnData, layer: str | None):
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"layer {layer!r} is not in adata.layers; available layers: {list(adata.layers)}."
        )
    return adata.layers[layer]


def select_marker_genes(
    adata: AnnData,
    labels_key: str = "cell_type",
    *,
    layer: str | None = None,
    n_markers: int = 5,
    min_cells: int = 3,
) -> dict[str, list[str]]:
    """Top marker genes of every cell type, found from the data alone.

    Rule: counts are normalized to 10,000 per cell and ``log1p``-transformed; every cell type
    with at least ``min_cells`` cells is compared with all other cells by
    :func:`scanpy.tl.rank_genes_groups` (``method="wilcoxon"``, ``reference="rest"``); its
    markers are the ``n_markers`` genes with the highest Wilcoxon score among those with a
    positive log fold change.  Deterministic; no model is involved, so every model compared is
    scored on the same genes.

    Parameters
    ----------
    adata
        Cells with raw counts (not mutated).
    labels_key
        Column of ``adata.obs`` holding the cell types; cells with a missing label are ignored.
    layer
        Layer holding the raw counts; ``None`` uses ``adata.X``.
    n_markers
        Markers per cell type.
    min_cells
        Cell types with fewer cells get no markers.

    Returns
    -------
    ``{cell_type: [gene, ...]}`` in decreasing score order, for the eligible cell types.
    """
    import scanpy as sc

    if n_markers < 1:
        raise ValueError(f"n_markers must be >= 1, got {n_markers}.")
    if min_cells < 2:
        raise ValueError(f"min_cells must be >= 2 (a Wilcoxon test needs it), got {min_cells}.")
    labels = cell_labels(adata, labels_key)
    counts = _counts_matrix(adata, layer)
    if sp.issparse(counts):
        counts = sp.csr_matrix(counts, dtype=np.float64)
        data_min = counts.data.min(initial=0.0)
    else:
        counts = np.asarray(counts, dtype=np.float64)
        data_min = counts.min(initial=0.0)
    keep = labels.notna().to_numpy()
    if data_min < 0:
        raise ValueError(
            "Marker selection needs raw (non-negative) counts; pass the counts layer as `layer`."
        )
    sizes = labels[keep].value_counts()
    groups = sorted(str(g) for g in sizes.index[sizes.to_numpy() >= min_cells])
    if len(sizes) < 2:
        raise ValueError(
            f"Marker selection needs at least two cell types in {labels_key!r}; found "
            f"{len(sizes)}."
        )
    if not groups:
        raise ValueError(f"No cell type in {labels_key!r} has at least {min_cells} cells.")
    tmp = AnnData(
        X=counts[keep],
        obs=pd.DataFrame(
            {"group": pd.Categorical(labels[keep].to_numpy().astype(str))},
            index=np.asarray(adata.obs_names)[keep],
        ),
        var=pd.DataFrame(index=np.asarray(adata.var_names, dtype=str)),
    )
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sc.tl.rank_genes_groups(
            tmp, "group", groups=groups, reference="rest", method="wilcoxon", use_raw=False
        )
    markers: dict[str, list[str]] = {}
    for group in groups:
        table = sc.get.rank_genes_groups_df(tmp, group=group)
        table = table[table["logfoldchanges"] > 0]
        table = table.sort_values("scores", ascending=False, kind="stable")
        markers[group] = table["names"].astype(str).head(n_markers).tolist()
    return markers


def _marker_genes(markers: Markers) -> tuple[list[str], dict[str, list[str]]]:
    """Unique genes in first-seen order, and for each the cell types it marks."""
    if isinstance(markers, Mapping):
        items = [(str(t), list(genes)) for t, genes in markers.items()]
    elif isinstance(markers, str):
        raise TypeError("markers must be a list of genes or a {cell_type: genes} mapping.")
    else:
        items = [("", list(markers))]
    genes: list[str] = []
    marks: dict[str, list[str]] = {}
    for cell_type, gene_list in items:
        for gene in gene_list:
            gene = str(gene)
            if gene not in marks:
                genes.append(gene)
                marks[gene] = []
            if cell_type:
                marks[gene].append(cell_type)
    if not genes:
        raise ValueError("No marker genes given.")
    return genes, marks


def _pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of ``a`` with the same column of ``b``."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=0) / denom
    r[denom == 0] = np.nan
    return r


def marker_gene_correlations(
    model,
    adata: AnnData | None = None,
    *,
    labels_key: str | None = "cell_type",
    markers: Markers | None = None,
    n_markers: int = 5,
    min_cells: int = 3,
    n_draws: int = 8,
    seed: int = 0,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Per marker gene, the correlation across cells of observed and model-expected counts.

    For every marker gene ``g`` the Pearson correlation, across the cells of ``adata``, of
    ``log1p(x_ng)`` (the observed count, from the data the model was set up on, e.g. the
    ``counts`` layer) and ``log1p(mu_ng)``, where ``mu_ng = l_n * rho_ng`` is the model's
    expected count (negative-binomial mean) with the cell's own library size ``l_n``:
    ``get_normalized_expression(library_size="latent")`` averaged over ``n_draws`` posterior
    draws of ``z`` under ``seed``, in eval mode.  Both sides use the same ``l_n``, so a model
    whose ``rho`` ignores the cell already gets a positive correlation from library size alone;
    a model that captures cell-type-specific expression scores higher.

    Parameters
    ----------
    model
        A trained scvi-tools model (:class:`scvi_unlearn.SCVI` or :class:`scvi.model.SCVI`).
    adata
        Cells to evaluate (need not be the model's own; not mutated); default the model's.
    labels_key
        Column of ``adata.obs`` with cell types, used to select markers when ``markers`` is
        ``None`` (:func:`select_marker_genes` on these cells' counts).
    markers
        Marker genes: ``{cell_type: [gene, ...]}`` or a list of genes.  Pass the same markers
        (e.g. selected once on the full data) to compare several models or cell sets.
    n_markers, min_cells
        Passed to :func:`select_marker_genes` when ``markers`` is ``None``.
    n_draws
        Posterior draws of ``z`` averaged in the expected counts.
    seed
        Seed of the draws; the global RNG is left untouched.
    batch_size
        Cells per forward pass.

    Returns
    -------
    DataFrame indexed by gene with ``cell_types`` (the types the gene marks, comma-separated),
    ``correlation`` (NaN when the gene is never observed in these cells), ``observed_mean``
    and ``expected_mean`` (mean counts over the cells).
    """
    with evaluation_adata(model, adata) as ad:
        return _marker_table(
            model,
            ad,
            labels_key=labels_key,
            markers=markers,
            n_markers=n_markers,
            min_cells=min_cells,
            n_draws=n_draws,
            seed=seed,
            batch_size=batch_size,
        )


def _marker_table(
    model,
    ad: AnnData,
    *,
    labels_key: str | None,
    markers: Markers | None,
    n_markers: int,
    min_cells: int,
    n_draws: int,
    seed: int,
    batch_size: int,
) -> pd.DataFrame:
    """:func:`marker_gene_correlations` on an AnnData already registered with ``model``."""
    from scvi import REGISTRY_KEYS

    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}.")
    if markers is None and labels_key is None:
        raise ValueError("Pass `markers` or a `labels_key` to select them from the data.")
    if ad.n_obs < 3:
        raise ValueError(f"Marker correlation needs at least 3 cells, got {ad.n_obs}.")
    manager = model.get_anndata_manager(ad, required=True)
    counts = manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    var_names = pd.Index(np.asarray(ad.var_names, dtype=str))
    if markers is None:
        cell_labels(ad, labels_key)  # clear error for a missing column
        counts_ad = AnnData(X=counts, obs=ad.obs[[labels_key]].copy(), var=ad.var[[]])
        counts_ad.obs_names = ad.obs_names
        counts_ad.var_names = var_names
        markers = select_marker_genes(
            counts_ad, labels_key, n_markers=n_markers, min_cells=min_cells
        )
    genes, marks = _marker_genes(markers)
    missing = [g for g in genes if g not in var_names]
    if missing:
        raise KeyError(f"Marker genes not among the model's genes: {missing}.")
    if not var_names.is_unique:
        raise ValueError("Marker correlation needs unique var_names (gene names).")
    cols = var_names.get_indexer(genes)
    observed = counts[:, cols]
    observed = observed.toarray() if sp.issparse(observed) else np.asarray(observed)
    with eval_mode(model.module), isolated_seed(seed):
        expected = model.get_normalized_expression(
            ad,
            library_size="latent",
            n_samples=n_draws,
            return_mean=True,
            return_numpy=True,
            gene_list=genes,
            batch_size=batch_size,
        )
    observed = np.asarray(observed, dtype=np.float64)
    # scvi-tools returns the genes of gene_list in var order: put them back in `genes` order
    expected = np.asarray(expected, dtype=np.float64).reshape(observed.shape)
    expected = expected[:, np.argsort(np.argsort(cols))]
    return pd.DataFrame(
        {
            "cell_types": [",".join(marks[g]) for g in genes],
            "correlation": _pearson_columns(np.log1p(observed), np.log1p(expected)),
            "observed_mean": observed.mean(axis=0),
            "expected_mean": expected.mean(axis=0),
        },
        index=pd.Index(genes, name="gene"),
    )


def marker_correlation(
    model,
    adata: AnnData | None = None,
    *,
    labels_key: str | None = "cell_type",
    markers: Markers | None = None,
    n_markers: int = 5,
    min_cells: int = 3,
    n_draws: int = 8,
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    """Mean marker-gene correlation of observed and expected counts (with library size).

    The mean over the unique marker genes of :func:`marker_gene_correlations`' ``correlation``
    (genes never observed in these cells are skipped).  In ``[-1, 1]``; higher means the model
    reproduces cell-type marker expression better.  Same parameters as
    :func:`marker_gene_correlations`.

    Returns
    -------
    The mean correlation (NaN, with a warning, if no marker gene is observed in the cells).
    """
    table = marker_gene_correlations(
        model,
        adata,
        labels_key=labels_key,
        markers=markers,
        n_markers=n_markers,
        min_cells=min_cells,
        n_draws=n_draws,
        seed=seed,
        batch_size=batch_size,
    )
    return _mean_correlation(table)


def _mean_correlation(table: pd.DataFrame) -> float:
    r = table["correlation"].to_numpy()
    if np.isnan(r).all():
        warnings.warn(
            "No marker gene is observed in these cells: marker correlation is NaN.",
            UserWarning,
            stacklevel=3,
        )
        return float("nan")
    return float(np.nanmean(r))
