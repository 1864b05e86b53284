"""Speed and peak memory of ``unlearn()`` and the audit at several sizes, tracked between commits.

The idea of asv (scikit-learn's ``asv_benchmarks/``, numpy's ``benchmarks/``) in the suite: each
measurement runs in a fresh process whose peak resident memory is reset once the model and data
are loaded (so the peak is the step's own; Linux ``/proc/self/clear_refs``) on simulated data
(``su.data.simulate``, calibrated on pbmc68k, seed 0; an original trained ``epochs`` epochs and
cached per size), and the run is saved as ``benchmarks/track/<commit>.json``.
``python -m benchmarks compare OLD.json NEW.json`` prints the time and memory ratios of two runs
and flags those above a threshold (1.2 by default), so a slowdown shows up in review.

Measured, each on its own:

* ``unlearn fast_retrain (fixed)``: ``model.unlearn(forget)`` with the default method and a fixed
  budget (``match_fit=False, max_epochs=fixed_epochs``), so its time does not depend on where fit
  matching stops; per-epoch time is reported next to it;
* ``unlearn ssd``: an approximate method whose cost is a Fisher pass over a retain sample;
* ``audit threshold`` / ``audit mlp``: ``new.membership_attack(forget, adata=adata)`` with the
  threshold attack and with the default MLP (matched non-members, 8 posterior draws per cell).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks._harness import ROOT, Common, experiment
from benchmarks._harness import commit as harness_commit
from benchmarks.suites._common import peak_mb, quiet, reset_peak, run_child

#: what one worker process measures
MEASURES = ("unlearn fast_retrain (fixed)", "unlearn ssd", "audit threshold", "audit mlp")


@dataclasses.dataclass
class TrackParams(Common):
    """Parameters of the ``track`` experiment.

    Attributes
    ----------
    sizes
        Cells simulated (members are 70%, the rest held out as non-members).
    genes
        Genes simulated.
    forget
        Forget cells: a random sample of the rarest type's members (one donor's worth).
    epochs
        Training epochs of the original (its cost does not change what is timed).
    fixed_epochs
        Budget of the timed ``fast_retrain`` (``match_fit=False``).
    measures
        Which of :data:`MEASURES` to run.
    save
        Write ``benchmarks/track/<commit>.json`` (``False``: print only).
    """

    sizes: list[int] = dataclasses.field(default_factory=lambda: [2_000, 10_000])
    genes: int = 2000
    forget: int = 200
    epochs: int = 2
    fixed_epochs: int = 5
    measures: list[str] = dataclasses.field(default_factory=lambda: list(MEASURES))
    save: bool = True


def _folder(params: TrackParams, n: int) -> Path:
    return Path(params.cache) / f"track_{n}x{params.genes}_e{params.epochs}_f{params.forget}"


def prepare(folder: Path, n: int, genes: int, forget: int, epochs: int) -> None:
    """Simulate ``n`` cells, split, train the original and save it with the forget names."""
    import numpy as np
    import scvi

    import scvi_unlearn as su

    if (folder / "forget.txt").exists():
        return
    scvi.settings.seed = 0
    adata = su.data.simulate(n, genes, random_state=0)
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    adata.write_h5ad(folder.with_suffix(".h5ad"))
    members = adata[adata.obs["membership"] == "train"].copy()
    su.SCVI.setup_anndata(members, layer="counts", labels_key="cell_type")
    model = su.SCVI(members)
    model.train(max_epochs=epochs, enable_progress_bar=False)
    rare = members.obs["cell_type"].value_counts().index[-1]
    names = members.obs_names[members.obs["cell_type"] == rare].to_numpy()
    chosen = np.random.default_rng(0).choice(names, min(forget, names.size), replace=False)
    model.save(str(folder / "model"), save_anndata=True, overwrite=True)
    (folder / "forget.txt").write_text("\n".join(sorted(chosen)))


def worker(folder: Path, measure: str, fixed_epochs: int) -> dict:
    """One measurement in this (fresh) process: seconds, resident memory before the step (the
    model and data loaded) and the peak during the step (:func:`~._common.reset_peak`)."""
    import anndata as ad
    import scvi

    import scvi_unlearn as su

    scvi.settings.seed = 0
    model = su.SCVI.load(str(folder / "model"))
    forget = (folder / "forget.txt").read_text().split("\n")
    adata = ad.read_h5ad(folder.with_suffix(".h5ad")) if measure.startswith("audit") else None
    new = None
    if measure.startswith("audit"):  # the audited model: any unlearned model does
        new = model.unlearn(forget, method="ssd", seed=0, on_degradation="warn")
    loaded = reset_peak()
    t0 = time.perf_counter()
    extra: dict = {}
    if measure == "unlearn fast_retrain (fixed)":
        out = model.unlearn(
            forget,
            seed=0,
            match_fit=False,
            max_epochs=fixed_epochs,
            enable_progress_bar=False,
            on_degradation="warn",
        )
        extra["epochs"] = out.unlearn_record_["budget"].get("epochs", fixed_epochs)
    elif measure == "unlearn ssd":
        model.unlearn(forget, method="ssd", seed=0, on_degradation="warn")
    elif measure == "audit threshold":
        new.membership_attack(forget, adata=adata, attack="threshold")
    elif measure == "audit mlp":
        new.membership_attack(forget, adata=adata)
    else:
        raise ValueError(f"unknown measure {measure!r}; known: {MEASURES}")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "loaded_mb": loaded, "peak_mb": peak_mb(), **extra}


@experiment("track", TrackParams)
def track(params: TrackParams) -> pd.DataFrame:
    """Time and peak memory of unlearn() and the audit at each size, saved per commit."""
    unknown = sorted(set(params.measures) - set(MEASURES))
    if unknown:
        raise SystemExit(f"unknown measures {unknown}; known: {list(MEASURES)}")
    rows = []
    for n in params.sizes:
        folder = _folder(params, n)
        folder.mkdir(parents=True, exist_ok=True)
        prepare(folder, n, params.genes, params.forget, params.epochs)
        for measure in params.measures:
            r = run_child(
                "benchmarks.suites.track",
                str(folder),
                measure,
                str(params.fixed_epochs),
                str(params.threads),
            )
            row = {
                "cells": n,
                "measure": measure,
                "seconds": round(r["seconds"], 2),
                "memory before (MB)": round(r["loaded_mb"]),
                "peak memory (MB)": round(r["peak_mb"]),
                "peak above before (MB)": round(r["peak_mb"] - r["loaded_mb"]),
            }
            if "epochs" in r:
                row["s / epoch"] = round(r["seconds"] / max(r["epochs"], 1), 3)
            rows.append(row)
            print(row, flush=True)
    table = pd.DataFrame(rows)
    if params.save:
        commit = harness_commit()
        record = {
            "commit": commit,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
            "params": dataclasses.asdict(params),
            "rows": rows,
        }
        path = ROOT / "track" / f"{commit}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(record, indent=2))
        print(f"saved {path.relative_to(ROOT.parent)}", flush=True)
    return table


def compare(old: Path, new: Path, threshold: float = 1.2) -> pd.DataFrame:
    """Ratios new / old of time and peak memory for every (cells, measure) in both runs; a row
    whose ratio exceeds ``threshold`` is flagged ``slower`` / ``more memory``."""
    a = {(r["cells"], r["measure"]): r for r in json.loads(Path(old).read_text())["rows"]}
    b = {(r["cells"], r["measure"]): r for r in json.loads(Path(new).read_text())["rows"]}
    rows = []
    for key in [k for k in a if k in b]:
        time_ratio = b[key]["seconds"] / max(a[key]["seconds"], 1e-9)
        mem_ratio = b[key]["peak memory (MB)"] / max(a[key]["peak memory (MB)"], 1e-9)
        flags = [
            f for f, r in (("slower", time_ratio), ("more memory", mem_ratio)) if r > threshold
        ]
        rows.append(
            {
                "cells": key[0],
                "measure": key[1],
                "seconds (old -> new)": f"{a[key]['seconds']} -> {b[key]['seconds']}",
                "time ratio": round(time_ratio, 3),
                "peak MB (old -> new)": (
                    f"{a[key]['peak memory (MB)']} -> {b[key]['peak memory (MB)']}"
                ),
                "memory ratio": round(mem_ratio, 3),
                "flag": ", ".join(flags),
            }
        )
    if not rows:
        raise SystemExit(f"{old} and {new} share no (cells, measure) row.")
    return pd.DataFrame(rows)


if (
    __name__ == "__main__"
):  # worker: python -m benchmarks.suites.track FOLDER MEASURE EPOCHS THREADS
    quiet(int(sys.argv[4]))
    print(json.dumps(worker(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))))
