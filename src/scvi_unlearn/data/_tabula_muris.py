"""Tabula Muris droplet (10x) data with the consortium's cell-type annotations, downloaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import pandas as pd

from scvi_unlearn.data._download import fetch
from scvi_unlearn.data._preprocess import preprocess_counts
from scvi_unlearn.data._tenx import read_10x_zip_channels

#: Channels shipped unfiltered (every barcode, not only cells); the study excluded them too.
UNFILTERED_CHANNELS = (
    "Lung-10X_P8_12",
    "Lung-10X_P8_13",
    "Trachea-10X_P8_14",
    "Trachea-10X_P8_15",
)


def _cell_id(channel_folder: str, barcode: str) -> str:
    """``"Lung-10X_P7_8"``, ``"AAAC...-1"`` -> ``"10X_P7_8_AAAC..."`` (the annotations' id)."""
    channel = channel_folder.split("-", 1)[1]
    return f"{channel}_{barcode.split('-')[0]}"


def tabula_muris(
    directory: str | Path | None = None,
    *,
    exclude_channels: Sequence[str] = UNFILTERED_CHANNELS,
    annotated_only: bool = True,
    preprocess: bool = True,
    seed: int = 0,
    progressbar: bool = True,
    downloader=None,
    **preprocess_kwargs,
) -> ad.AnnData:
    """Tabula Muris droplet data :cite:p:`TabulaMuris18`, one AnnData over all tissue channels.

    Downloads ``droplet.zip`` (CellRanger matrix folders ``<Tissue>-<channel>``) and
    ``annotations_droplet.csv`` once into the cache, verifies their checksums, concatenates the
    channels and joins the annotations on the consortium's cell id (``<channel>_<barcode>``).

    Parameters
    ----------
    directory
        Cache directory (default :func:`~scvi_unlearn.data.cache_dir`).
    exclude_channels
        Channel folders to skip (default: the four unfiltered ones).
    annotated_only
        Keep only cells with a ``cell_ontology_class`` annotation.
    preprocess
        Apply :func:`~scvi_unlearn.data.preprocess_counts` (mitochondrial genes ``mt-``).
    seed
        Seed of the PCA and Leiden steps.
    progressbar, downloader
        Download options (a custom pooch downloader is used by the tests to mock the network).
    **preprocess_kwargs
        Passed to :func:`~scvi_unlearn.data.preprocess_counts`.

    Returns
    -------
    AnnData with ``obs["cell_type"]`` (``cell_ontology_class``), ``obs["tissue"]``,
    ``obs["channel"]`` and integer counts in ``layers["counts"]``.
    """
    zip_path = fetch(
        "tabula_muris_droplet", directory=directory, progressbar=progressbar, downloader=downloader
    )
    ann_path = fetch(
        "tabula_muris_annotations",
        directory=directory,
        progressbar=progressbar,
        downloader=downloader,
    )
    channels = read_10x_zip_channels(zip_path)
    parts = []
    for folder, part in sorted(channels.items()):
        if folder in exclude_channels:
            continue
        if "-" not in folder:
            raise ValueError(f"Unexpected channel folder name {folder!r} (want Tissue-channel).")
        part.obs["tissue"] = folder.split("-", 1)[0]
        part.obs["channel"] = folder.split("-", 1)[1]
        part.obs_names = [_cell_id(folder, bc) for bc in part.obs_names]
        parts.append(part)
    if not parts:
        raise ValueError("Every channel was excluded.")
    adata = ad.concat(parts, join="inner", merge="same")
    adata.obs_names_make_unique()

    ann = pd.read_csv(ann_path, low_memory=False)
    if "cell" not in ann or "cell_ontology_class" not in ann:
        raise ValueError(
            f"{ann_path} lacks the 'cell' / 'cell_ontology_class' columns of the "
            "Tabula Muris annotations."
        )
    ann = ann.drop_duplicates("cell").set_index("cell")
    cell_type = ann["cell_ontology_class"].reindex(adata.obs_names)
    if annotated_only:
        keep = cell_type.notna().to_numpy()
        adata = adata[keep].copy()
        cell_type = cell_type[keep]
    adata.obs["cell_type"] = pd.Categorical(cell_type.fillna("unannotated").astype(str))
    for col in ("free_annotation", "mouse.id", "mouse.sex", "subtissue"):
        if col in ann:
            adata.obs[col] = ann[col].reindex(adata.obs_names).astype(str).to_numpy()
    adata.uns["dataset"] = "Tabula Muris droplet (figshare 5968960) + annotations_droplet.csv"
    if not preprocess:
        adata.layers["counts"] = adata.X.copy()
        return adata
    return preprocess_counts(adata, seed=seed, mito_prefix="mt-", **preprocess_kwargs)
