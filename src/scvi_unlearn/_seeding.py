"""Reproducible randomness without touching the caller's global random state.

scvi-tools and Lightning draw from the *global* torch / numpy / ``random`` generators and from
``scvi.settings.seed`` (the data splitter).  To make a training run reproducible from a seed
without reseeding the user's global RNG, :func:`isolated_seed` saves every global state, seeds,
runs the block and restores everything on exit, including on exceptions.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def isolated_seed(seed: int | None) -> Iterator[None]:
    """Run a block with all global generators seeded, restoring their states afterwards.

    Parameters
    ----------
    seed
        Seed for ``random``, ``numpy.random``, ``torch`` and ``scvi.settings.seed``. ``None``
        runs the block unchanged (no seeding, no restoring).
    """
    if seed is None:
        yield
        return
    import scvi

    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 (saving the global state)
    scvi_seed = scvi.settings._seed
    with torch.random.fork_rng(devices=[]):
        try:
            random.seed(seed)
            np.random.seed(seed)  # noqa: NPY002 (restored on exit)
            torch.manual_seed(seed)
            # bypass the settings setter: it would reseed the global generators outside the fork
            scvi.settings._seed = seed
            yield
        finally:
            scvi.settings._seed = scvi_seed
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


def as_generator(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """Return a :class:`numpy.random.Generator` for an int seed, a Generator or ``None``."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)
