"""Registry of unlearning methods: :data:`METHODS`, the :func:`register` decorator and what each
method guarantees (its metadata; the table is :func:`~scvi_unlearn.unlearn.methods`).

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
>>> su.unlearn.guarantee("noop_finetune")["kind"]
'approximate'
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

#: method used when ``unlearn()`` is called without one: exact, fast schedule, the method that
#: passes the per-cell retrain-equivalence verdict most often (``docs/fast_unlearning.md``); its
#: row of :func:`~scvi_unlearn.unlearn.methods` has status ``"default"``.
DEFAULT_METHOD = "fast_retrain"

#: What a method guarantees, by the folder it lives in: ``"exact"`` (a fresh model on the retain
#: cells), ``"private"`` (exact and differentially private), ``"approximate"`` and
#: ``"adversarial"`` (edits of, or learning from, the original: no guarantee).
KINDS = ("exact", "private", "approximate", "adversarial")

#: Name of the ``**`` parameter through which a method forwards Trainer arguments.
TRAINER_KWARGS = "trainer_kwargs"

#: The guarantee in words of a method registered without one, by kind.
GENERIC_GUARANTEES = {
    "exact": (
        "exact: a fresh model trained on the retain cells only (register(from_scratch=True)); "
        "no forget cell is read"
    ),
    "private": (
        "exact: a fresh model trained on the retain cells only, with a differential-privacy "
        "guarantee on the retain cells"
    ),
    "approximate": (
        "none: starts from (or learns from) the original, which trained on the forget cells; "
        "check it with the per-cell verdict (retrain_target(...).equivalence(new))"
    ),
}
GENERIC_GUARANTEES["adversarial"] = GENERIC_GUARANTEES["approximate"]

#: Metadata of each registration: name -> its row of :func:`~scvi_unlearn.unlearn.methods`
#: (without ``name``).
REGISTRATIONS: dict[str, dict[str, Any]] = {}


def register(
    name: str,
    *,
    from_scratch: bool = False,
    kind: str | None = None,
    private: bool | None = None,
    guarantee: str | None = None,
    reference: str | None = None,
    status: str | None = None,
    measured: str | None = None,
    benchmark: bool | None = None,
    overwrite: bool = False,
) -> Callable[[Callable], Callable]:
    """Decorator registering an unlearning method under ``name``, with what it guarantees.

    Parameters
    ----------
    name
        Name passed as ``method=`` to :meth:`scvi_unlearn.SCVI.unlearn`.
    from_scratch
        The method trains a fresh model on the retain cells only (``retrain``,
        ``fast_retrain``, ``dp_sgd``): it is *exact* (its output depends only on the retain
        cells, the seed and at most one number of the original), listed in
        :data:`FROM_SCRATCH` and in the ``exact`` column of
        :func:`~scvi_unlearn.unlearn.methods`.  Such a model's lower retain ELBO is the
        honest cost of not having the forget cells, so ``unlearn`` only warns about it by
        default; a method that edits the original (the default,
        ``False``) and loses utility has damaged the model, and ``unlearn`` raises by default
        (``on_degradation="auto"``).
    kind
        One of :data:`KINDS`.  ``None`` (default): the folder of a built-in method
        (``scvi_unlearn.unlearn.<kind>``); otherwise ``"private"`` for ``from_scratch`` and
        ``private``, ``"exact"`` for ``from_scratch``, else ``"approximate"``.  ``"exact"``
        and ``"private"`` need ``from_scratch=True``, ``"approximate"`` and ``"adversarial"``
        exclude it (a :class:`ValueError`).
    private
        The method gives a differential-privacy guarantee.  ``None`` (default): ``True`` for
        ``kind="private"``, else ``False``.
    guarantee
        What the method guarantees, in words.  ``None`` (default): the kind's generic text
        (exact: "a fresh model trained on the retain cells only ..."; approximate and
        adversarial: "none ...").
    reference
        The paper the method follows (``None``: empty).
    status
        ``"recommended"``, ``"research baseline"`` or any short text (``None``: ``"user"``).
        ``"default"`` is reserved: the row of :data:`DEFAULT_METHOD` shows it.
    measured
        Measured verdict pass rate and cost, with their source (``None``: empty).
    benchmark
        Include the method in ``su.benchmark.run(methods="all")`` (``None``: ``False``: a
        user's method runs in the benchmark when named).
    overwrite
        Replace an existing method of the same name (otherwise a :class:`ValueError`).  When the
        same function is registered again, the metadata left at ``None`` keep their previous
        values.

    Returns
    -------
    The decorator; it returns the function unchanged.

    Raises
    ------
    ValueError
        For an empty name, a name taken (without ``overwrite``), an unknown ``kind``, a
        ``kind`` that contradicts ``from_scratch`` or ``private``, or ``status="default"``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A method name must be a non-empty string, got {name!r}.")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}.")
    if kind in ("exact", "private") and not from_scratch:
        raise ValueError(
            f"register({name!r}, kind={kind!r}) needs from_scratch=True: an exact method "
            "trains a fresh model on the retain cells only."
        )
    if kind in ("approximate", "adversarial") and from_scratch:
        raise ValueError(
            f"register({name!r}, kind={kind!r}) contradicts from_scratch=True (a fresh model "
            "on the retain cells only is exact); use kind='exact' or from_scratch=False."
        )
    if kind == "private" and private is False:
        raise ValueError(f"register({name!r}, kind='private') contradicts private=False.")
    if status == "default":
        raise ValueError(
            f"status='default' is reserved for DEFAULT_METHOD ({DEFAULT_METHOD!r}), whose row "
            "shows it; use 'recommended' or another word."
        )

    def decorator(func: Callable) -> Callable:
        if not callable(func):
            raise TypeError(f"register({name!r}) needs a callable, got {type(func).__name__}.")
        if name in METHODS and not overwrite and METHODS[name] is not func:
            raise ValueError(
                f"An unlearning method named {name!r} is already registered; pass "
                "overwrite=True to replace it."
            )
        _check_signature(name, func)
        previous = REGISTRATIONS.get(name, {}) if METHODS.get(name) is func else {}
        given = {
            "private": private,
            "guarantee": guarantee,
            "reference": reference,
            "status": status,
            "measured": measured,
            "benchmark": benchmark,
        }
        kept = {k: previous.get(k) if v is None else v for k, v in given.items()}
        is_private = bool(kept["private"]) or kind == "private"
        resolved = _resolve_kind(func, kind, from_scratch, is_private)
        METHODS[name] = func
        REGISTRATIONS[name] = {
            "kind": resolved,
            "exact": bool(from_scratch),
            "private": is_private,
            "status": kept["status"] or "user",
            "guarantee": kept["guarantee"] or GENERIC_GUARANTEES[resolved],
            "reference": kept["reference"] or "",
            "measured": kept["measured"] or "",
            "benchmark": bool(kept["benchmark"]),
        }
        if from_scratch:
            FROM_SCRATCH.add(name)
        else:
            FROM_SCRATCH.discard(name)
        return func

    return decorator


def _resolve_kind(func: Callable, kind: str | None, from_scratch: bool, private: bool) -> str:
    if kind is not None:
        return kind
    parts = str(getattr(func, "__module__", "")).split(".")
    folder = parts[2] if parts[:2] == ["scvi_unlearn", "unlearn"] and len(parts) > 2 else None
    if from_scratch:
        if folder in ("exact", "private"):
            return folder
        return "private" if private else "exact"
    return folder if folder in ("approximate", "adversarial") else "approximate"


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
