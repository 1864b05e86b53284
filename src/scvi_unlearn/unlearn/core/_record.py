"""Provenance of an unlearning run: the ``unlearn_record_`` saved with the new model.

The record names the method, its hyper-parameters (defaults filled in), the seed, the number of
forgotten cells, a *salted* SHA-256 digest of their sorted ``obs_names`` (so that a holder of the
list can verify it with :func:`verify_forget_digest`, while the record alone does not reveal the
cells), wall times, package versions, the per-step losses and a slot for an audit result, and
what a deletion certificate (:func:`~scvi_unlearn.unlearn.core._certificate.issue_certificate`)
states about the result: SHA-256 digests of the new model's training cells, of their counts and
of its weights, and the chain of the earlier requests that produced the original.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

#: version of the record layout (2: ``guarantee``, ``retain_digest``, ``weights_sha256`` and
#: ``previous``, the chain of earlier requests)
RECORD_VERSION = 2

_PACKAGES = ("scvi-tools", "torch", "scvi-unlearn", "opacus", "anndata", "lightning")


def forget_digest(obs_names: Iterable[str], salt: str) -> str:
    """Salted SHA-256 hex digest of the sorted, de-duplicated ``obs_names``."""
    names = sorted({str(n) for n in obs_names})
    h = hashlib.sha256()
    h.update(salt.encode())
    for name in names:
        h.update(b"\x00")
        h.update(name.encode())
    return h.hexdigest()


def names_sha256(obs_names: Iterable[str]) -> str:
    """Unsalted SHA-256 hex digest of the sorted, de-duplicated ``obs_names``.

    The same construction as :func:`forget_digest` with an empty salt; used for the retain
    cells, whose names a saved model keeps anyway (``train_obs_names_``).
    """
    return forget_digest(obs_names, "")


#: cells canonicalised at a time by :func:`counts_sha256` (bounds its memory: a few MB a chunk
#: at 2,000 genes, whatever the number of cells)
HASH_CHUNK_CELLS = 1024


def counts_sha256(adata: AnnData, obs_names: Iterable[str], registry: dict[str, Any]) -> str:
    """SHA-256 of the registered counts of ``obs_names`` (sorted) and of the genes' names.

    The counts are read :data:`HASH_CHUNK_CELLS` cells at a time (three passes: the row
    pointers, the column indices, the values), so the digest needs no copy of the whole matrix;
    the digest is that of the whole canonical matrix, as if it had been built at once.

    Parameters
    ----------
    adata
        An AnnData holding the cells (any order; others may be present).
    obs_names
        The cells to digest; sorted and de-duplicated first.
    registry
        ``{"attr_name": ..., "attr_key": ...}``: where the counts are (the model's registry
        entry for ``X``, e.g. ``layers["counts"]``).

    Returns
    -------
    str
        The hex digest of the genes' names, the matrix shape and its canonical CSR form
        (float64 values, sorted column indices, no explicit zeros): dense or sparse storage
        and the value dtype do not change it; any changed count does.

    Raises
    ------
    KeyError
        When a cell is not in ``adata``.
    """
    from scvi.data._utils import get_anndata_attribute

    names = sorted({str(n) for n in obs_names})
    index = pd.Index(np.asarray(adata.obs_names, dtype=str))
    positions = index.get_indexer(names)
    if (positions < 0).any():
        missing = [n for n, p in zip(names, positions, strict=True) if p < 0]
        raise KeyError(f"{len(missing)} cells are not in the AnnData, e.g. {missing[:3]}.")
    matrix = get_anndata_attribute(adata, registry["attr_name"], registry.get("attr_key"))
    if sp.issparse(matrix) and matrix.format not in ("csr", "csc"):
        matrix = sp.csr_matrix(matrix)  # COO and others cannot take rows
    chunks = [
        positions[i : i + HASH_CHUNK_CELLS] for i in range(0, positions.size, HASH_CHUNK_CELLS)
    ]
    h = hashlib.sha256()
    for gene in np.asarray(adata.var_names, dtype=str):
        h.update(gene.encode())
        h.update(b"\x00")
    h.update(np.asarray([positions.size, adata.n_vars], dtype=np.int64).tobytes())
    offset = 0
    h.update(np.zeros(1, dtype=np.int64).tobytes())
    for chunk in chunks:
        nnz = np.cumsum(np.diff(_canonical_rows(matrix, chunk).indptr), dtype=np.int64)
        h.update((nnz + offset).tobytes())
        offset += int(nnz[-1]) if nnz.size else 0
    for chunk in chunks:
        h.update(np.asarray(_canonical_rows(matrix, chunk).indices, dtype=np.int64).tobytes())
    for chunk in chunks:
        h.update(np.ascontiguousarray(_canonical_rows(matrix, chunk).data, dtype="<f8").tobytes())
    return h.hexdigest()


def _canonical_rows(matrix, positions: np.ndarray) -> sp.csr_matrix:
    """Rows ``positions`` of ``matrix`` (dense, sparse or backed) as a canonical float64 CSR
    matrix: duplicates summed, explicit zeros removed, column indices sorted."""
    order = np.argsort(positions, kind="stable")  # backed (h5py) arrays need sorted rows
    rows = matrix[positions[order]]
    x = sp.csr_matrix(rows, dtype=np.float64)[np.argsort(order, kind="stable")]
    x.sum_duplicates()
    x.eliminate_zeros()
    x.sort_indices()
    return x


def weights_sha256(module) -> str:
    """SHA-256 of a module's ``state_dict`` (names, dtypes, shapes and values, on the CPU)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        h.update(name.encode())
        h.update(str(array.dtype).encode())
        h.update(np.asarray(array.shape, dtype=np.int64).tobytes())
        h.update(array.tobytes())
    return h.hexdigest()


