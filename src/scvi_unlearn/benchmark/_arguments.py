"""Arguments of :func:`scvi_unlearn.benchmark.run`: the method list, seeds, budgets and attacks,
checked before anything is trained, and the original's training arguments."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from scvi_unlearn.unlearn import get_method
from scvi_unlearn.unlearn import methods as method_table


def all_methods() -> tuple[str, ...]:
    """The methods of ``methods="all"``: the rows of :func:`scvi_unlearn.unlearn.methods` whose
    ``benchmark`` column is true, in the table's order (read at call time, so a method
    registered with ``register(..., benchmark=True)`` is included)."""
    table = method_table()
    return tuple(table.loc[table["benchmark"].astype(bool), "name"])


#: ``methods="all"`` when the package was imported (:func:`all_methods` reads the registry at
#: call time): the fast exact retrain, the differentially private retrain and the approximate
#: and adversarial methods that run on any scVI model (not ``distill`` and ``langevin``, added
#: after the documented benchmark runs, nor ``conditional_reset``, for a ConditionalSCVI only;
#: ``retrain`` with the recorded recipe is always run: the references).
ALL_METHODS = all_methods()
#: When ``rewind`` is among the methods, the original trained by the benchmark keeps a
#: checkpoint after this fraction of its epochs (``train(..., rewind_epoch=...)``; the
#: measured recommendation of :func:`scvi_unlearn.unlearn.rewind`).  Taking it draws no random
#: number: the original's weights are the same with or without it.
REWIND_FRACTION = 0.4
#: attacks the benchmark can audit with (``drift`` is comparison-only and needs a baseline).
BENCHMARK_ATTACKS = ("calibrated", "shadow", "mlp", "threshold")


def original_train_kwargs(methods, train_kwargs: dict[str, Any] | None = None) -> dict:
    """``train_kwargs`` for the benchmark's original: with ``rewind_epoch`` set to
    ``int(REWIND_FRACTION * max_epochs)`` (200 epochs when not given) when ``methods``
    (``"all"`` or names) include ``rewind`` and ``train_kwargs`` do not set it."""
    kwargs = dict(train_kwargs or {})
    if methods == "all":
        names = all_methods()
    else:
        names = [methods] if isinstance(methods, str) else methods
    if "rewind" in names and kwargs.get("rewind_epoch") is None:
        kwargs["rewind_epoch"] = int(REWIND_FRACTION * int(kwargs.get("max_epochs", 200)))
    return kwargs


def resolve_arguments(
    methods: str | Sequence[str],
    seeds: int | Sequence[int],
    retrain_seeds: int | Sequence[int],
    budgets: Sequence[float],
    attacks: str | Sequence[str],
    model=None,
) -> tuple[list[str], list[int], list[int], list[str]]:
    """``(methods, seeds, retrain_seeds, attacks)`` of :func:`~scvi_unlearn.benchmark.run` as
    lists, checked: registered methods (``"all"``: :func:`all_methods`, without ``rewind`` and
    a warning when the given ``model`` has no training checkpoint), at least 3 retrain seeds,
    budgets in (0, 1), known attacks.  Raises :class:`ValueError` naming the bad argument."""
    # a given model without a checkpoint cannot run rewind (the one trained here has one)
    no_checkpoint = model is not None and getattr(model, "rewind_checkpoint_", None) is None
    if methods == "all":
        methods = list(all_methods())
        if no_checkpoint:
            methods.remove("rewind")
            warnings.warn(
                "methods='all' without 'rewind': the given model has no training checkpoint "
                "(train it with model.train(..., rewind_epoch=k) to include it).",
                UserWarning,
                stacklevel=3,
            )
    elif isinstance(methods, str):
        methods = [methods]
    methods = list(methods)
    if "rewind" in methods and no_checkpoint:
        raise ValueError(
            "method 'rewind' needs a model trained with model.train(..., rewind_epoch=k) "
            "(measured: k = 40% of max_epochs); the given model has no checkpoint. Pass "
            "model=None to let the benchmark train one, or drop 'rewind'."
        )
    for m in methods:
        get_method(m)  # unknown names list the available ones
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    retrain_seeds = (
        list(range(retrain_seeds)) if isinstance(retrain_seeds, int) else list(retrain_seeds)
    )
    if len(retrain_seeds) < 3:
        raise ValueError("retrain_seeds: at least 3 retrains are needed for the target interval.")
    if any(not 0.0 < b < 1.0 for b in budgets):
        raise ValueError(f"budgets must be fractions in (0, 1), got {list(budgets)}.")
    attacks = [attacks] if isinstance(attacks, str) else list(attacks)
    for a in attacks:
        if a not in BENCHMARK_ATTACKS:
            raise ValueError(
                f"Unknown attack {a!r} for the benchmark; use one of {BENCHMARK_ATTACKS}."
            )
    if not attacks:
        raise ValueError("Give at least one attack.")
    return methods, seeds, retrain_seeds, attacks
