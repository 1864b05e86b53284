"""Cached, checksummed downloads (through :mod:`pooch`) with a progress bar.

Files land in a cache directory (``$SCVI_UNLEARN_DATA`` or the platform cache folder, e.g.
``~/.cache/scvi-unlearn``) and are downloaded once.  Every file is checked against a SHA-256:

* a hash pinned in :data:`REMOTE_FILES` (or passed by the caller) is verified on download and on
  every later load;
* for a file whose hash is not pinned yet, the hash computed at the first download is written next
  to the file (``<name>.sha256``) and every later load is verified against it
  (trust-on-first-use), with a warning asking to pin it.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pooch


@dataclass(frozen=True)
class RemoteFile:
    """A file of a public dataset: where it lives and its SHA-256 (``None`` if not pinned)."""

    fname: str
    url: str
    sha256: str | None = None


#: Files behind :func:`~scvi_unlearn.data.pbmc33k` and :func:`~scvi_unlearn.data.tabula_muris`.
REMOTE_FILES: dict[str, RemoteFile] = {
    "pbmc33k": RemoteFile(
        "pbmc33k_filtered_gene_bc_matrices.tar.gz",
        "https://cf.10xgenomics.com/samples/cell-exp/1.1.0/pbmc33k/"
        "pbmc33k_filtered_gene_bc_matrices.tar.gz",
    ),
    # Tabula Muris droplet (10x) data, figshare article 5968960 (The Tabula Muris
    # Consortium 2018): one CellRanger matrix folder per tissue channel
    "tabula_muris_droplet": RemoteFile(
        "droplet.zip", "https://ndownloader.figshare.com/files/10700167"
    ),
    "tabula_muris_annotations": RemoteFile(
        "annotations_droplet.csv", "https://ndownloader.figshare.com/files/13088039"
    ),
}


def cache_dir() -> Path:
    """The download cache: ``$SCVI_UNLEARN_DATA`` if set, else the platform cache folder."""
    env = os.environ.get("SCVI_UNLEARN_DATA")
    return Path(env) if env else Path(pooch.os_cache("scvi-unlearn"))


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch(
    key: str,
    *,
    directory: str | Path | None = None,
    sha256: str | None = None,
    progressbar: bool = True,
    downloader=None,
) -> Path:
    """Download (once) and verify one of :data:`REMOTE_FILES`; return its local path.

    Parameters
    ----------
    key
        Name in :data:`REMOTE_FILES`.
    directory
        Cache directory; default :func:`cache_dir`.
    sha256
        Expected SHA-256, overriding the pinned one.
    progressbar
        Show a progress bar while downloading.
    downloader
        A pooch downloader (callable ``(url, output_file, pooch)``); default HTTP.
    """
    if key not in REMOTE_FILES:
        raise KeyError(f"Unknown remote file {key!r}; known: {sorted(REMOTE_FILES)}.")
    remote = REMOTE_FILES[key]
    directory = Path(directory) if directory is not None else cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    expected = sha256 or remote.sha256
    sidecar = directory / f"{remote.fname}.sha256"
    if expected is None and sidecar.exists():
        expected = sidecar.read_text().strip()
    if downloader is None:
        downloader = pooch.HTTPDownloader(progressbar=progressbar)
    try:
        path = pooch.retrieve(
            url=remote.url,
            known_hash=None if expected is None else f"sha256:{expected}",
            fname=remote.fname,
            path=directory,
            downloader=downloader,
        )
    except ValueError as err:  # pooch's hash mismatch
        raise ValueError(
            f"Checksum mismatch for {remote.fname} in {directory}: the file is corrupt or "
            f"has changed upstream. Delete it to download again. ({err})"
        ) from err
    path = Path(path)
    if expected is None:
        digest = sha256sum(path)
        sidecar.write_text(digest + "\n")
        warnings.warn(
            f"{remote.fname} has no pinned SHA-256 yet; recorded {digest} in {sidecar} and "
            "every later load is verified against it. Pin it in "
            "scvi_unlearn.data.REMOTE_FILES.",
            UserWarning,
            stacklevel=2,
        )
    return path
