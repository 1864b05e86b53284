"""The ``speed`` experiment: every method's wall time relative to ``retrain`` on pbmc68k."""

from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._settings import (
    setup,
)

# ---------------------------------------------------------------------------- speed


@dataclasses.dataclass
class SpeedParams(Common):
    """Parameters of the ``speed`` experiment.

    The setting of the defaults study (:func:`benchmarks.suites._settings.setup`): the offline
    PBMC data, the members of a stratified 70 / 30 split, an ``su.SCVI`` with the default
    architecture and recipe (400 epochs by scvi-tools' heuristic) and the "CD56+ NK" members
    (22 cells) as the forget set.  Each method runs with its defaults (``retrain`` = the
    recorded recipe); the time is ``unlearn_record_["wall_time_s"]`` (the whole ``unlearn``
    call: data copy, method, checks).  Progress bars off.

    Attributes
    ----------
    repeats
        Runs per method (median).
    methods
        The methods timed after ``retrain`` (``None``: every registered method).
    cache
        Folder of the cached original.
    """

    repeats: int = 1
    methods: list[str] | None = None
    cache: str = os.path.join(tempfile.gettempdir(), "su_unlearn")


@experiment("speed", SpeedParams)
def speed(args: SpeedParams) -> pd.DataFrame:
    """Wall time of every unlearning method relative to retrain on pbmc68k, in one run."""
    import scvi_unlearn as su

    os.makedirs(args.cache, exist_ok=True)
    model, _, _, forget = setup(args.cache, args.threads)
    names = ["retrain"] + [m for m in args.methods or su.unlearn.METHODS if m != "retrain"]
    times: dict[str, float] = {}
    for method in names:
        kwargs = {} if method == "ssd" else {"enable_progress_bar": False}
        runs = []
        for r in range(args.repeats):
            new = model.unlearn(forget, method=method, seed=r, on_degradation="warn", **kwargs)
            runs.append(new.unlearn_record_["wall_time_s"])
        times[method] = float(np.median(runs))
        print(f"{method:16s} {times[method]:8.2f} s", flush=True)
    return pd.DataFrame(
        {
            "method": m,
            "wall time (s)": f"{times[m]:.2f}",
            "time / retrain": f"{times[m] / times['retrain']:.4f}",
        }
        for m in names
    )
