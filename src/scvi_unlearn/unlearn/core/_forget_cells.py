"""Checks of a forget set shared by in-memory and streamed requests: which of its cells the
model trained on, and how cells are named in an error."""

from __future__ import annotations

import numpy as np
from anndata import AnnData


def preview(values, k: int = 5, *, quote: bool = True) -> str:
    """The first ``k`` of ``values`` for an error message (``repr`` with ``quote``, else
    ``str``), with the total when there are more."""
    values = list(values)
    shown = ", ".join((repr if quote else str)(v) for v in values[:k])
    return shown + (f", ... ({len(values)} in total)" if len(values) > k else "")


def keep_trained(
    forget: np.ndarray, is_trained: np.ndarray, ignore_untrained: bool, unknown_label: str = ""
) -> np.ndarray:
    """``forget`` without the cells the model did not train on (``~is_trained``); unless
    ``ignore_untrained``, a ``ValueError`` naming them (as ``unknown_label`` + their preview)
    if there are any, and always one if none is left."""
    if is_trained.all():
        return forget
    unknown = forget[~is_trained]
    if not ignore_untrained:
        raise ValueError(
            f"{unknown.size} of the {forget.size} cells to forget were not used to train this "
            f"model: {unknown_label}{preview(unknown, quote=not unknown_label)}. Pass "
            "ignore_untrained=True to skip them."
        )
    forget = forget[is_trained]
    if forget.size == 0:
        raise ValueError(
            "None of the cells to forget were used to train this model: nothing to unlearn."
        )
    return forget


def forget_values(forget, expected: str) -> np.ndarray:
    """The cells of ``forget`` (an AnnData's ``obs_names``, or any sequence) as an object array;
    a ``TypeError`` saying ``forget must be <expected>`` for one string or a non-sequence."""
    if isinstance(forget, AnnData):
        forget = forget.obs_names
    if isinstance(forget, str | bytes):
        raise TypeError(f"forget must be {expected}, not one string.")
    try:
        return np.asarray(list(forget), dtype=object)
    except TypeError:
        raise TypeError(f"forget must be {expected}, got {type(forget).__name__}.") from None
