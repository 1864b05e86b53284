"""The ``streamed`` experiment (issue #30, item 5): ``fast_retrain`` over a TileDB-SOMA retain
stream against the same method in memory, both judged per cell against the in-memory
default-recipe retrains of :mod:`._grid`.

The streamed original is the in-memory one: its members are written to a SOMA store (cached
as ``members.soma`` next to the original), a model is set up from scvi-tools'
``TileDBDataModule`` over that store and trained one epoch (which records the store, query and
stream as a SOMA-trained model's recipe), then given the in-memory original's weights, its
recorded epochs and its training / validation cells (as ``soma_joinid``).  Unlearning it streams
the retain cells from the store in their original roles; the only difference from the in-memory
request is the data path (tiledbsoma-ml's read buffers and shuffling instead of an AnnData
loader), which is what the verdict must not see.  The streamed result is scored through an
in-memory copy of the original given the new weights (the architecture is the same).
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._harness import experiment
from benchmarks.suites import _settings as s
from benchmarks.suites.verdict._grid import GridParams, load_setting, set_references

STORE = "members.soma"


@dataclasses.dataclass
class StreamedParams(GridParams):
    """Parameters of the ``streamed`` experiment: the ``grid``'s (``data`` must be
    ``"simulated"``; ``runs`` unused), plus

    Attributes
    ----------
    io_batch_size
        Cells a read buffer of the retain stream (tiledbsoma-ml shuffles within it).
    in_memory
        Also run ``fast_retrain`` in memory with the same seeds (the control).
    """

    data: str = "simulated"
    io_batch_size: int = 2048
    in_memory: bool = True


def write_members(model, uri: Path) -> None:
    """The original's cells (its AnnData's counts, cell type and batch; ``obs_id`` = the cell
    name) as a SOMA experiment at ``uri``, ``soma_joinid`` = the row in the AnnData."""
    import anndata as ad
    import tiledbsoma.io

    members = model.adata
    obs = members.obs[["cell_type", "batch"]].astype(str)
    obs["obs_id"] = members.obs_names.astype(str)
    counts = members.layers["counts"]
    table = ad.AnnData(X=counts, obs=obs, var=members.var[[]].copy())
    tmp = uri.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tiledbsoma.io.from_anndata(str(tmp), table, measurement_name="RNA", X_layer_name="counts")
    tmp.rename(uri)


def streamed_original(model, uri: Path, io_batch_size: int):
    """A SOMA-trained ``su.SCVI`` over the store at ``uri`` carrying ``model``'s weights, epochs
    and training / validation cells (module docstring)."""
    import scvi
    import tiledbsoma as soma

    import scvi_unlearn as su
    from scvi_unlearn._quiet import internal_fit
    from scvi_unlearn._seeding import isolated_seed

    init = {k: v for group in model.init_params_["kwargs"].values() for k, v in group.items()}
    with soma.Experiment.open(str(uri)) as exp:
        ids = exp.obs.read(column_names=["soma_joinid", "obs_id"]).concat().to_pandas()
        dm = scvi.dataloaders.TileDBDataModule(
            exp.axis_query("RNA"), layer_name="counts", batch_column_names=["batch"],
            batch_size=128, shuffle=True, seed=0, io_batch_size=io_batch_size,
            train_size=0.9, split_seed=0,
        )  # fmt: skip
        with isolated_seed(0), internal_fit():
            soma_model = su.SCVI(adata=None, registry=dm.registry, **init)
            soma_model.train(datamodule=dm, max_epochs=1, accelerator="cpu")
    joinid = pd.Series(ids["soma_joinid"].to_numpy(), index=ids["obs_id"].astype(str))
    names = np.asarray(model.adata.obs_names, dtype=str)
    train = np.sort(joinid[names[model.train_indices]].to_numpy())
    val = np.sort(joinid[names[model.validation_indices]].to_numpy())
    soma_model.module.load_state_dict(copy.deepcopy(model.module.state_dict()))
    soma_model.train_obs_joinids_, soma_model.validation_obs_joinids_ = train, val
    recipe = soma_model.train_recipe_
    recipe["max_epochs"] = model.train_recipe_["max_epochs"]
    recipe["datamodule"]["n_train"], recipe["datamodule"]["n_validation"] = train.size, val.size
    return soma_model


def scored(model, new):
    """``new``'s weights in a copy of the in-memory ``model`` (for scoring AnnData cells), with
    ``new``'s unlearning record."""
    copy_ = copy.copy(model)
    copy_.module = copy.deepcopy(new.module)
    copy_.unlearn_record_ = new.unlearn_record_
    return copy_


@experiment("streamed", StreamedParams)
def streamed(params: StreamedParams) -> dict[str, pd.DataFrame]:
    """Per-cell verdict of ``fast_retrain`` streamed from a SOMA store and in memory."""
    import scvi_unlearn as su

    if params.data != "simulated":
        raise SystemExit("the streamed experiment runs on simulated data (data = 'simulated')")
    _, adata, model, sets, folder = load_setting(params)
    uri = folder / STORE
    if not uri.exists():
        write_members(model, uri)
    soma_model = streamed_original(model, uri, params.io_batch_size)
    rows = []
    for set_name in params.sets or list(sets):
        forget = sets[set_name]
        refs = set_references(su, params, model, folder, set_name, forget)
        cache = su.attack.ScoreCache(adata, n_draws=8, seed=0)
        for seed in range(params.seeds):
            paths = ["streamed", "in memory"] if params.in_memory else ["streamed"]
            for path in paths:
                original = soma_model if path == "streamed" else model
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    new = original.unlearn(
                        list(forget), seed=seed, enable_progress_bar=False, accelerator="cpu",
                        on_degradation="warn",
                    )  # fmt: skip
                wall = time.perf_counter() - t0
                new = scored(model, new) if path == "streamed" else new
                rep = su.attack.equivalence_test(new, refs, forget, adata=adata, cache=cache)
                rows.append(
                    {"forget set": set_name, "path": path, "seed": seed}
                    | s.verdict_columns(rep, wall, 1.0, new)
                    | {"steps": new.unlearn_record_["budget"].get("steps")}
                )
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows).rename(columns={"time / retrain": "seconds"})
    summary = (
        table.groupby(["forget set", "path"], sort=False)
        .agg(
            passed=("passed", lambda v: f"{int(v.sum())}/{v.size}"),
            mean_z=("mean z", "mean"),
            other_types=("other types vs retrains (%)", "mean"),
            steps=("steps", "mean"),
        )
        .reset_index()
        .round(2)
    )
    return {"summary": summary, "runs": table.round(3)}
