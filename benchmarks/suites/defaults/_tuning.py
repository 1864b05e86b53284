"""The ``tuning`` experiment: how each method's hyper-parameters move the forget ELBO on the
setting its defaults were chosen on (:class:`Study`: the forget / held-out ELBO of each model).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import tempfile
import time

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._settings import FORGET_LABEL, cached_retrain, setup

# ---------------------------------------------------------------------------- tuning


@dataclasses.dataclass
class TuningParams(Common):
    """Parameters of the ``tuning`` experiment.

    Setting (the one the defaults in ``docs/unlearning.md`` were chosen on;
    :func:`benchmarks.suites._settings.setup`): the offline PBMC data, a stratified member /
    non-member split (``membership_split(holdout=0.3, stratify="cell_type", seed=0)``), an
    ``su.SCVI`` with the default architecture trained with the default recipe (``max_epochs``
    heuristic = 400, 90% / 10% train / validation split, seed 0) on the members, and the rare
    type "CD56+ NK" (22 training members, 9 held-out) as the forget set.

    For the original, ``retrain_seeds`` retrain seeds and every configuration (each method's
    defaults, then its configurations in ``grid``), the mean per-cell ELBO
    (``su.metrics.per_cell_elbo``: 8 draws, seed 0) of the forget cells, of the held-out cells
    of the same type, the gap between the two (the memorisation signal), the fraction of the
    way from the original's forget ELBO to the retrains' mean, the held-out ELBO of the other
    cell types and its relative change from the original (criterion: within 2%), and the wall
    time.  With ``nonmembers`` (the critic methods), every configuration runs with each source
    of non-members: ``"validation"`` (the retain validation cells of the original) and
    ``"heldout"`` (the held-out cells, including the held-out NK cells; the same cells
    ``held-out NK`` is measured on, so that column is not independent of the method in those
    rows); the retain-ELBO check of ``unlearn`` is printed too.

    Attributes
    ----------
    methods
        The methods (``None``: every built-in but ``retrain``).
    grid
        Configurations (keyword arguments) per method, run after its defaults.
    nonmembers
        Sources of non-members passed as ``nonmembers=`` (``None``: not passed).
    seeds
        Method seeds (``None``: the request's default seed, not passed).
    retrain_seeds
        Retrain references (cached in ``cache``).
    json
        Write all rows to this JSON file.
    cache
        Folder of the cached original and retrains.
    """

    methods: list[str] | None = None
    grid: dict[str, list[dict]] = dataclasses.field(default_factory=dict)
    nonmembers: list[str] | None = None
    seeds: list[int] | None = None
    retrain_seeds: int = 3
    json: str | None = None
    cache: str = os.path.join(tempfile.gettempdir(), "su_unlearn")


class Study:
    """The forget / held-out ELBO summary of each model of the tuning study, against the
    original (the first model reported) and the retrains' mean forget ELBO."""

    def __init__(self, members, heldout, forget):
        self.members, self.heldout, self.forget = members, heldout, forget
        self.rows: list[dict] = []
        self.base: dict[str, float] = {}

    def evaluate(self, model) -> dict[str, float]:
        """Forget / held-out ELBO summary of one model."""
        from scvi_unlearn.metrics import per_cell_elbo

        f = per_cell_elbo(model, self.members[self.forget].copy())["elbo"].mean()
        h = per_cell_elbo(model, self.heldout)["elbo"]
        same = (self.heldout.obs["cell_type"] == FORGET_LABEL).to_numpy()
        return {
            "forget": float(f),
            "heldout_same": float(h[same].mean()),
            "gap": float(f - h[same].mean()),
            "heldout_other": float(h[~same].mean()),
        }

    def report(self, label: str, model, seconds: float, check: dict | None = None) -> dict:
        """Evaluate ``model``, add its row (and print it)."""
        r = self.evaluate(model)
        r.update(label=label, seconds=seconds)
        base = self.base
        if not base:
            base.update(r)
        r["closed"] = (base["gap"] - r["gap"]) / base["gap"]
        r["other_change"] = (r["heldout_other"] - base["heldout_other"]) / abs(
            base["heldout_other"]
        )
        if "retrain_forget" in base:
            r["toward_retrain"] = (base["forget"] - r["forget"]) / (
                base["forget"] - base["retrain_forget"]
            )
        if check is not None:
            r["retain_check_drop"] = check["relative_drop"]
        self.rows.append(r)
        print(
            f"{label:70s} forget {r['forget']:8.1f} heldout-NK {r['heldout_same']:8.1f} "
            f"gap {r['gap']:6.1f} closed {r['closed']:5.2f} "
            f"to-retrain {r.get('toward_retrain', np.nan):5.2f} "
            f"heldout-other {r['heldout_other']:7.1f} ({100 * r['other_change']:+5.2f}%) "
            f"retain-check {100 * r.get('retain_check_drop', 0):+5.1f}% {seconds:6.1f}s",
            flush=True,
        )
        return r

    def retrains(self, model, seeds: int, cache: str) -> None:
        """Report the cached retrains and set the retrains' mean forget ELBO."""
        forget = [
            self.report(f"retrain seed={seed}", *cached_retrain(model, self.forget, seed, cache))
            for seed in range(seeds)
        ]
        if forget:
            self.base["retrain_forget"] = float(np.mean([r["forget"] for r in forget]))
            print(f"retrain mean forget ELBO {self.base['retrain_forget']:.2f}", flush=True)

    def table(self) -> pd.DataFrame:
        """The rows as the table of docs/unlearning.md."""
        return pd.DataFrame(
            {
                "model": r["label"],
                "forget ELBO": f"{r['forget']:.1f}",
                "held-out NK": f"{r['heldout_same']:.1f}",
                "gap": f"{r['gap']:.1f}",
                "to retrain": f"{r['toward_retrain']:.2f}" if "toward_retrain" in r else "-",
                "held-out other (change)": (
                    f"{r['heldout_other']:.1f} ({100 * r['other_change']:+.2f}%)"
                ),
                "time (s)": f"{r['seconds']:.1f}",
            }
            for r in self.rows
        )


@experiment("tuning", TuningParams)
def tuning(args: TuningParams) -> pd.DataFrame:
    """How each method's hyper-parameters move the forget ELBO (the defaults study, pbmc68k)."""
    import scvi

    import scvi_unlearn as su

    scvi.settings.seed = 0
    os.makedirs(args.cache, exist_ok=True)
    model, members, heldout, forget = setup(args.cache, args.threads)
    study = Study(members, heldout, forget)
    study.report("original", model, 0.0)
    study.retrains(model, args.retrain_seeds, args.cache)
    methods = args.methods or [m for m in su.unlearn.METHODS if m != "retrain"]
    sources = {"validation": "validation", "heldout": heldout}
    for method in methods:
        configs = [{}, *args.grid.get(method, [])]
        for source in args.nonmembers or [None]:
            for cfg, seed in itertools.product(configs, args.seeds or [None]):
                kwargs = dict(cfg)
                if method != "ssd":
                    kwargs["enable_progress_bar"] = False
                if source is not None:
                    kwargs["nonmembers"] = sources[source]
                if seed is not None:
                    kwargs["seed"] = seed
                label = method + (f" nonmembers={source}" if source is not None else "")
                label += f" {json.dumps(cfg) if cfg else 'defaults'}"
                label += f" seed={seed}" if seed is not None else ""
                t = time.perf_counter()
                try:
                    new = model.unlearn(forget, method=method, on_degradation="warn", **kwargs)
                except Exception as err:  # report and continue the study
                    print(f"{label}: {type(err).__name__}: {err}", flush=True)
                    continue
                seconds = time.perf_counter() - t
                study.report(label, new, seconds, new.unlearn_record_["checks"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(study.rows, fh, indent=1)
    return study.table()
