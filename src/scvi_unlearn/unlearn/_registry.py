"""Registry of unlearning methods: :data:`METHODS` and the :func:`register` decorator.

An unlearning method is a function ``method(task, **hyperparameters) -> model``.  It receives an
:class:`~scvi_unlearn.unlearn.UnlearningTask` (the original model, read-only, and the retain /
forget cells) and returns a new model bound to ``task.adata`` (the retain cells), usually built
with :meth:`UnlearningTask.new_model`.  Every hyper-parameter must be a keyword-only argument with
a default; :meth:`scvi_unlearn.SCVI.unlearn` fills in the defaults and stores them in the
model's ``unlearn_record_``.  Methods append their per-step losses to ``task.log``.

Examples
--------
>>> import scvi_unlearn as su
>>> @su.unlearn.register("noop_finetune")
... def noop_finetune(task, *, max_epochs=1, accelerator="auto", devices="auto"):
...     model = task.new_model(copy_weights=True)
...     return model
>>> "noop_finetune" in su.unlearn.METHODS
True
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

#: Registered unlearning methods, by name.  Use :func:`register` to add one.
METHODS: dict[str, Callable[..., Any]] = {}


def register(name: str, *, overwrite: bool = False) -> Callable[[Callable], Callable]:
    """Decorator registering an unlearning method under ``name``.

    Parameters
    ----------
    name
        Name passed as ``method=`` to :meth:`scvi_unlearn.SCVI.unlearn`.
    overwrite
        Replace an existing method of the same name (otherwise a :class:`ValueError`).

    Returns
    -------
    The decorator; it returns the function unchanged.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A method name must be a non-empty string, got {name!r}.")

    def decorator(func: Callable) -> Callable:
        if not callable(func):
            raise TypeError(f"register({name!r}) needs a callable, got {type(func).__name__}.")
        if name in METHODS and not overwrite and METHODS[name] is not func:
            raise ValueError(
                f"An unlearning method named {name!r} is already registered; pass "
                "overwrite=True to replace it."
            )
        _check_signature(name, func)
        METHODS[name] = func
        return func

    return decorator


def get_method(name: str) -> Callable[..., Any]:
    """Return the registered method ``name``; unknown names list the available ones."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        available = ", ".join(sorted(METHODS))
        raise ValueError(
            f"Unknown unlearning method {name!r}. Available methods: {available}. "
            "Add your own with scvi_unlearn.unlearn.register(name)."
        ) from None


def _check_signature(name: str, func: Callable) -> None:
    params = list(inspect.signature(func).parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(
            f"Unlearning method {name!r} must take the task as its first positional argument."
        )
    for p in params[1:]:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
            raise TypeError(
                f"Unlearning method {name!r}: hyper-parameter {p.name!r} must be keyword-only "
                "with a default (def method(task, *, param=default, ...))."
            )


def bind_hyperparameters(name: str, func: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters of ``func`` with ``kwargs`` applied and the defaults filled in.

    Unknown keyword arguments raise a :class:`TypeError` naming the accepted ones (unless the
    method takes ``**kwargs``, in which case they are passed through under their own names).
    """
    sig = inspect.signature(func)
    params = list(sig.parameters.values())[1:]
    accepts_var = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    named = {p.name: p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD}
    unknown = sorted(set(kwargs) - set(named))
    if unknown and not accepts_var:
        raise TypeError(
            f"Unknown hyper-parameter(s) {unknown} for unlearning method {name!r}. "
            f"It accepts: {sorted(named)}."
        )
    bound = {n: p.default for n, p in named.items()}
    bound.update(kwargs)
    return bound
