"""Atlas scale: each unlearning method's time and peak memory against a retrain's, 5k-300k cells.

For each size, cells are simulated (``su.data.simulate``, calibrated on pbmc68k; seed 0) and a
default ``su.SCVI`` is trained for ``--original-epochs`` epochs: the methods' cost does not
depend on how converged the original is (their budgets are epochs over a retain sample and
Fisher passes over a retain sample, ``su.unlearn.retain_sample_size``), so a fully trained
atlas model is not needed to time them.  The forget set has the same size at every n
(``--forget`` cells of the rarest type: one withdrawn donor's worth), so a flat cost shows
that it does not grow with the dataset.

* **Retrain: estimated**, not run: the default recipe's measured seconds per epoch (one epoch
  timed after a warm-up epoch) x scvi-tools' epoch heuristic (400 up to 20k cells, then
  8M / n).  ``fast_retrain``: the same seconds per epoch x its budget
  ``max(10, ceil(0.15 x epochs))`` (same architecture and cells; only the learning rate and
  KL weight differ).  ``rewind``: the same seconds per epoch x its budget
  ``max(10, ceil(0.06 x epochs))`` over every retain cell (it restarts from a checkpoint of the
  original training, which this 2-epoch original does not keep).
* **Approximate methods: measured**, each in its own process through ``model.unlearn()``
  (whole call: retain copy, method, checks), with the process's peak resident memory
  (``ru_maxrss``) next to its memory after loading the data and model.

    python benchmarks/scaling.py --sizes 5000 20000 100000 300000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from unlearn_defaults import _quiet

APPROXIMATE = ["finetune", "gradient_ascent", "scrub", "contrastive", "fisher", "ssd"]
APPROXIMATE += ["extragradient", "mi_regularized", "reinit_finetune", "distill"]


def quiet(threads: int) -> None:
    """One process's benchmark settings: ``threads`` torch threads, no warnings or notes."""
    import torch

    torch.set_num_threads(threads)
    _quiet()


def simulated_members(n_cells: int, genes: int, epochs: int, rare_fraction: float | None = None):
    """Simulated cells (seed 0) with a stratified 70/30 member split and a default su.SCVI
    trained ``epochs`` epochs on the members (seed 0): ``(adata, members, model)``."""
    import scvi

    import scvi_unlearn as su

    scvi.settings.seed = 0
    adata = su.data.simulate(n_cells, genes, rare_fraction=rare_fraction, random_state=0)
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    members = adata[adata.obs["membership"] == "train"].copy()
    su.SCVI.setup_anndata(members, layer="counts", labels_key="cell_type")
    model = su.SCVI(members)
    model.train(max_epochs=epochs, enable_progress_bar=False)
    return adata, members, model


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def prepare(n: int, genes: int, forget: int, original_epochs: int, folder: Path) -> dict:
    """Simulate, train and save the original; time the default recipe's epoch."""
    import numpy as np
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


def worker(folder: Path, method: str, threads: int) -> None:
    """Unlearn with ``method`` (child process); print one JSON line."""
    quiet(threads)
    import scvi

    import scvi_unlearn as su

    scvi.settings.seed = 0
    model = su.SCVI.load(str(folder / "model"))
    names = (folder / "forget.txt").read_text().split("\n")
    loaded_mb = _rss_mb()
    kwargs = {} if method == "ssd" else {"enable_progress_bar": False}
    t0 = time.perf_counter()
    new = model.unlearn(names, method=method, seed=0, on_degradation="warn", **kwargs)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "method_s": new.unlearn_record_["method_time_s"],
                "loaded_mb": loaded_mb,
                "peak_mb": _rss_mb(),
                "budget": new.unlearn_record_["budget"],
            }
        )
    )


def default_budget(method, original_epochs: int) -> int:
    """Epochs of ``fast_retrain`` or ``rewind`` with their default budget rule on an original
    trained ``original_epochs`` epochs (the defaults read from the method's signature)."""
    import inspect

    from scvi_unlearn.unlearn.exact._fast_retrain import fast_budget

    params = inspect.signature(method).parameters
    fraction, floor = params["epoch_fraction"].default, params["min_epochs"].default
    capped = method.__name__ == "fast_retrain"  # never more epochs than the original
    return fast_budget(original_epochs, fraction, floor, at_most_original=capped)


def run_worker(folder: Path, method: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(folder), method, "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000, 100_000, 300_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--forget", type=int, default=200, help="forget cells (rarest type)")
    parser.add_argument("--methods", nargs="+", default=APPROXIMATE)
    parser.add_argument("--original-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), args.worker[1], args.threads)
        return

    quiet(args.threads)
    import pandas as pd
    from equivalence_power import markdown
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
            rows.append(
                base
                | {
                    "method": f"retrain (estimated: {epochs} epochs)",
                    "seconds": f"{retrain_s:.0f}",
                    "time / retrain": "1",
                }
            )
            rows.append(
                base
                | {
                    "method": "fast_retrain (estimated)",
                    "seconds": f"{fast_s:.0f}",
                    "time / retrain": f"{fast_s / retrain_s:.3f}",
                }
            )
            rows.append(
                base
                | {
                    "method": f"rewind (estimated: {rewind_epochs} epochs)",
                    "seconds": f"{rewind_s:.0f}",
                    "time / retrain": f"{rewind_s / retrain_s:.3f}",
                }
            )
            for method in args.methods:
                r = run_worker(folder, method, args.threads)
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
    print(markdown(table))
    worst = table[~table["method"].str.contains("estimated")]
    ratios = worst["time / retrain"].astype(float)
    print(f"\nlargest approximate-method ratio: {ratios.max():.4f} (goal <= 0.1)")
    if not math.isfinite(ratios.max()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
