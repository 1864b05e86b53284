"""The shadow-cell attack: an MLP fitted on *other* cells of known membership, applied once.

Cross-fitting an attacker on the evaluated cells themselves (members vs matched non-members)
has no fold design that is both label-blind and free of anti-learning on matched designs
(``docs/audit.md``).  Here the attacker never sees an evaluated cell: it is trained, under the
evaluated model, on ``n_shadow`` of the model's *other* training cells (members) against
``n_shadow`` *other* held-out cells (non-members), in the spirit of shadow-model attacks
(Shokri et al. 2017) with the target model itself as the shadow, and then scores the evaluated
members and non-members once.  If the audited model never trained on the evaluated members,
they look like the held-out cells the attacker learned to call non-members.
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from scvi_unlearn.attack._evaluation_data import training_obs_names
from scvi_unlearn.attack._mlp import SpectralMLPAttacker


def shadow_cells(
    model,
    adata: AnnData | None,
    exclude: np.ndarray,
    n_shadow: int = 200,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (training, held-out) cells of known membership for the shadow attacker.

    Training cells come from the model's recorded training set (found in ``model.adata``),
    held-out cells from ``adata.obs["membership"] == "heldout"``; both exclude ``exclude``
    (the evaluated cells) and are subsampled to ``n_shadow`` each (seeded).
    """
    from scvi_unlearn.data import HOLDOUT, SPLIT_KEY

    if adata is None or SPLIT_KEY not in adata.obs:
        raise ValueError(
            "attack='shadow' needs adata= with obs['membership'] "
            "(scvi_unlearn.data.membership_split) to draw held-out shadow cells."
        )
    if model.adata is None:
        raise ValueError("attack='shadow' needs the model's AnnData (its training cells).")
    rng = np.random.default_rng(seed)
    trained = np.setdiff1d(training_obs_names(model), exclude)
    trained = np.intersect1d(trained, np.asarray(model.adata.obs_names, dtype=str))
    held = np.asarray(adata.obs_names[(adata.obs[SPLIT_KEY].astype(str) == HOLDOUT)], dtype=str)
    held = np.setdiff1d(held, exclude)
    n = int(min(n_shadow, trained.size, held.size))
    if n < 10:
        raise ValueError(
            f"attack='shadow' needs at least 10 other training and held-out cells; found "
            f"{trained.size} and {held.size}."
        )
    return (
        np.sort(rng.choice(trained, size=n, replace=False)),
        np.sort(rng.choice(held, size=n, replace=False)),
    )


def shadow_attack(
    x_shadow: np.ndarray, y_shadow: np.ndarray, x_eval: np.ndarray, seed: int = 0, **kwargs
) -> np.ndarray:
    """Fit one :class:`SpectralMLPAttacker` on the shadow cells and score the evaluated ones."""
    attacker = SpectralMLPAttacker(seed=seed, **kwargs).fit(x_shadow, y_shadow)
    return attacker.decision_function(x_eval)
