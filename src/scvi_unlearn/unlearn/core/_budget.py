"""The retain-sample budget of the approximate methods: their cost follows the forget set.

:func:`retain_sample_size` sizes the random sample of retain cells that each epoch of an
approximate method passes over (and that its Fisher importances average over); see its Notes.
"""

from __future__ import annotations

import numpy as np

#: retain cells per forget cell in the default sample
RETAIN_PER_FORGET = 10
#: smallest default sample: enough retain cells to anchor every cell type of a typical atlas
RETAIN_FLOOR = 2048
#: largest default sample: 20 epochs over it are ~330k cell passes, about 0.04x the ~8M cell
#: passes of scvi-tools' default recipe at any size beyond 20k cells
RETAIN_CAP = 16384


def retain_sample_size(n_forget: int, n_retain: int, requested: int | str | None = None) -> int:
    """Number of retain cells an approximate method uses per epoch (or for its importances).

    Parameters
    ----------
    n_forget
        Number of cells to forget.
    n_retain
        Number of retain cells available (training cells for an epoch, all retain cells for
        importances).
    requested
        ``None``: the default rule (below); ``"all"``: every retain cell (cost
        grows with the dataset, as an epoch over all cells does); a positive int: that many
        cells (at most ``n_retain``).

    Returns
    -------
    int
        The sample size, between 1 and ``n_retain``.

    Notes
    -----
    The default is ``min(n_retain, clip(10 * n_forget, 2048, 16384))``
    (:data:`RETAIN_PER_FORGET`, :data:`RETAIN_FLOOR`, :data:`RETAIN_CAP`).  Each epoch of an
    approximate method is a pass over a fresh random sample of this many retain training cells,
    and its Fisher importances are means over a seeded random sample of this many retain cells,
    so its cost grows with the forget set (until the cap), not with the dataset: scvi-tools'
    own recipe trains about 8M cell passes at any size beyond 20k cells, and a fixed number of
    epochs over all retain cells would cost as much as a retrain near 1M cells.  On data with at
    most 2,048 retain cells (the offline PBMC data) the sample is every cell and nothing
    changes.  The exact methods (``retrain``, ``fast_retrain``, ``dp_sgd``) train on every
    retain cell by construction.
    """
    if n_retain < 1:
        raise ValueError("There are no retain cells to sample from.")
    if requested is None:
        size = int(np.clip(RETAIN_PER_FORGET * int(n_forget), RETAIN_FLOOR, RETAIN_CAP))
    elif isinstance(requested, str):
        if requested != "all":
            raise ValueError(
                f"retain_sample must be None (the default rule), 'all' or a positive int, got "
                f"{requested!r}."
            )
        size = n_retain
    elif isinstance(requested, bool) or not isinstance(requested, int | np.integer):
        raise TypeError(
            f"retain_sample must be None, 'all' or a positive int, got {type(requested).__name__}."
        )
    elif requested < 1:
        raise ValueError(f"retain_sample must be >= 1, got {requested}.")
    else:
        size = int(requested)
    return min(size, int(n_retain))


def sample_positions(positions: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A sorted random subset of ``positions`` of ``size`` cells (all of them if fewer)."""
    positions = np.asarray(positions, dtype=int)
    if size >= positions.size:
        return positions.copy()
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(positions, size, replace=False))
