"""Fisher information in the per-label offsets of a :class:`~scvi_unlearn.ConditionalSCVI`.

A label's offsets get a gradient only from cells of that label, so the retain cells' Fisher on
the offsets of a label no retain cell has is exactly zero (``docs/fisher.md``, "Conditional
scVI"); :func:`label_offset_shares` reports it with the share of the forget Fisher there.
"""

from __future__ import annotations

import numpy as np
from scvi import REGISTRY_KEYS

#: Parameter name of the per-label gene offsets of a ConditionalSCVI (genes x labels).
LABEL_OFFSETS = "decoder.px_label_offset.weight"


def _label_codes(model, cells) -> np.ndarray:
    adata, indices = cells
    codes = model.get_from_registry(adata, REGISTRY_KEYS.LABELS_KEY)
    return np.asarray(codes).reshape(-1)[np.asarray(indices, dtype=int)].astype(int)


def label_offset_shares(model, forget_cells, retain_cells, forget, retain) -> dict:
    """Where the forget Fisher mass of a ConditionalSCVI lives: the offsets of the labels no
    retain cell has, the other labels' offsets, the shared parameters (the
    ``FisherOverlap.label_offsets`` summary); ``forget`` / ``retain`` are the two
    :class:`~scvi_unlearn.fisher.DiagonalFisher`, ``*_cells`` ``(adata, indices)``."""
    f_codes = np.unique(_label_codes(model, forget_cells))
    r_codes = np.unique(_label_codes(model, retain_cells))
    gone = np.setdiff1d(f_codes, r_codes)
    field = model.registry_["field_registries"][REGISTRY_KEYS.LABELS_KEY]
    names = np.asarray(field["state_registry"]["categorical_mapping"]).astype(str)
    f_off = forget.values[LABEL_OFFSETS]  # (genes, labels)
    r_off = retain.values[LABEL_OFFSETS]
    total = float(sum(v.sum() for v in forget.values.values()))
    in_gone = float(f_off[:, gone].sum())
    in_others = float(f_off[:, np.setdiff1d(np.arange(f_off.shape[1]), gone)].sum())
    r_gone = r_off[:, gone]
    return {
        "parameter": LABEL_OFFSETS,
        "labels": [str(names[c]) for c in gone],
        "codes": [int(c) for c in gone],
        "n_labels": len(gone),
        "forget_share": in_gone / total if total > 0 else float("nan"),
        "other_offsets_share": in_others / total if total > 0 else float("nan"),
        "shared_share": (total - in_gone - in_others) / total if total > 0 else float("nan"),
        "retain_mass": float(r_gone.sum()),
        "retain_max": float(r_gone.max()) if r_gone.numel() else 0.0,
    }
