"""Atlas scale out of core: unlearning a donor from a model trained on a TileDB-SOMA store.

For each size, three steps, each in a fresh process (its own peak memory; Linux
``/proc/self/clear_refs`` resets the peak once the step's inputs are loaded) and each cached in
``cache`` (the store and the original take minutes to an hour at a million cells):

1. ``write``: ``su.data.simulate_to_soma`` writes the cells (``donors`` donors, no held-out
   split: every cell is a training or validation cell of the original) to a new store;
2. ``train``: a default ``su.SCVI`` (donor as batch) trained out of core from scvi-tools'
   ``TileDBDataModule`` (``train_size`` of the cells for training, the rest validation;
   ``batch_size`` cells a minibatch, shuffled, ``io_batch_size`` cells a read), timed per epoch,
   then saved;
3. ``unlearn``: the saved model loaded, the donor with the fewest cells among those with at least
   ``min_donor_cells`` picked, and ``model.unlearn(donor_joinids)`` timed (the default method,
   ``fast_retrain`` fit-matched on the retain stream, seed 0).

Worker: ``python -m benchmarks.suites.atlas STEP FOLDER ARGS_JSON THREADS`` prints one JSON line.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._common import peak_mb, quiet, reset_peak, rss_mb, run_child

STORE = "store.soma"


@dataclasses.dataclass
class AtlasParams(Common):
    """Parameters of the ``atlas`` experiment.

    Attributes
    ----------
    cells
        Cells simulated (one size, or a list of sizes run in turn).
    genes
        Genes simulated.
    donors
        Donors (``obs["donor"]``, the model's batch): about ``cells / donors`` cells each.
    min_donor_cells
        The forgotten donor is the one with the fewest cells among those with at least this many.
    original_epochs
        Training epochs of the original; ``0``: scvi-tools' heuristic
        (``get_max_epochs_heuristic(cells)``: ``min(400, round(8e6 / cells))``).  With fewer
        epochs than the heuristic, the ratio to the heuristic's projected training time
        (seconds per epoch x its epochs) is reported too, labelled as projected.
    batch_size
        Cells a minibatch of the original's stream (the unlearning uses its own default).
    io_batch_size
        Cells a read buffer of ``tiledbsoma_ml`` (sets the stream's memory; the unlearning's
        retain stream inherits it from the recorded datamodule).
    unlearn_io_batch_size
        ``io_batch_size`` of the unlearning's retain stream; ``0``: the original's (recorded).
        Otherwise the loaded model's recorded ``dataset_kwargs`` are patched before
        ``unlearn()``: the read buffer sets memory, not which cells are read
        (``fast_retrain`` shuffles with its own seed anyway).
    train_size
        Fraction of the cells the original trains on (the rest: its validation cells).
    seed
        Seed of the simulation, the split, the original's shuffling and weights.
    """

    cells: int | list[int] = 100_000
    genes: int = 2000
    donors: int = 200
    min_donor_cells: int = 500
    original_epochs: int = 0
    batch_size: int = 128
    io_batch_size: int = 65_536
    unlearn_io_batch_size: int = 0
    train_size: float = 0.95
    seed: int = 0
    cache: str = "/tmp/atlas_cache"


# ----------------------------------------------------------------------------- workers


def _write(folder: Path, a: dict) -> dict:
    import scvi_unlearn as su

    reset_peak()
    t0 = time.perf_counter()
    su.data.simulate_to_soma(
        folder / STORE, a["cells"], a["genes"], n_donors=a["donors"], holdout=None,
        random_state=a["seed"],
    )  # fmt: skip
    return {"write_s": time.perf_counter() - t0, "write_peak_mb": peak_mb()}


def _train(folder: Path, a: dict) -> dict:
    import scvi
    import tiledbsoma as soma

    import scvi_unlearn as su
    from benchmarks.suites._callbacks import EpochTimes

    scvi.settings.seed = a["seed"]
    times = EpochTimes()
    with soma.Experiment.open(str(folder.parent / STORE)) as exp:
        dm = scvi.dataloaders.TileDBDataModule(
            exp.axis_query("RNA"), layer_name="counts", batch_column_names=["donor"],
            train_size=a["train_size"], split_seed=a["seed"], batch_size=a["batch_size"],
            shuffle=True, seed=a["seed"], io_batch_size=a["io_batch_size"],
        )  # fmt: skip
        model = su.SCVI(adata=None, registry=dm.registry)
        loaded = reset_peak()
        t0 = time.perf_counter()
        model.train(
            datamodule=dm, max_epochs=a["epochs"], enable_progress_bar=False,
            accelerator="cpu", callbacks=[times],
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        peak = peak_mb()
    model.save(str(folder / "model"), overwrite=True)
    epoch_s = [e - s for s, e in zip([t0, *times.ends[:-1]], times.ends, strict=True)]
    return {"train_s": seconds, "epoch_s": epoch_s, "loaded_mb": loaded, "peak_mb": peak}


def _unlearn(folder: Path, a: dict) -> dict:
    import scvi
    import tiledbsoma as soma

    import scvi_unlearn as su

    uri = str(folder.parent / STORE)
    with soma.Experiment.open(uri) as exp:
        donors = exp.obs.read(column_names=["donor"]).concat().to_pandas()["donor"]
    sizes = donors.astype(str).value_counts()
    eligible = sizes[sizes >= a["min_donor_cells"]]
    if eligible.empty:
        raise SystemExit(f"no donor has >= {a['min_donor_cells']} cells (largest {sizes.max()})")
    donor = str(eligible.sort_values(kind="stable").index[0])
    forget = su.data.forget_donor(uri, donor, members_only=False, ids="soma_joinid")
    scvi.settings.seed = 0
    model = su.SCVI.load(str(folder / "model"))
    if a.get("unlearn_io_batch_size"):
        model.train_recipe_["datamodule"]["dataset_kwargs"]["io_batch_size"] = a[
            "unlearn_io_batch_size"
        ]
    io = model.train_recipe_["datamodule"]["dataset_kwargs"].get("io_batch_size")
    loaded = reset_peak()
    t0 = time.perf_counter()
    new = model.unlearn(forget, seed=0, enable_progress_bar=False, accelerator="cpu")
    seconds = time.perf_counter() - t0
    record = new.unlearn_record_
    result = {
        "donor": donor,
        "donor_cells": int(forget.size),
        "io_batch_size": io,
        "seconds": seconds,
        "method": record["method"],
        "method_s": record.get("method_time_s"),
        "budget": record["budget"],
        "checks": record["checks"],
        "loaded_mb": loaded,
        "peak_mb": peak_mb(),
        "max_rss_mb": rss_mb(),
        "wall_time_s": record.get("wall_time_s"),
        "log": record.get("log"),
    }
    (folder / f"unlearn_io{io}.json").write_text(json.dumps(result, indent=1, default=_json))
    return result


def _json(value):
    """numpy scalars as Python's, anything else JSON cannot hold as text."""
    return value.item() if hasattr(value, "item") else str(value)


WORKERS = {"write": _write, "train": _train, "unlearn": _unlearn}


# ----------------------------------------------------------------------------- experiment


def _cached(path: Path, step: str, folder: Path, args: dict, threads: int) -> dict:
    """The step's JSON result, from ``path`` when a previous run finished it."""
    if path.exists():
        return json.loads(path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    r = run_child("benchmarks.suites.atlas", step, folder, json.dumps(args), threads)
    path.write_text(json.dumps(r, indent=1))
    return r


def _size(p: AtlasParams, n: int) -> dict:
    from scvi.model._utils import get_max_epochs_heuristic

    heuristic = get_max_epochs_heuristic(n)
    epochs = p.original_epochs or heuristic
    data = Path(p.cache).expanduser() / f"c{n}_g{p.genes}_d{p.donors}_s{p.seed}"
    args = {"cells": n, "genes": p.genes, "donors": p.donors, "seed": p.seed}
    store = _cached(data / "store.json", "write", data, args, p.threads)
    name = f"original_e{epochs}_b{p.batch_size}_io{p.io_batch_size}_t{p.train_size}"
    args |= {"epochs": epochs, "batch_size": p.batch_size, "io_batch_size": p.io_batch_size}
    args |= {"train_size": p.train_size, "min_donor_cells": p.min_donor_cells}
    args["unlearn_io_batch_size"] = p.unlearn_io_batch_size
    original = _cached(data / name / "original.json", "train", data / name, args, p.threads)
    r = run_child("benchmarks.suites.atlas", "unlearn", data / name, json.dumps(args), p.threads)
    train_s, checks, budget = original["train_s"], r["checks"], r["budget"]
    row = {
        "cells": f"{n:,}",
        "genes": p.genes,
        "donors": p.donors,
        "store write (s)": round(store["write_s"]),
        "original epochs (heuristic)": f"{epochs} ({heuristic})",
        "original training (s)": round(train_s),
        "s / epoch": round(train_s / epochs, 1),
        "original peak (MB)": round(original["peak_mb"]),
        "donor cells": r["donor_cells"],
        "unlearn io_batch_size": r["io_batch_size"],
        "unlearn (s)": round(r["seconds"], 1),
        "of which training (s)": round(r["method_s"], 1),
        "unlearn / original training": round(r["seconds"] / train_s, 4),
    }
    if epochs < heuristic:
        projected = train_s / epochs * heuristic
        row["unlearn / projected heuristic training"] = round(r["seconds"] / projected, 4)
    row |= {
        "peak above loaded / absolute (MB)": f"{r['peak_mb'] - r['loaded_mb']:.0f} / "
        f"{r['peak_mb']:.0f}",
        "trained (epochs / steps)": f"{budget.get('epochs')} / {budget.get('steps')}",
        "retain check drop": checks.get("relative_drop"),
        "check passed": checks.get("passed"),
    }
    print(json.dumps(row), flush=True)
    return row


@experiment("atlas", AtlasParams)
def atlas(p: AtlasParams) -> pd.DataFrame:
    """A donor unlearned (default method) from an original trained out of core, 100k-1M cells."""
    sizes = p.cells if isinstance(p.cells, list) else [p.cells]
    return pd.DataFrame([_size(p, int(n)) for n in sizes]).fillna("-")


if __name__ == "__main__":  # worker: python -m benchmarks.suites.atlas STEP FOLDER ARGS THREADS
    step, folder, args, threads = sys.argv[1:5]
    quiet(int(threads))
    print(json.dumps(WORKERS[step](Path(folder), json.loads(args)), default=_json))
