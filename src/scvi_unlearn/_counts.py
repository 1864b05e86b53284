"""Checks that a matrix can be scored by scVI's likelihood, naming the first offending entry.

scvi-tools checks counts by *sampling* a few rows (and only warns), so NaN, infinite or negative
values usually reach the model and surface as an unreadable ``Expected parameter loc ... found
invalid values`` from torch, or as an attack AUC computed on NaN scores.  :func:`check_counts`
scans every stored value (in chunks, without densifying a sparse matrix) and says what is wrong
and where.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

#: likelihoods of scVI's decoder that model counts (``"normal"`` models any real value)
COUNT_LIKELIHOODS = ("zinb", "nb", "poisson")

#: values scanned per chunk (bounds the temporary memory of the check)
_CHUNK = 1 << 22


def _stored_values(matrix) -> np.ndarray | None:
    """The stored values of ``matrix`` as a 1-D array, or ``None`` for unsupported types."""
    if sp.issparse(matrix):
        if matrix.format not in ("csr", "csc", "coo"):
            return None
        return np.asarray(matrix.data)
    if isinstance(matrix, np.ndarray):
        return matrix.reshape(-1)
    return None  # backed (h5py) or dask arrays: not scanned


def _position(matrix, flat: int) -> tuple[int, int]:
    """(row, column) of the ``flat``-th stored value of ``matrix``."""
    if not sp.issparse(matrix):
        row, col = np.unravel_index(flat, matrix.shape)
        return int(row), int(col)
    if matrix.format == "coo":
        return int(matrix.row[flat]), int(matrix.col[flat])
    major = int(np.searchsorted(matrix.indptr, flat, side="right") - 1)
    minor = int(matrix.indices[flat])
    return (major, minor) if matrix.format == "csr" else (minor, major)


def check_counts(
    matrix,
    what: str,
    obs_names=None,
    var_names=None,
    *,
    counts: bool = True,
    warn_non_integer: bool = True,
) -> None:
    """Refuse NaN / infinite (and, for counts, negative) values; warn on non-integer counts.

    Parameters
    ----------
    matrix
        A dense :class:`numpy.ndarray` or a CSR / CSC / COO sparse matrix (other array types,
        e.g. backed or dask arrays, are not scanned).
    what
        How to name the matrix in messages, e.g. ``"adata.layers['counts']"``.
    obs_names, var_names
        Names of the rows and columns, to name the first offending entry.
    counts
        Whether the matrix must hold counts (a count likelihood: ``"zinb"``, ``"nb"``,
        ``"poisson"``); with ``False`` only NaN and infinite values are refused.
    warn_non_integer
        Warn (:class:`UserWarning`) when counts are not integers.

    Raises
    ------
    ValueError
        When the matrix holds NaN or infinite values, or negative values with ``counts``.
    """
    values = _stored_values(matrix)
    if values is None or values.size == 0 or values.dtype.kind == "b":
        return
    floating = values.dtype.kind in "fc"
    signed = values.dtype.kind in "fci"
    found = {"non-finite": [0, None], "negative": [0, None], "non-integer": [0, None]}
    for start in range(0, values.size, _CHUNK):
        chunk = values[start : start + _CHUNK]
        finite = np.isfinite(chunk) if floating else np.ones(chunk.shape, dtype=bool)
        masks = {"non-finite": ~finite}
        if counts and signed:
            masks["negative"] = finite & (chunk < 0)
        if counts and floating and warn_non_integer:
            masks["non-integer"] = finite & (chunk != np.round(chunk))
        for kind, mask in masks.items():
            n = int(np.count_nonzero(mask))
            if n:
                if found[kind][1] is None:
                    found[kind][1] = start + int(np.argmax(mask))
                found[kind][0] += n

    def _where(kind: str) -> str:
        flat = found[kind][1]
        row, col = _position(matrix, flat)
        cell = repr(str(obs_names[row])) if obs_names is not None else f"row {row}"
        gene = repr(str(var_names[col])) if var_names is not None else f"column {col}"
        return f"e.g. cell {cell}, gene {gene}: {values[flat]!r}"

    need = "raw counts (finite, non-negative integers)" if counts else "finite values"
    if found["non-finite"][0]:
        raise ValueError(
            f"{what} contains {found['non-finite'][0]} NaN or infinite values "
            f"({_where('non-finite')}); scVI needs {need}."
        )
    if found["negative"][0]:
        raise ValueError(
            f"{what} contains {found['negative'][0]} negative values ({_where('negative')}); "
            f"scVI's count likelihood needs {need}. Normalized, scaled or log-transformed data "
            "are not counts: register the raw counts layer."
        )
    if found["non-integer"][0]:
        warnings.warn(
            f"{what} contains {found['non-integer'][0]} non-integer values "
            f"({_where('non-integer')}); scVI's count likelihood expects {need}, and ELBOs "
            "(and any audit built on them) of normalized or log-transformed data are not "
            "comparable with those of counts.",
            UserWarning,
            stacklevel=3,
        )
