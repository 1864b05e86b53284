"""Fit trajectories of fast_retrain along its schedule (groups of cells; weight averages).

Experiment ``unseen_type``: why a fast exact retrain fails whole-cell-type forget sets on
pbmc68k.  ``fast_retrain`` (its schedule, weights averaged, no fit matching: ``epochs`` epochs,
plus ``options``) is trained once per forget set with a callback that scores, after every
epoch, the mean ELBO of five groups of cells (:data:`GROUPS`): the forget cells, a seeded sample
of 300 retain training cells, the retain validation cells, and the held-out cells (never trained
on by any model) of the forget cells' types and of the other types.  The same groups are scored
on the original (``original_epochs`` epochs, :func:`_settings.setting`) and on the 5 cached
default-recipe retrains (the verdict suite's; trained when missing).  The forget cells are
scored for the analysis only: no method sees them.  Returned per forget set: the retrains' mean
(and range) per group and the trajectory at the epochs where it matches the original's
validation fit (what ``match_fit`` stops at), the original's training fit, the retrains'
forget-cell fit (closest mean), and the last epoch; and every epoch.

Experiment ``averaging``: when fast_retrain's weight average reaches the original's fit, by
time constant.  On simulated data (:func:`_settings.simulated_setting`, ``cells`` x ``genes``)
``fast_retrain`` is trained for ``epochs`` epochs on the members less a forget set (50 random
members, or the "CD56+ NK" members with ``forget="nk"``; seed 0, no fit matching).  A callback
keeps exponential moving averages of the weights with time constants of ``taus`` optimizer steps
(besides the method's own average) and scores, every ``1 / checks`` of an epoch, the mean ELBO
on the retain validation cells that fit matching scores (4 seeded draws) of the current weights
and of every average.  Returned: the trace, and for each the first check at which it reaches
the original's ELBO on the same cells, the target ``match_fit`` stops at.  No verdict: this
shows how far behind the weights an average lags.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites import _settings as s

#: the groups of cells scored along the trajectory
GROUPS = ("forget", "train", "validation", "same type", "other types")
#: retain training cells scored (a seeded sample)
TRAIN_SAMPLE = 300


def group_scorer(su, adata, model, forget):
    """A function of a module: the mean ELBO of each of :data:`GROUPS` (4 seeded draws)."""
    from scvi_unlearn.unlearn.core._guard import cell_elbos

    members = model.adata
    forget_pos = members.obs_names.get_indexer(np.asarray(forget))
    types = members.obs["cell_type"].iloc[forget_pos].unique()
    rng = np.random.default_rng(0)
    train = np.setdiff1d(model.train_indices, forget_pos)
    train = np.sort(rng.choice(train, min(TRAIN_SAMPLE, train.size), replace=False))
    validation = np.setdiff1d(model.validation_indices, forget_pos)
    heldout = adata[(adata.obs[su.data.SPLIT_KEY] != su.data.TRAIN).to_numpy()].copy()
    model._validate_anndata(heldout)
    same = heldout.obs["cell_type"].isin(types).to_numpy()
    cells = {
        "forget": (model.adata_manager, forget_pos),
        "train": (model.adata_manager, train),
        "validation": (model.adata_manager, validation),
        "same type": (model.get_anndata_manager(heldout), np.flatnonzero(same)),
        "other types": (model.get_anndata_manager(heldout), np.flatnonzero(~same)),
    }

    def score(module) -> dict[str, float]:
        return {
            g: float(cell_elbos(module, manager, idx).mean()) if idx.size else np.nan
            for g, (manager, idx) in cells.items()
        }

    return score


def first_reaching(trace: pd.DataFrame, group: str, target: float) -> int | None:
    """The first epoch of ``trace`` whose ``group`` ELBO reaches ``target`` (``None``: never)."""
    hit = trace.index[trace[group] >= target]
    return int(trace.loc[hit[0], "epoch"]) if len(hit) else None


def trajectory_summary(trace: pd.DataFrame, refs: pd.DataFrame, original: dict) -> pd.DataFrame:
    """The retrains, the original, and the trajectory at its marked epochs (experiment doc)."""
    rows = [
        {"model": "retrains (mean)", **refs.mean().to_dict()},
        {
            "model": "retrains (range)",
            **{g: f"{refs[g].min():.1f} … {refs[g].max():.1f}" for g in GROUPS},
        },
        {"model": "original", **original},
    ]
    marks = {
        "validation fit = original's (match_fit)": first_reaching(
            trace, "validation", original["validation"]
        ),
        "training fit = original's": first_reaching(trace, "train", original["train"]),
        "forget fit closest to retrains'": int(
            trace.loc[(trace["forget"] - refs["forget"].mean()).abs().idxmin(), "epoch"]
        ),
        "last epoch": int(trace["epoch"].iloc[-1]),
    }
    for label, epoch in marks.items():
        if epoch is None:
            rows.append({"model": f"fast, {label}: not reached"})
            continue
        row = trace[trace["epoch"] == epoch].iloc[0]
        rows.append({"model": f"fast, {label}: epoch {epoch}", **row[list(GROUPS)].to_dict()})
    table = pd.DataFrame(rows, columns=["model", *GROUPS])
    return table.map(lambda v: v if isinstance(v, str) else ("" if pd.isna(v) else f"{v:.1f}"))


@dataclasses.dataclass
class UnseenTypeParams(Common):
    """Parameters of the ``unseen_type`` experiment.

    Attributes
    ----------
    original_epochs
        The pbmc68k original's training epochs (cached as in the verdict suite).
    sets
        Forget-set names (:func:`_settings.forget_sets` with the 9 CD34+ members).
    epochs
        ``fast_retrain`` epochs.
    options
        More ``fast_retrain`` arguments (``{kl_weight = 0.5}``).
    seed
        Seed of the ``fast_retrain`` run.
    """

    original_epochs: int = 400
    sets: list[str] = dataclasses.field(
        default_factory=lambda: ["CD34+ (9)", "CD8+ Cytotoxic T (38)", "CD56+ NK (22)"]
    )
    epochs: int = 120
    options: dict = dataclasses.field(default_factory=dict)
    seed: int = 0


@experiment("unseen_type", UnseenTypeParams)
def unseen_type(params: UnseenTypeParams) -> dict[str, pd.DataFrame]:
    """fast_retrain's fit of five groups of cells after every epoch against the retrains'."""
    from benchmarks.suites._callbacks import GroupTrace

    t0 = time.perf_counter()
    cache = s.pbmc68k_cache(params.cache, params.original_epochs)
    su, adata, model = s.setting(str(cache), params.threads, params.original_epochs)
    sets = s.forget_sets(su, adata, cd34=True)
    options = {"max_epochs": params.epochs, "match_fit": False, **params.options}
    tables, traces = {}, []
    for name in params.sets:
        forget = sets[name]
        score = group_scorer(su, adata, model, forget)
        folder = s.reference_folder(cache, name)
        retrains = su.attack.train_references(model, forget, range(5), folder=folder)
        refs = pd.DataFrame([score(r.module) for r in retrains])
        trace = GroupTrace(score)
        model.unlearn(
            forget,
            method="fast_retrain",
            seed=params.seed,
            enable_progress_bar=False,
            callbacks=[trace],
            **options,
        )
        frame = pd.DataFrame(trace.rows)
        traces.append(frame.assign(forget_set=name))
        head = f"{name}: {params.original_epochs}-epoch original, fast_retrain {options}"
        print(f"{head}, seed {params.seed} ({time.perf_counter() - t0:.0f} s)", flush=True)
        tables[head] = trajectory_summary(frame, refs, score(model.module))
    tables["every epoch"] = pd.concat(traces)
    return tables


@dataclasses.dataclass
class AveragingParams(Common):
    """Parameters of the ``averaging`` experiment.

    Attributes
    ----------
    cells, genes
        The simulated data's size (the original cached as in the verdict suite).
    forget
        ``"random"`` (50 random members) or ``"nk"`` (the CD56+ NK members).
    epochs
        ``fast_retrain`` epochs.
    checks
        Scores an epoch.
    taus
        Time constants of the averages, in optimizer steps.
    """

    cells: int = 100_000
    genes: int = 1000
    forget: str = "random"
    epochs: int = 10
    checks: int = 4
    taus: list[float] = dataclasses.field(default_factory=lambda: [30, 60, 100, 300])


@experiment("averaging", AveragingParams)
def averaging(params: AveragingParams) -> dict[str, pd.DataFrame]:
    """When each moving average of fast_retrain's weights first reaches the original's fit."""
    from benchmarks.suites._callbacks import AverageTrace

    cache = s.simulated_cache(params.cache, params.cells, params.genes)
    su, adata, model = s.simulated_setting(params.cells, params.genes, cache)
    if params.forget == "nk":
        forget = su.data.forget_by_label(adata, "CD56+ NK")
    elif params.forget == "random":
        forget = su.data.forget_random(adata, 50, seed=0)
    else:
        raise SystemExit(f"forget is 'random' or 'nk', not {params.forget!r}")
    trace = AverageTrace(params.taus, params.checks)
    model.unlearn(
        forget, method="fast_retrain", seed=0, max_epochs=params.epochs, callbacks=[trace]
    )
    table = pd.DataFrame(trace.rows)
    print(
        f"\n{params.cells} cells, {params.forget} set: {trace.per_epoch} steps an epoch, target "
        f"{trace.target:.2f} (the original's ELBO on the {trace.stopper.cells.size} cells)"
    )
    first = []
    for column in table.columns[2:]:
        reached = table.loc[table[column] >= trace.target, "epoch"]
        first.append(
            {
                "scored": column,
                "first epoch at the target": reached.iloc[0] if len(reached) else "not reached",
            }
        )
    return {"first epoch at the target": pd.DataFrame(first), "trace": table}
