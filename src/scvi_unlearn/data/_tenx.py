"""Readers for 10x Genomics CellRanger matrix folders inside archives."""

from __future__ import annotations

import tarfile
import tempfile
import zipfile
from pathlib import Path

import anndata as ad


def _matrix_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("matrix.mtx*") if p.is_file())


def read_10x_tar(path: str | Path) -> ad.AnnData:
    """Read the single CellRanger (v1/v2) matrix folder inside a ``.tar.gz`` archive."""
    import scanpy as sc

    with tempfile.TemporaryDirectory() as tmp, tarfile.open(path, "r:*") as tar:
        tar.extractall(tmp, filter="data")
        dirs = _matrix_dirs(Path(tmp))
        if len(dirs) != 1:
            raise ValueError(f"Expected one 10x matrix folder in {path}, found {len(dirs)}.")
        adata = sc.read_10x_mtx(dirs[0], var_names="gene_symbols", make_unique=True)
        adata = adata.copy()
    return adata


def read_10x_zip_channels(path: str | Path) -> dict[str, ad.AnnData]:
    """Read every CellRanger matrix folder inside a ``.zip``; keys are the folder names."""
    import scanpy as sc

    out: dict[str, ad.AnnData] = {}
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as zf:
        zf.extractall(tmp)
        for folder in _matrix_dirs(Path(tmp)):
            out[folder.name] = sc.read_10x_mtx(
                folder, var_names="gene_symbols", make_unique=True
            ).copy()
    if not out:
        raise ValueError(f"No 10x matrix folder found in {path}.")
    return out
