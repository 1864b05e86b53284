"""The ``ddp`` experiment: a method on 2 DDP processes (CPU) against the same on one, each run
in a fresh process (its worker, :func:`ddp_worker`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites import _settings as s
from benchmarks.suites.verdict._grid import GridParams, load_setting, set_references

# ---------------------------------------------------------------------------- DDP


@dataclasses.dataclass
class DDPParams(Common):
    """Parameters of the ``ddp`` experiment.

    Setting: the offline PBMC data (``su.data.pbmc68k()``), the stratified 70/30 member split,
    a default ``su.SCVI`` trained ``epochs`` epochs on the members (seed 0), forget = the CD56+
    NK members.  Each method runs with its defaults, once on one process and once with
    Lightning's DDP on 2 CPU processes (``accelerator="cpu", devices=2,
    strategy="ddp_find_unused_parameters_true"``: scVI has parameters that get no gradient,
    e.g. the library encoder with observed library sizes, which plain ``"ddp"`` refuses).
    Reported: the mean per-cell ELBO (8 draws, seed 0) of the forget cells, of the held-out
    CD56+ NK cells and of the other held-out cells, for both runs.

    Every run is its own process (``python -m benchmarks.suites.scaling ddp ...``; Lightning's
    DDP launcher starts the second rank by re-running that command), loading the saved
    original; rank 0 writes the scores.  Under DDP each process takes half of every minibatch
    (the one-device steps, :mod:`scvi_unlearn.unlearn.core._devices`) and gradients are
    averaged, so the result is not bit-identical to one process (other cells in each half, and
    BatchNorm statistics per process); the question is whether its quality is the same.

    Attributes
    ----------
    epochs
        Training epochs of the original.
    methods
        The methods run on 1 and on 2 processes.
    """

    epochs: int = 200
    methods: list[str] = dataclasses.field(
        default_factory=lambda: ["finetune", "scrub", "fast_retrain"]
    )


def _ddp_sets(su, adata) -> dict:
    forget = su.data.forget_by_label(adata, "CD56+ NK")
    heldout = adata[adata.obs["membership"] != "train"]
    return {
        "forget": adata[forget].copy(),
        "same-type held-out": heldout[heldout.obs["cell_type"] == "CD56+ NK"].copy(),
        "other held-out": heldout[heldout.obs["cell_type"] != "CD56+ NK"].copy(),
    }


def _ddp_scores(su, model, sets: dict) -> dict:
    return {k: float(su.metrics.per_cell_elbo(model, a)["elbo"].mean()) for k, a in sets.items()}


def ddp_worker(folder: Path, method: str, devices: int) -> dict | None:
    """Unlearn with ``method`` on ``devices`` processes; rank 0 returns the scores."""
    import anndata as ad
    import scvi

    import scvi_unlearn as su

    scvi.settings.seed = 0
    adata = ad.read_h5ad(folder / "adata.h5ad")
    model = su.SCVI.load(str(folder / "model"))
    sets = _ddp_sets(su, adata)
    extra = {"devices": 2, "strategy": "ddp_find_unused_parameters_true"} if devices == 2 else {}
    t0 = time.perf_counter()
    new = model.unlearn(
        list(sets["forget"].obs_names), method=method, seed=0, accelerator="cpu",
        enable_progress_bar=False, on_degradation="warn", **extra,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return None
    scores = _ddp_scores(su, new, sets)
    return {"method": method, "processes": devices, **scores, "seconds": seconds}


@experiment("ddp", DDPParams)
def ddp(args: DDPParams) -> pd.DataFrame:
    """A method on 2 DDP processes (CPU) against the same on one: forget and held-out ELBO."""
    import scvi

    import scvi_unlearn as su

    scvi.settings.seed = 0
    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    train = adata[adata.obs["membership"] == "train"].copy()
    su.SCVI.setup_anndata(train, layer="counts", labels_key="cell_type")
    model = su.SCVI(train)
    model.train(max_epochs=args.epochs, enable_progress_bar=False)
    sets = _ddp_sets(su, adata)
    rows = [{"method": "original", "processes": 1, **_ddp_scores(su, model, sets)}]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model.save(str(folder / "model"), save_anndata=True)
        adata.write_h5ad(folder / "adata.h5ad")
        for method in args.methods:
            for devices in (1, 2):
                out = folder / f"{method}-{devices}.json"
                cmd = [sys.executable, "-m", "benchmarks.suites.scaling", "ddp", str(folder),
                       method, str(devices), str(out), str(args.threads)]  # fmt: skip
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(
                        f"{method} on {devices} process(es) failed:\n{done.stderr[-3000:]}"
                    )
                rows.append(json.loads(out.read_text()))
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    for key in [*sets, "seconds"]:
        table[key] = table[key].map(lambda v: f"{v:.1f}")
    return table.replace("nan", "-")


# ---------------------------------------------------------------------------- DDP verdict


@dataclasses.dataclass
class DDPVerdictParams(GridParams):
    """Parameters of the ``ddp_verdict`` experiment: those of the verdict suite's ``grid``
    (data, forget sets, seeds, references; its ``runs`` unused), plus

    Attributes
    ----------
    method
        The method run on each number of processes, with its defaults.
    devices
        The numbers of DDP processes (CPU) to run it on (1: no DDP).
    """

    method: str = "fast_retrain"
    devices: list[int] = dataclasses.field(default_factory=lambda: [1, 2])


def ddp_unlearn_worker(original: Path, forget: Path, method: str, devices: int, seed: int,
                       out: Path) -> None:  # fmt: skip
    """Unlearn the saved ``original`` of the cells listed in ``forget`` (JSON) on ``devices``
    CPU processes; rank 0 saves the new model to ``out`` and its wall time to
    ``out/wall.json``."""
    import scvi_unlearn as su

    model = su.SCVI.load(str(original))
    names = json.loads(forget.read_text())
    extra = {"devices": devices, "strategy": "ddp_find_unused_parameters_true"}
    t0 = time.perf_counter()
    new = model.unlearn(
        names, method=method, seed=seed, accelerator="cpu", enable_progress_bar=False,
        on_degradation="warn", **(extra if devices > 1 else {}),
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        new.save(str(out), save_anndata=True)
        (out / "wall.json").write_text(json.dumps({"seconds": wall}))


@experiment("ddp_verdict", DDPVerdictParams)
def ddp_verdict(params: DDPVerdictParams) -> dict[str, pd.DataFrame]:
    """The per-cell verdict of ``method`` on 1 and on several DDP processes, against the cached
    default-recipe retrains, and the held-out ELBO gap of each DDP run to the one-process run of
    the same forget set and seed.  Each run is a fresh process: ``python -m
    benchmarks.suites.scaling ddp_unlearn ORIGINAL METHOD FORGET DEVICES SEED OUT THREADS``."""
    import scvi_unlearn as su

    _, adata, model, sets, folder = load_setting(params)
    names = params.sets or list(sets)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        forget_file = Path(tmp) / "forget.json"
        for set_name in names:
            forget = sets[set_name]
            refs = set_references(su, params, model, folder, set_name, forget)
            cache = su.attack.ScoreCache(adata, n_draws=8, seed=0)
            forget_file.write_text(json.dumps([str(n) for n in forget]))
            for seed in range(params.seeds):
                for devices in params.devices:
                    out = Path(tmp) / f"new-{len(rows)}"
                    cmd = [sys.executable, "-m", "benchmarks.suites.scaling", "ddp_unlearn",
                           str(folder / "original"), params.method, str(forget_file),
                           str(devices), str(seed), str(out), str(params.threads)]  # fmt: skip
                    done = subprocess.run(cmd, capture_output=True, text=True)
                    if done.returncode != 0:
                        raise RuntimeError(f"{cmd} failed:\n{done.stderr[-3000:]}")
                    new = su.SCVI.load(str(out))
                    wall = json.loads((out / "wall.json").read_text())["seconds"]
                    rep = su.attack.equivalence_test(new, refs, forget, adata=adata, cache=cache)
                    rows.append(
                        {"forget set": set_name, "seed": seed, "processes": devices}
                        | s.verdict_columns(rep, wall, 1.0, new)
                        | {
                            "held-out ELBO": rep.utility["other_types_elbo"],
                            "steps": new.unlearn_record_["budget"].get("steps"),
                        }  # fmt: skip
                    )
                    print(rows[-1], flush=True)
    table = pd.DataFrame(rows).rename(columns={"time / retrain": "seconds"})
    one = table[table["processes"] == 1].set_index(["forget set", "seed"])["held-out ELBO"]
    table["held-out vs 1 process (%)"] = [
        100
        * (r["held-out ELBO"] - one[(r["forget set"], r["seed"])])
        / abs(one[(r["forget set"], r["seed"])])
        for _, r in table.iterrows()
    ]
    summary = (
        table.groupby("processes")
        .agg(
            passed=("passed", lambda v: f"{int(v.sum())}/{v.size}"),
            gap_mean=("held-out vs 1 process (%)", "mean"),
            gap_worst=("held-out vs 1 process (%)", "min"),
        )
        .reset_index()
    )
    return {"runs": table, "summary": summary}
