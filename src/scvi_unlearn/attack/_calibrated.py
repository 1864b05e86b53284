"""Reference-calibrated per-cell attack (offline LiRA / U-LiRA spirit).

A cell's raw score mixes "the model trained on it" with "the cell is easy".  LiRA (Carlini et
al., 2022) removes the second part per cell with reference ("shadow") models; U-LiRA (Hayes et
al., 2024) uses as references models *retrained without* the cells, the distribution an
unlearned model should match.  Here the references are models that never trained on the
evaluated cells (typically retrains); the calibrated score of a cell is its score under the
evaluated model minus its mean score under the references, divided by the references' spread
(a global, pooled standard deviation with few references, as LiRA's fixed-variance variant; a
per-cell one when asked).  Only "out" references are needed (offline LiRA).
"""

from __future__ import annotations

import numpy as np

#: per-cell scores used by the calibrated attack: column and orientation (higher = member).
CALIBRATION_SCORES = {
    "elbo": ("elbo", 1.0),
    "reconstruction": ("reconstruction", -1.0),
    "kl": ("kl_z", 1.0),
}


def calibrated_scores(
    target: np.ndarray, references: np.ndarray, variance: str = "global"
) -> np.ndarray:
    """``(target - mean over references) / sd`` per cell.

    Parameters
    ----------
    target
        Score of each cell under the evaluated model (higher = member-like), shape ``(n,)``.
    references
        Scores of the same cells under each reference model, shape ``(n_references, n)``.
    variance
        ``"global"``: one pooled standard deviation of the reference scores around their
        per-cell means (needs >= 2 references; with 1 reference the raw difference is
        returned); ``"per_cell"``: each cell's own reference standard deviation (needs >= 3
        references; floored at 1% of the pooled one); ``"none"``: the raw difference.
    """
    target = np.asarray(target, dtype=np.float64)
    references = np.atleast_2d(np.asarray(references, dtype=np.float64))
    if references.shape[1] != target.shape[0]:
        raise ValueError(
            f"references must be (n_references, n_cells={target.shape[0]}), got "
            f"{references.shape}."
        )
    n_ref = references.shape[0]
    mean = references.mean(axis=0)
    diff = target - mean
    if variance == "none" or (variance == "global" and n_ref < 2):
        return diff
    if variance not in ("global", "per_cell"):
        raise ValueError(f"variance must be 'global', 'per_cell' or 'none', got {variance!r}.")
    if n_ref < 2:
        raise ValueError("variance='per_cell' needs at least 3 reference models.")
    resid = references - mean
    pooled = np.sqrt((resid**2).sum() / (resid.size - target.size))
    pooled = pooled if pooled > 0 else 1.0
    if variance == "global":
        return diff / pooled
    if n_ref < 3:
        raise ValueError("variance='per_cell' needs at least 3 reference models.")
    sd = references.std(axis=0, ddof=1)
    return diff / np.maximum(sd, 0.01 * pooled)
