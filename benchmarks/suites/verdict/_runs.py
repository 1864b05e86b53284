"""The runs of a verdict config: the keys a run may have, its variants, and the expansion of
its grid into labelled runs (:func:`expand_runs`).
"""

from __future__ import annotations

import itertools

#: the keys a run of the config may have
RUN_KEYS = {"label", "method", "kwargs", "none", "grid", "variant", "rewind_epoch", "seeds"}
#: grid axes that are keys of the run rather than arguments of the method
RUN_AXES = ("variant", "rewind_epoch")


def _data_init(su, adata, kwargs: dict) -> dict:
    """``fast_retrain`` from a data-dependent start (:class:`_callbacks.DataInit`)."""
    from benchmarks.suites._callbacks import DataInit

    return {**kwargs, "callbacks": [DataInit()]}


def _heldout_nonmembers(su, adata, kwargs: dict) -> dict:
    """The held-out cells as the critic methods' non-members (``nonmembers=``; they include the
    held-out cells of the verdict's same-type check, which is then not independent)."""
    heldout = adata[(adata.obs[su.data.SPLIT_KEY] == su.data.HOLDOUT).to_numpy()].copy()
    return {**kwargs, "nonmembers": heldout}


#: ``variant`` of a run: a function ``(su, adata, kwargs) -> kwargs``
VARIANTS = {"data_init": _data_init, "heldout_nonmembers": _heldout_nonmembers}


def expand_runs(specs: list[dict], select: list[str] = ()) -> list[dict]:
    """The config's runs, each ``grid`` expanded (in the order of its axes), labels formatted,
    ``none`` arguments set; only those labelled as in ``select`` when it is not empty."""
    runs = []
    for spec in specs:
        unknown = sorted(set(spec) - RUN_KEYS)
        if unknown or "method" not in spec:
            raise SystemExit(f"run {spec}: needs a method; keys are {sorted(RUN_KEYS)}")
        grid = spec.get("grid", {})
        for values in itertools.product(*grid.values()):
            run = {k: v for k, v in spec.items() if k not in ("grid", "none")}
            kwargs, names = dict(spec.get("kwargs", {})), {}
            for axis, value in zip(grid, values):
                if isinstance(value, dict):
                    names[axis] = value["label"]
                    kwargs |= {k: v for k, v in value.items() if k != "label"}
                elif axis in RUN_AXES:
                    run[axis] = value
                else:
                    kwargs[axis] = value
            kwargs |= dict.fromkeys(spec.get("none", []))
            template = spec.get("label", spec["method"])
            run["label"] = template.format(**kwargs, **{k: run.get(k) for k in RUN_AXES}, **names)
            run["kwargs"] = kwargs
            runs.append(run)
    if select:
        missing = sorted(set(select) - {r["label"] for r in runs})
        if missing:
            raise SystemExit(f"select: no run labelled {missing}")
        runs = [r for r in runs if r["label"] in select]
    return runs