def request_summary(record: dict[str, Any]) -> dict[str, Any]:
    """One link of a certificate's chain: what an earlier request's record states.

    Method, kind, exact and private flags (from the registry at the time of the request), seed,
    number of forgotten cells, the salted forget digest (so the requester can still verify it),
    the retain and weight digests and the time; no cell name.
    """
    keys = (
        "method",
        "guarantee",
        "seed",
        "n_forget",
        "forget_digest",
        "retain_digest",
        "weights_sha256",
        "created",
    )
    return {k: record.get(k) for k in keys}


def verify_forget_digest(record: dict[str, Any], obs_names: Iterable[str]) -> bool:
    """Whether ``obs_names`` is exactly the set of cells forgotten in ``record``.

    Parameters
    ----------
    record
        A model's ``unlearn_record_``.
    obs_names
        The candidate list of forgotten cells (order and duplicates do not matter).
    """
    digest = record["forget_digest"]
    return secrets.compare_digest(forget_digest(obs_names, digest["salt"]), digest["sha256"])


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages an unlearning result depends on."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def plain(value: Any) -> Any:
    """A picklable, human-readable copy of a hyper-parameter value (repr for objects).

    An AnnData (e.g. ``nonmembers`` of the critic methods) becomes a summary,
    ``"AnnData of <n> cells x <m> genes"``: no cell names enter the record.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, AnnData):
        return f"AnnData of {value.n_obs} cells x {value.n_vars} genes"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return repr(value)


def new_record(
    method: str,
    hyperparameters: dict[str, Any],
    seed: int,
    forget_names: np.ndarray,
) -> dict[str, Any]:
    """A record with the request's fields; timings, log and checks are filled in later."""
    salt = secrets.token_hex(16)
    return {
        "record_version": RECORD_VERSION,
        "method": method,
        "hyperparameters": {k: plain(v) for k, v in hyperparameters.items()},
        "seed": int(seed),
        "n_forget": int(len(forget_names)),
        "forget_digest": {
            "algorithm": "sha256(salt + sorted obs_names)",
            "salt": salt,
            "sha256": forget_digest(forget_names, salt),
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "method_time_s": None,
        "wall_time_s": None,
        "log": [],
        "checks": None,
        "audit": None,
        "previous": [],
    }
