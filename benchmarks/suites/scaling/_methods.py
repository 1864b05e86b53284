"""The ``methods`` experiment: each approximate method's time and peak memory, each in a
fresh process (its worker, :func:`method_worker`), against an estimated retrain.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._common import rss_mb, run_child
from benchmarks.suites._settings import (
    APPROXIMATE,
    default_budget,
)

# ---------------------------------------------------------------------------- methods


@dataclasses.dataclass
class MethodsParams(Common):
    """Parameters of the ``methods`` experiment.

    For each size, cells are simulated (``su.data.simulate``, calibrated on pbmc68k; seed 0)
    and a default ``su.SCVI`` is trained for ``original_epochs`` epochs: the methods' cost does
    not depend on how converged the original is (their budgets are epochs over a retain sample
    and Fisher passes over a retain sample, ``su.unlearn.retain_sample_size``), so a fully
    trained atlas model is not needed to time them.  The forget set has the same size at every
    n (``forget`` cells of the rarest type: one withdrawn donor's worth), so a flat cost shows
    that it does not grow with the dataset.

    * **Retrain: estimated**, not run: the default recipe's measured seconds per epoch (one
      epoch timed after a warm-up epoch) x scvi-tools' epoch heuristic (400 up to 20k cells,
      then 8M / n).  ``fast_retrain``: the same seconds per epoch x its budget
      ``max(10, ceil(0.15 x epochs))`` (same architecture and cells; only the learning rate and
      KL weight differ).  ``rewind``: the same seconds per epoch x its budget
      ``max(10, ceil(0.06 x epochs))`` over every retain cell (it restarts from a checkpoint of
      the original training, which this 2-epoch original does not keep).
    * **Approximate methods: measured**, each in its own process through ``model.unlearn()``
      (whole call: retain copy, method, checks), with the process's peak resident memory
      (``ru_maxrss``) next to its memory after loading the data and model.

    Attributes
    ----------
    sizes
        Cells simulated.
    genes
        Genes simulated.
    forget
        Forget cells (of the rarest type).
    methods
        The approximate methods measured.
    original_epochs
        Training epochs of the original.
    """

    sizes: list[int] = dataclasses.field(default_factory=lambda: [5_000, 20_000, 100_000, 300_000])
    genes: int = 2000
    forget: int = 200
    methods: list[str] = dataclasses.field(default_factory=lambda: list(APPROXIMATE))
    original_epochs: int = 2


def prepare(n: int, genes: int, forget: int, original_epochs: int, folder: Path) -> dict:
    """Simulate, train and save the original; time the default recipe's epoch."""
    import scvi

    import scvi_unlearn as su

    adata = su.data.simulate(n, genes, random_state=0)
    rare = adata.obs["cell_type"].value_counts().index[-1]
    members = np.flatnonzero(adata.obs["cell_type"].to_numpy() == rare)
    rng = np.random.default_rng(0)
    chosen = rng.choice(members, min(forget, members.size), replace=False)
    names = adata.obs_names[np.sort(chosen)].tolist()
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    scvi.settings.seed = 0
    model = su.SCVI(adata)
    model.train(max_epochs=1, enable_progress_bar=False)  # warm-up epoch
    t0 = time.perf_counter()
    model.train(max_epochs=max(1, original_epochs - 1), enable_progress_bar=False)
    epoch_s = (time.perf_counter() - t0) / max(1, original_epochs - 1)
    model.save(folder / "model", save_anndata=True, overwrite=True)
    (folder / "forget.txt").write_text("\n".join(names))
    return {"epoch_s": epoch_s, "n_forget": len(names), "rare_type": str(rare)}


def method_worker(folder: Path, method: str) -> dict:
    """Unlearn with ``method`` in this (fresh) process: seconds, peak memory, budget."""
    import scvi

    import scvi_unlearn as su

    scvi.settings.seed = 0
    model = su.SCVI.load(str(folder / "model"))
    names = (folder / "forget.txt").read_text().split("\n")
    loaded_mb = rss_mb()
    kwargs = {} if method == "ssd" else {"enable_progress_bar": False}
    t0 = time.perf_counter()
    new = model.unlearn(names, method=method, seed=0, on_degradation="warn", **kwargs)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "method_s": new.unlearn_record_["method_time_s"],
        "loaded_mb": loaded_mb,
        "peak_mb": rss_mb(),
        "budget": new.unlearn_record_["budget"],
    }


@experiment("methods", MethodsParams)
def methods(args: MethodsParams) -> pd.DataFrame:
    """Each approximate method's time and peak memory against an estimated retrain, per size."""
    from scvi.model._utils import get_max_epochs_heuristic

    from scvi_unlearn.unlearn import fast_retrain, rewind

    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            info = prepare(n, args.genes, args.forget, args.original_epochs, folder)
            epochs = get_max_epochs_heuristic(n)
            retrain_s = info["epoch_s"] * epochs
            fast_s = info["epoch_s"] * default_budget(fast_retrain, epochs)
            rewind_epochs = default_budget(rewind, epochs)
            rewind_s = info["epoch_s"] * rewind_epochs
            base = {"cells": f"{n:,}", "forget": info["n_forget"]}
            for method, seconds in (
                (f"retrain (estimated: {epochs} epochs)", retrain_s),
                ("fast_retrain (estimated)", fast_s),
                (f"rewind (estimated: {rewind_epochs} epochs)", rewind_s),
            ):
                ratio = "1" if method.startswith("retrain") else f"{seconds / retrain_s:.3f}"
                rows.append(
                    base | {"method": method, "seconds": f"{seconds:.0f}", "time / retrain": ratio}
                )
            for method in args.methods:
                r = run_child("benchmarks.suites.scaling", "method", folder, method, args.threads)
                budget = r["budget"]
                rows.append(
                    base
                    | {
                        "method": method,
                        "seconds": f"{r['seconds']:.1f}",
                        "time / retrain": f"{r['seconds'] / retrain_s:.4f}",
                        "of which the method (s)": f"{r['method_s']:.1f}",
                        "retain cells / epoch": budget.get("retain_cells_per_epoch", "-"),
                        "retain cells (Fisher)": budget.get("retain_cells_importance", "-"),
                        "memory after load (MB)": f"{r['loaded_mb']:.0f}",
                        "peak memory (MB)": f"{r['peak_mb']:.0f}",
                    }
                )
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows).fillna("-")
    measured = table[~table["method"].str.contains("estimated")]
    ratios = measured["time / retrain"].astype(float)
    print(f"\nlargest approximate-method ratio: {ratios.max():.4f} (goal <= 0.1)")
    if not math.isfinite(ratios.max()):
        raise SystemExit(1)
    return table
