"""The ``retain_sample`` experiment: whether a retain sample changes what an approximate method
does.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._settings import (
    APPROXIMATE,
    FULL_BUDGET,
    simulated_members,
)

# ---------------------------------------------------------------------------- retain sample


@dataclasses.dataclass
class RetainSampleParams(Common):
    """Parameters of the ``retain_sample`` experiment.

    The retain-sample budget (``su.unlearn.retain_sample_size``) makes each epoch of an
    approximate method a pass over a random sample of retain cells instead of all of them.  On
    pbmc68k the default sample is every cell, so its measured defaults cannot tell whether a
    sample changes the outcome.  Here the data are large enough for a sample to be much smaller
    than the retain set: ``cells`` simulated cells (calibrated on pbmc68k, rarest type 3% of
    the cells, seed 0), a stratified 70/30 member / held-out split, a default ``su.SCVI``
    trained ``epochs`` epochs on the members (seed 0), forget = ``forget`` members of the
    rarest type.  Every approximate method runs with its defaults twice: with
    ``retain_sample=sample`` (far below the retain set: a stricter test than the default floor
    of 2,048) and with ``retain_sample="all"``.  For each: the mean per-cell ELBO (8 draws,
    seed 0) of the forget cells, of the held-out cells of the same type and the change of the
    other types' held-out ELBO from the original, the forget advantage (forget ELBO minus
    same-type held-out ELBO) and the method time.

    Attributes
    ----------
    cells
        Cells simulated.
    genes
        Genes simulated.
    epochs
        Training epochs of the original.
    forget
        Forget cells (members of the rarest type).
    sample
        The small retain sample.
    methods
        The approximate methods run.
    exact
        Add two exact references without retrains of the default recipe: ``fast_retrain`` with
        its full budget (``match_fit=False``) and ``fast_retrain`` given each sampled method's
        cell passes (its default epochs x ``sample`` cells, in epochs over every retain
        training cell, rounded up; also ``match_fit=False``): the exact retrain at equal cost.
    """

    cells: int = 6000
    genes: int = 1000
    epochs: int = 60
    forget: int = 60
    sample: int = 512
    methods: list[str] = dataclasses.field(default_factory=lambda: list(APPROXIMATE))
    exact: bool = False


@experiment("retain_sample", RetainSampleParams)
def retain_sample(args: RetainSampleParams) -> pd.DataFrame:
    """Does a retain sample change what an approximate method does?  Sample vs every cell."""
    import scvi_unlearn as su

    adata, train, model = simulated_members(
        args.cells, args.genes, args.epochs, rare_fraction=0.03
    )
    rare = train.obs["cell_type"].value_counts().index[-1]
    members = su.data.forget_by_label(adata, rare)
    forget = np.sort(
        np.random.default_rng(0).choice(members, min(args.forget, members.size), replace=False)
    )
    heldout = adata[adata.obs["membership"] != "train"]
    same = heldout[heldout.obs["cell_type"] == rare].copy()
    other = heldout[heldout.obs["cell_type"] != rare].copy()
    forget_cells = adata[forget].copy()

    def scores(m) -> dict:
        return {
            k: float(su.metrics.per_cell_elbo(m, a)["elbo"].mean())
            for k, a in (("forget", forget_cells), ("same", same), ("other", other))
        }

    base = scores(model)
    print(f"{train.n_obs} members; forget {forget.size} of {rare!r}; original {base}")
    rows = [{"method": "original", "retain sample": "-", **base, "other held-out": "0"}]

    def run(label: str, method: str, sample, **kwargs) -> None:
        if method != "ssd":
            kwargs["enable_progress_bar"] = False
        t0 = time.perf_counter()
        new = model.unlearn(forget, method=method, seed=0, on_degradation="warn", **kwargs)
        seconds = time.perf_counter() - t0
        s = scores(new)
        change = 100 * (s["other"] - base["other"]) / abs(base["other"])
        rows.append(
            {
                "method": label,
                "retain sample": sample,
                **s,
                "other held-out": f"{change:+.2f}%",
                "seconds": f"{seconds:.1f}",
            }
        )
        print(rows[-1], flush=True)

    retain_train = int(np.isin(train.obs_names[model.train_indices], forget, invert=True).sum())
    if args.exact:
        run("fast_retrain (full budget)", "fast_retrain", "all", **FULL_BUDGET)
    for method in args.methods:
        for sample in (args.sample, "all"):
            run(method, method, sample, retain_sample=sample)
        epochs = inspect.signature(su.unlearn.METHODS[method]).parameters.get("max_epochs")
        if args.exact and epochs is not None and epochs.default is not None:
            equal = math.ceil(epochs.default * min(args.sample, retain_train) / retain_train)
            run(
                f"fast_retrain, {equal} epochs (= {method}, sample)",
                "fast_retrain",
                "all",
                max_epochs=equal,
                **FULL_BUDGET,  # the given epochs, not fewer: equal cost
            )
    table = pd.DataFrame(rows)
    table["forget advantage"] = table["forget"] - table["same"]
    for key in ("forget", "same", "other", "forget advantage"):
        table[key] = table[key].map(lambda v: f"{v:.1f}")
    table = table.rename(
        columns={
            "forget": "forget ELBO",
            "same": "same-type held-out ELBO",
            "other": "other-type held-out ELBO",
            "other held-out": "other held-out vs original",
        }
    )
    return table.fillna("-")
