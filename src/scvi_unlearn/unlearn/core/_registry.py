"""Registry of unlearning methods: :data:`METHODS` and the :func:`register` decorator.

An unlearning method is a function ``method(task, **hyperparameters) -> model``.  It receives an
:class:`~scvi_unlearn.unlearn.UnlearningTask` (the original model, read-only, and the retain /
forget cells) and returns a new model bound to ``task.adata`` (the retain cells), usually built
with :meth:`UnlearningTask.new_model`.  Every hyper-parameter must be a keyword-only argument with
a default; :meth:`scvi_unlearn.SCVI.unlearn` fills in the defaults and stores them in the
model's ``unlearn_record_``.  Methods append their per-step losses to ``task.log``.  A method
that trains may end its signature with ``**trainer_kwargs`` (the name matters): those are
forwarded to :meth:`UnlearningTask.fit`, and only names that scvi-tools' ``TrainRunner`` /
``Trainer`` or :class:`lightning.pytorch.Trainer` accept get through (:func:`trainer_arguments`);
any other unknown name is a :class:`TypeError` listing the method's hyper-parameters.

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

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any

#: Registered unlearning methods, by name.  Use :func:`register` to add one.
METHODS: dict[str, Callable[..., Any]] = {}

#: Names of the registered methods that train a fresh model on the retain cells only (their
#: output never saw a forget cell; see :func:`register`'s ``from_scratch``).
FROM_SCRATCH: set[str] = set()

#: Name of the ``**`` parameter through which a method forwards Trainer arguments.
TRAINER_KWARGS = "trainer_kwargs"


def register(
    name: str, *, from_scratch: bool = False, overwrite: bool = False
) -> Callable[[Callable], Callable]:
    """Decorator registering an unlearning method under ``name``.

    Parameters
    ----------
    name
        Name passed as ``method=`` to :meth:`scvi_unlearn.SCVI.unlearn`.
    from_scratch
        The method trains a fresh model on the retain cells only (``retrain``,
        ``fast_retrain``, ``dp_sgd``).  Such a model's lower retain ELBO is the honest cost of
        not having the forget cells, so ``unlearn`` only warns about it by default; a method
        that edits the original (the default, ``False``) and loses utility has damaged the
        model, and ``unlearn`` raises by default (``on_degradation="auto"``).
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
        if from_scratch:
            FROM_SCRATCH.add(name)
        else:
            FROM_SCRATCH.discard(name)
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


@functools.cache
def trainer_arguments() -> frozenset[str]:
    """Names a method's ``**trainer_kwargs`` may carry to :meth:`UnlearningTask.fit`.

    The arguments of :class:`scvi.train.TrainRunner` (``trainer_config``, ``ckpt_path``),
    :class:`scvi.train.Trainer` (e.g. ``early_stopping``, ``log_every_n_steps``) and
    :class:`lightning.pytorch.Trainer` (e.g. ``gradient_clip_val``, ``precision``), read from
    their signatures (so they follow the installed versions).

    Returns
    -------
    frozenset of str
        The accepted names.
    """
    import lightning.pytorch as pl
    from scvi.train import Trainer, TrainRunner

    names = {"ckpt_path"}  # popped by TrainRunner.__init__ and passed to Trainer.fit
    for init in (TrainRunner.__init__, Trainer.__init__, pl.Trainer.__init__):
        for p in inspect.signature(init).parameters.values():
            if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
                names.add(p.name)
    return frozenset(names - {"self", "model", "training_plan", "data_splitter"})


def bind_hyperparameters(name: str, func: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters of ``func`` with ``kwargs`` applied and the defaults filled in.

    Parameters
    ----------
    name
        The method's registered name (for messages).
    func
        The method.
    kwargs
        The keyword arguments given to :meth:`scvi_unlearn.SCVI.unlearn` for the method.

    Returns
    -------
    dict
        Every named hyper-parameter (defaults filled in) plus the extra keyword arguments the
        method accepts through ``**``, under their own names.

    Raises
    ------
    TypeError
        For an unknown keyword argument, naming the accepted ones.  A method taking
        ``**trainer_kwargs`` accepts, besides its named hyper-parameters, only Trainer arguments
        (:func:`trainer_arguments`); a method taking ``**`` under another name accepts
        anything.
    """
    sig = inspect.signature(func)
    params = list(sig.parameters.values())[1:]
    var = next((p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    named = {p.name: p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD}
    unknown = sorted(set(kwargs) - set(named))
    forwards_to_trainer = var is not None and var.name == TRAINER_KWARGS
    if forwards_to_trainer:
        unknown = [k for k in unknown if k not in trainer_arguments()]
    if unknown and (var is None or forwards_to_trainer):
        candidates = list(named) + (sorted(trainer_arguments()) if forwards_to_trainer else [])
        close = sorted({m for k in unknown for m in difflib.get_close_matches(k, candidates, n=2)})
        hint = f" Did you mean {close}?" if close else ""
        extra = (
            ", plus any argument of scvi-tools' Trainer or lightning.pytorch.Trainer (e.g. "
            "'gradient_clip_val'), passed on as **trainer_kwargs"
            if forwards_to_trainer
            else ""
        )
        raise TypeError(
            f"Unknown hyper-parameter(s) {unknown} for unlearning method {name!r}.{hint} "
            f"It accepts: {sorted(named)}{extra}. Documentation: "
            f"help(scvi_unlearn.unlearn.METHODS[{name!r}])."
        )
    bound = {n: p.default for n, p in named.items()}
    bound.update(kwargs)
    return bound
