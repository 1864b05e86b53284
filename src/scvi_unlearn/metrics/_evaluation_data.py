"""Cell-type labels of the cells a utility metric evaluates, read and checked.

Registering the cells with the model without mutating them, and eval mode, are in
:mod:`scvi_unlearn._evaluation` (shared with the audit and the Fisher analysis).
"""

from __future__ import annotations

import pandas as pd
from anndata import AnnData


def cell_labels(adata: AnnData, labels_key: str) -> pd.Series:
    """Return ``adata.obs[labels_key]`` as strings (missing labels stay missing), with checks."""
    if not isinstance(labels_key, str):
        raise TypeError(f"labels_key must be a column name (str), got {labels_key!r}.")
    if labels_key not in adata.obs.columns:
        raise KeyError(
            f"labels_key {labels_key!r} is not a column of adata.obs; available columns: "
            f"{list(map(str, adata.obs.columns))}."
        )
    labels = adata.obs[labels_key]
    missing = labels.isna().to_numpy()
    values = [None if m else str(v) for v, m in zip(labels.to_numpy(), missing)]
    return pd.Series(values, index=adata.obs_names, dtype=object, name=labels_key)
