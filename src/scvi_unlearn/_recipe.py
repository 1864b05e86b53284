"""What a training recipe records: every argument of ``train()``, saved with the model.

:meth:`scvi_unlearn.SCVI.train` records its arguments (``train_recipe_``) so that an exact
retrain can replay them; the recipe is pickled with the model by ``save()``.  An argument that
cannot be pickled (a callback class defined inside a function) is recorded as a placeholder that
a replay leaves out, so saving works as it does for scvi-tools' own SCVI.
"""

from __future__ import annotations

import copy
import pickle

#: prefix and suffix of the placeholder recorded for a training argument that cannot be pickled
UNPICKLABLE = ("<unpicklable ", ">")


def _pickles(value) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


def recordable(trainer_kwargs: dict) -> dict:
    """A copy of ``trainer_kwargs`` that can be saved with the model: a value (or an element of
    a list, e.g. ``callbacks``) that cannot be pickled -- a callback class defined inside a
    function -- is recorded as ``"<unpicklable ClassName>"``, which a replay leaves out (with a
    warning), so that ``model.save()`` works as it does for scvi-tools' own SCVI."""

    def placeholder(value) -> str:
        return f"{UNPICKLABLE[0]}{type(value).__qualname__}{UNPICKLABLE[1]}"

    out = {}
    for key, value in trainer_kwargs.items():
        if isinstance(value, list | tuple):
            items = [copy.deepcopy(v) if _pickles(v) else placeholder(v) for v in value]
            out[key] = items if isinstance(value, list) else tuple(items)
        else:
            out[key] = copy.deepcopy(value) if _pickles(value) else placeholder(value)
    return out


def is_unpicklable_placeholder(value) -> bool:
    """Whether ``value`` is :func:`recordable`'s placeholder for an argument not recorded."""
    prefix, suffix = UNPICKLABLE
    return isinstance(value, str) and value.startswith(prefix) and value.endswith(suffix)


def replayable(trainer_kwargs: dict) -> tuple[dict, list[str]]:
    """``trainer_kwargs`` without :func:`recordable`'s placeholders, and the placeholders left
    out (for the replay's warning)."""
    out, dropped = {}, []
    for key, value in trainer_kwargs.items():
        if is_unpicklable_placeholder(value):
            dropped.append(f"{key}={value}")
        elif isinstance(value, list | tuple):
            kept = [v for v in value if not is_unpicklable_placeholder(v)]
            dropped += [f"{key}: {v}" for v in value if is_unpicklable_placeholder(v)]
            out[key] = kept if isinstance(value, list) else tuple(kept)
        else:
            out[key] = value
    return out, dropped
