"""Per-cell retrain-equivalence verdict matrix: methods x forget sets x seeds against retrains.

Experiment ``grid``: on pbmc68k (30% held out, stratified, seed 0; the original scVI
``n_latent=10`` trained ``original_epochs`` epochs, seed 0, :func:`_settings.setting`) or on
simulated data (``cells`` x ``genes``, the original trained with scvi-tools' recipe and epoch
heuristic, :func:`_settings.simulated_setting`), every run of the config (a method with its
arguments) and every baseline (a method with its defaults) is run on each forget set with seeds
``0 .. seeds - 1`` (by default with ``on_degradation="warn"``: a degraded run is measured, not
stopped) and judged by :func:`scvi_unlearn.attack.equivalence_test` against ``references``
default-recipe retrains (seeds ``0 .. references - 1``, cached per forget set).  Returned: one
row per (forget set, method) (:func:`summary`) and one per run (the columns of
:func:`_settings.verdict_columns`).

A run is a table of the config's ``runs``:

* ``label``: its row name, a :meth:`str.format` template of its arguments (``"rewind
  k{rewind_epoch} e{max_epochs} lr{lr:g}"``); ``method``; ``kwargs``: the method's arguments;
* ``none``: arguments set to ``None`` (TOML has no null; ``none = ["average_epochs"]``);
* ``grid``: a product expansion, ``{argument: [values]}``; a value that is a table is merged
  into the arguments and its ``label`` entry used in the row name (the guards of ``distill``);
* ``variant``: a name of :data:`VARIANTS` (arguments that need code: ``data_init``,
  ``heldout_nonmembers``);
* ``rewind_epoch``: run on the original trained again with a checkpoint after that epoch
  (``rewind`` needs one; cached as ``original_rewind{k}``; its weights are compared with the
  cached original's, a checkpoint must not change training);
* ``seeds``: the run's own seeds (default ``0 .. seeds - 1``).

Cost = wall time over that of ``method="retrain"`` (the original's recipe): ``retrain_time``
when given; on simulated data the original's training time when recorded in the cache; else a
retrain timed in this process, on the first forget set at the start and at the end (the mean:
the machine is shared), or on each forget set before its runs (``time_each_set``).

Experiment ``conditional``: a :class:`scvi_unlearn.ConditionalSCVI` original on pbmc68k, where
the forget cells' Fisher information lives, and the per-cell verdict of its runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment, markdown
from benchmarks.suites import _settings as s

#: the keys a run of the config may have
RUN_KEYS = {"label", "method", "kwargs", "none", "grid", "variant", "rewind_epoch", "seeds"}
#: grid axes that are keys of the run rather than arguments of the method
RUN_AXES = ("variant", "rewind_epoch")


def _data_init(su, adata, kwargs: dict) -> dict:
    """``fast_retrain`` from a data-dependent start (:class:`_callbacks.DataInit`)."""
    from benchmarks.suites._callbacks import DataInit

    return {**kwargs, "callbacks": [DataInit()]}


def _heldout_nonmembers(su, adata, kwargs: dict) -> dict:
    """The held-out cells as the critic methods' non-members (``nonmembers=``; they include the
    held-out cells of the verdict's same-type check, which is then not independent)."""
    heldout = adata[(adata.obs[su.data.SPLIT_KEY] == su.data.HOLDOUT).to_numpy()].copy()
    return {**kwargs, "nonmembers": heldout}


#: ``variant`` of a run: a function ``(su, adata, kwargs) -> kwargs``
VARIANTS = {"data_init": _data_init, "heldout_nonmembers": _heldout_nonmembers}


def expand_runs(specs: list[dict], select: list[str] = ()) -> list[dict]:
    """The config's runs, each ``grid`` expanded (in the order of its axes), labels formatted,
    ``none`` arguments set; only those labelled as in ``select`` when it is not empty."""
    runs = []
    for spec in specs:
        unknown = sorted(set(spec) - RUN_KEYS)
        if unknown or "method" not in spec:
            raise SystemExit(f"run {spec}: needs a method; keys are {sorted(RUN_KEYS)}")
        grid = spec.get("grid", {})
        for values in itertools.product(*grid.values()):
            run = {k: v for k, v in spec.items() if k not in ("grid", "none")}
            kwargs, names = dict(spec.get("kwargs", {})), {}
            for axis, value in zip(grid, values):
                if isinstance(value, dict):
                    names[axis] = value["label"]
                    kwargs |= {k: v for k, v in value.items() if k != "label"}
                elif axis in RUN_AXES:
                    run[axis] = value
                else:
                    kwargs[axis] = value
            kwargs |= dict.fromkeys(spec.get("none", []))
            template = spec.get("label", spec["method"])
            run["label"] = template.format(**kwargs, **{k: run.get(k) for k in RUN_AXES}, **names)
            run["kwargs"] = kwargs
            runs.append(run)
    if select:
        missing = sorted(set(select) - {r["label"] for r in runs})
        if missing:
            raise SystemExit(f"select: no run labelled {missing}")
        runs = [r for r in runs if r["label"] in select]
    return runs


@dataclasses.dataclass
class GridParams(Common):
    """Parameters of the ``grid`` experiment.

    Attributes
    ----------
    data
        ``"pbmc68k"`` or ``"simulated"``.
    original_epochs
        pbmc68k: the original's training epochs (its retrains replay that recipe; an original
        other than the 200-epoch one is cached in ``cache/pbmc68k_{E}_epochs``).
    cells, genes
        Simulated: the data's size (cached in ``cache/simulated_{cells}x{genes}``).
    cd34
        pbmc68k: add the 9 CD34+ members to the forget sets (first).
    sets
        Forget sets by name (empty: every set of the data: pbmc68k's five of
        :func:`_settings.forget_sets`, simulated ``CD56+ NK (n)`` and ``random (50)``).
    seeds
        Seeds of each run, ``0 .. seeds - 1``.
    references
        Default-recipe retrains each run is judged against.
    runs
        The runs (module docstring).
    select
        Labels of the runs to keep (empty: all).
    baselines
        Methods run with their defaults after the runs (row name: the method).
    retrain_time
        Seconds of a default-recipe retrain (``None``: the original's recorded training time on
        simulated data, else timed here).
    time_each_set
        Time a retrain on each forget set before its runs (instead of on the first set at the
        start and at the end).
    on_degradation
        Passed to every run (``"warn"``: a degraded run is measured, not stopped; ``"auto"``:
        the method's default, which stops it with an error).
    spread
        Also the calibration table: the spread of the forget cells' ELBO across seeds against
        the retrains' (:func:`spread_table`).
    """

    data: str = "pbmc68k"
    original_epochs: int = 200
    cells: int = 5000
    genes: int = 1000
    cd34: bool = False
    sets: list[str] = dataclasses.field(default_factory=list)
    seeds: int = 3
    references: int = 5
    runs: list[dict] = dataclasses.field(default_factory=list)
    select: list[str] = dataclasses.field(default_factory=list)
    baselines: list[str] = dataclasses.field(default_factory=list)
    retrain_time: float | None = None
    time_each_set: bool = False
    on_degradation: str = "warn"
    spread: bool = False


def load_setting(params: GridParams):
    """``(su, adata, original, forget sets by name, cache folder)`` of ``params.data``."""
    if params.data == "pbmc68k":
        folder = s.pbmc68k_cache(params.cache, params.original_epochs)
        su, adata, model = s.setting(str(folder), params.threads, params.original_epochs)
        recorded = model.train_recipe_["max_epochs"]
        if recorded != params.original_epochs:
            raise SystemExit(
                f"{folder}/original was trained {recorded} epochs, not original_epochs "
                f"{params.original_epochs}."
            )
        return su, adata, model, s.forget_sets(su, adata, cd34=params.cd34), folder
    if params.data == "simulated":
        folder = s.simulated_cache(params.cache, params.cells, params.genes)
        su, adata, model = s.simulated_setting(params.cells, params.genes, folder)
        nk = su.data.forget_by_label(adata, "CD56+ NK")
        sets = {
            f"CD56+ NK ({nk.size})": nk,
            "random (50)": su.data.forget_random(adata, 50, seed=0),
        }
        print(
            f"{params.cells} cells x {params.genes} genes, {model.adata.n_obs} members, original "
            f"{model.train_recipe_['max_epochs']} epochs",
            flush=True,
        )
        return su, adata, model, sets, folder
    raise SystemExit(f"data is 'pbmc68k' or 'simulated', not {params.data!r}")


def rewound_original(su, adata, folder: Path, k: int, reference, epochs: int):
    """The original (seed 0, ``epochs`` epochs) trained with a checkpoint after ``k`` epochs:
    loaded from ``folder/original_rewind{k}`` or trained and saved there; prints whether its
    weights equal ``reference``'s."""
    import torch

    from scvi_unlearn.benchmark._runner import train_original

    path = folder / f"original_rewind{k}"
    if path.exists():
        model = su.SCVI.load(str(path))
    else:
        kwargs = {"max_epochs": epochs, "rewind_epoch": k}
        model = train_original(adata, train_kwargs=kwargs, seed=0)
        model.save(str(path), save_anndata=True)
    ours, ref = model.module.state_dict(), reference.module.state_dict()
    diff = max(float((ours[n].double() - ref[n].double()).abs().max()) for n in ref)
    same = ours.keys() == ref.keys() and all(torch.equal(ours[n], ref[n]) for n in ref)
    verdict = "equal" if same else "DIFFER"
    print(
        f"original with rewind_epoch={k}: weights {verdict} to the cached original's (max "
        f"|diff| {diff:.3g}); checkpoint epoch {model.rewind_checkpoint_['epoch']}",
        flush=True,
    )
    return model


class SpreadRecorder:
    """After each test, keeps the candidate's and the references' per-cell ELBO of the forget
    cells (from the test's :class:`~scvi_unlearn.attack.ScoreCache`, so nothing is
    recomputed), in the order of the runs."""

    def __init__(self):
        self.candidates: list[np.ndarray] = []
        self.references: list[np.ndarray] = []

    def __call__(self, rep, model, references, cache) -> None:
        per_cell = rep.per_cell
        names = per_cell.index[per_cell["group"] == "forget"].to_numpy()
        self.candidates.append(cache.scores([model], "forget", names, "elbo")[0])
        self.references.append(cache.scores(list(references), "forget", names, "elbo"))


def spread_table(table: pd.DataFrame, recorder: SpreadRecorder) -> pd.DataFrame:
    """One row per (forget set, method): the calibration of the seed-to-seed spread.

    ``spread ratio (mean)``: the standard deviation across the runs (seeds) of the forget cells'
    mean ELBO over the same across the retrains; ``spread ratio (per cell)``: the mean over the
    forget cells of each cell's standard deviation across the runs over the same for the
    retrains.  Near 1 is calibrated; with 3 runs against 5 retrains a ratio of standard
    deviations has a wide interval (about 0.2-2.6 at 90%), the per-cell one is the steadier.
    """
    table = table.assign(_run=np.arange(len(table)))
    out = []
    for (set_name, name), g in table.groupby(["forget set", "method"], sort=False):
        runs = np.vstack([recorder.candidates[i] for i in g["_run"]])  # seeds x cells
        refs = recorder.references[int(g["_run"].iloc[0])]  # references x cells
        ratio = runs.mean(axis=1).std(ddof=1) / refs.mean(axis=1).std(ddof=1)
        out.append(
            {
                "forget set": set_name,
                "method": name,
                "forget ELBO (runs)": " / ".join(f"{v:.1f}" for v in runs.mean(axis=1)),
                "forget ELBO (retrains)": f"{refs.mean():.1f}",
                "sd of mean (runs)": f"{runs.mean(axis=1).std(ddof=1):.2f}",
                "sd of mean (retrains)": f"{refs.mean(axis=1).std(ddof=1):.2f}",
                "spread ratio (mean)": f"{ratio:.2f}",
                "spread ratio (per cell)": (
                    f"{runs.std(axis=0, ddof=1).mean() / refs.std(axis=0, ddof=1).mean():.2f}"
                ),
            }
        )
    return pd.DataFrame(out)


@experiment("grid", GridParams)
def grid(params: GridParams) -> dict[str, pd.DataFrame]:
    """Per-cell verdict of every run x forget set x seed against default-recipe retrains."""
    t0 = time.perf_counter()
    su, adata, model, sets, folder = load_setting(params)
    names = params.sets or list(sets)
    unknown = sorted(set(names) - set(sets))
    if unknown:
        raise SystemExit(f"unknown forget sets {unknown}; known: {list(sets)}")
    runs = expand_runs(params.runs, params.select)
    runs += [{"label": m, "method": m, "kwargs": {}} for m in params.baselines]
    unknown = sorted({r["variant"] for r in runs if "variant" in r} - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    originals = {
        k: rewound_original(su, adata, folder, k, model, params.original_epochs)
        for k in dict.fromkeys(r["rewind_epoch"] for r in runs if "rewind_epoch" in r)
    }
    full_time = params.retrain_time
    if full_time is None and (folder / s.ORIGINAL_TIME).exists():
        # the original's training time, recorded when it was trained: a retrain replays its
        # recipe on the members less the forget set, and timing one here would cost as much
        full_time = json.loads((folder / s.ORIGINAL_TIME).read_text())["seconds"]
        print(f"retrain time: the original's {full_time:.1f} s", flush=True)
    timed_here = full_time is None
    retrain_job = [su.unlearn.UnlearningJob("retrain", 100)]
    if timed_here and not params.time_each_set:
        [(_, full_time)] = su.unlearn.run_jobs(model, sets[names[0]], retrain_job)
    recorder = SpreadRecorder() if params.spread else None
    rows = []
    for set_name in names:
        forget = sets[set_name]
        refs = su.attack.train_references(
            model, forget, range(params.references), folder=s.reference_folder(folder, set_name)
        )
        if timed_here and params.time_each_set:
            [(_, full_time)] = su.unlearn.run_jobs(model, forget, retrain_job)
            print(f"{set_name}: full retrain {full_time:.1f} s", flush=True)
        score_cache = su.attack.ScoreCache(adata, n_draws=8, seed=0)
        for run in runs:
            kwargs = {**run["kwargs"], "on_degradation": params.on_degradation}
            if "variant" in run:
                kwargs = VARIANTS[run["variant"]](su, adata, kwargs)
            original = originals.get(run.get("rewind_epoch"), model)
            jobs = [
                su.unlearn.UnlearningJob(run["method"], seed, kwargs, quiet_degradation=True)
                for seed in run.get("seeds", range(params.seeds))
            ]
            for job, (new, wall) in zip(jobs, su.unlearn.run_jobs(original, forget, jobs)):
                rep = su.attack.equivalence_test(new, refs, forget, adata=adata, cache=score_cache)
                if recorder is not None:
                    recorder(rep, new, refs, score_cache)
                rows.append(
                    {"forget set": set_name, "method": run["label"], "seed": job.seed}
                    | s.verdict_columns(rep, wall, full_time, new)
                )
                print(
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()},
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    if timed_here and not params.time_each_set:
        [(_, again)] = su.unlearn.run_jobs(model, sets[names[0]], retrain_job)
        print(f"retrain: {full_time:.1f} s at the start, {again:.1f} s at the end", flush=True)
        for row in rows:
            row["time / retrain"] *= full_time / ((full_time + again) / 2)
        full_time = (full_time + again) / 2
    table = pd.DataFrame(rows)
    print(f"\nfull retrain: {full_time:.1f} s; total {time.perf_counter() - t0:.0f} s")
    print(f"mean z range: {np.nanmin(table['mean z']):+.2f} … {np.nanmax(table['mean z']):+.2f}")
    tables = {"summary": summary(table), "runs": table}
    if recorder is not None:
        tables["calibration: spread of the forget cells' ELBO across seeds vs the retrains'"] = (
            spread_table(table, recorder)
        )
    return tables


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (forget set, method): mean cost, per-seed mean z and utility, counts."""
    out = []
    for (set_name, name), g in table.groupby(["forget set", "method"], sort=False):
        counts = g["decision"].value_counts()
        out.append(
            {
                "forget set": set_name,
                "method": name,
                "time / retrain": f"{g['time / retrain'].mean():.3f}",
                "mean z (seeds)": " / ".join(f"{z:+.2f}" for z in g["mean z"]),
                "decision": ", ".join(f"{d} {n}/{len(g)}" for d, n in counts.items()),
                "same-type ELBO ok": f"{int(g['same-type ok'].sum())}/{len(g)}",
                "other-type held-out ELBO vs retrains": " / ".join(
                    f"{v:+.2f}%" for v in g["other types vs retrains (%)"]
                ),
                "retain drop": " / ".join(f"{v:+.2f}%" for v in g["retain check drop (%)"]),
                "passed": f"{int(g['passed'].sum())}/{len(g)}",
            }
        )
    return pd.DataFrame(out)


@dataclasses.dataclass
class ConditionalParams(Common):
    """Parameters of the ``conditional`` experiment.

    Attributes
    ----------
    references
        Default-recipe retrains of the ConditionalSCVI (seeds ``0 .. references - 1``).
    original_epochs
        Training epochs of the ConditionalSCVI original (seed 0; cached in
        ``cache/conditional``).
    forget_set
        The forget set (a name of :func:`_settings.forget_sets`) ...
    label
        ... and its cell type, whose label offsets are inspected.
    seeds
        Seeds of each candidate, ``0 .. seeds - 1`` (unless the run gives its ``seeds``).
    runs
        The candidates: runs as in ``grid`` (``label``, ``method``, ``kwargs``, ``none``,
        ``seeds``), each judged per seed.
    """

    seeds: int = 3
    references: int = 5
    original_epochs: int = 200
    forget_set: str = "CD56+ NK (22)"
    label: str = "CD56+ NK"
    runs: list[dict] = dataclasses.field(default_factory=list)


def conditional_original(su, adata, folder: Path, max_epochs: int):
    """The ConditionalSCVI original (``labels_key="cell_type"``, ``n_latent=10``, seed 0):
    loaded from ``folder/original`` or trained and saved there."""
    from scvi_unlearn._seeding import isolated_seed

    path = folder / "original"
    if path.exists():
        return su.ConditionalSCVI.load(str(path))
    members = adata[(adata.obs[su.data.SPLIT_KEY] == su.data.TRAIN).to_numpy()].copy()
    su.ConditionalSCVI.setup_anndata(members, layer="counts", labels_key="cell_type")
    with isolated_seed(0):
        model = su.ConditionalSCVI(members, n_latent=10)
        model.train(max_epochs=max_epochs, enable_progress_bar=False)
    model.save(str(path), save_anndata=True)
    return model


@experiment("conditional", ConditionalParams)
def conditional(params: ConditionalParams) -> dict[str, pd.DataFrame]:
    """Conditional scVI on pbmc68k: the offsets' Fisher and its candidates' per-cell verdict."""
    import scvi

    import scvi_unlearn as su
    from scvi_unlearn.model._conditional_module import LABEL_OFFSET_PARAMETER

    scvi.settings.seed = 0
    t0 = time.perf_counter()
    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    folder = Path(params.cache) / "conditional"
    model = conditional_original(su, adata, folder, params.original_epochs)
    forget = s.forget_sets(su, adata)[params.forget_set]
    code = int(np.flatnonzero(model.label_categories == params.label)[0])

    # 1. Fisher: where the forget cells' information lives
    ov = model.fisher_overlap(forget, control=None)
    info = ov.label_offsets
    print(f"\nFisher of the original (forget = {params.forget_set}, retain = the other members):")
    print({k: v for k, v in info.items() if k not in ("parameter", "codes")})
    cats = ov.by_category.copy()
    f_mass = {
        c: float(sum(ov.forget_fisher.values[t].sum() for t in g.index))
        for c, g in ov.by_tensor.groupby("category")
    }
    total = sum(f_mass.values())
    cats["forget Fisher share"] = [f_mass[c] / total for c in cats.index]
    cats = cats.reset_index()
    cats["cosine"] = cats["cosine"].map(lambda v: f"{v:.3f}")
    cats["forget Fisher share"] = cats["forget Fisher share"].map(lambda v: f"{v:.4f}")
    print(markdown(cats))
    offsets = model.module.label_offsets[code].detach()
    print(
        f"original {params.label} offsets: norm {float(offsets.norm()):.3f}, "
        f"max |o| {float(offsets.abs().max()):.3f}"
    )
    f_label = ov.forget_fisher.values[LABEL_OFFSET_PARAMETER][:, code]
    print(f"forget Fisher on the {params.label} offsets: mass {float(f_label.sum()):.4g}")

    # 2. references and the per-cell verdict
    refs = su.attack.train_references(
        model,
        forget,
        range(params.references),
        folder=s.reference_folder(folder, params.forget_set),
    )
    ref_offsets = [float(r.module.label_offsets[code].abs().max()) for r in refs]
    print(f"max |{params.label} offset| of the {len(refs)} retrains: {ref_offsets}")
    score_cache = su.attack.ScoreCache(adata, n_draws=8, seed=0)
    names = np.asarray(forget, dtype=str)
    ref_forget = float(score_cache.scores(refs, "forget", names, "elbo").mean())
    [(_, full_time)] = su.unlearn.run_jobs(
        model, forget, [su.unlearn.UnlearningJob("retrain", 100)]
    )
    print(f"full retrain: {full_time:.1f} s; retrains' mean forget ELBO {ref_forget:.2f}")

    def verdict_row(name, seed, new, wall) -> dict:
        rep = su.attack.equivalence_test(new, refs, forget, adata=adata, cache=score_cache)
        forget_elbo = score_cache.scores([new], "forget", names, "elbo")[0].mean()
        return {
            "candidate": name,
            "seed": seed,
            "forget ELBO": forget_elbo,
            "forget ELBO vs retrains": forget_elbo - ref_forget,
            "same-type held-out ELBO": rep.utility["same_type_elbo"],
        } | s.verdict_columns(rep, wall, full_time)

    keep = []  # the score cache is keyed by model identity: keep every candidate alive
    rows = [verdict_row("original (no unlearning)", "-", model, 0.0)]
    for run in expand_runs(params.runs):
        jobs = [
            su.unlearn.UnlearningJob(run["method"], seed, run["kwargs"])
            for seed in run.get("seeds", range(params.seeds))
        ]
        for job, (new, wall) in zip(jobs, su.unlearn.run_jobs(model, forget, jobs)):
            keep.append(new)
            rows.append(verdict_row(run["label"], job.seed, new, wall))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    out = []
    for name, g in table.groupby("candidate", sort=False):
        counts = g["decision"].value_counts()
        out.append(
            {
                "candidate": name,
                "time / retrain": f"{g['time / retrain'].mean():.3f}",
                "mean z": " / ".join(f"{z:+.2f}" for z in g["mean z"]),
                "decision": ", ".join(f"{d} {n}/{len(g)}" for d, n in counts.items()),
                "membership contrast": " / ".join(f"{z:+.2f}" for z in g["membership contrast"]),
                "forget ELBO - retrains'": " / ".join(
                    f"{v:+.1f}" for v in g["forget ELBO vs retrains"]
                ),
                "same-type ELBO ok": f"{int(g['same-type ok'].sum())}/{len(g)}",
                "other-type held-out ELBO vs retrains": " / ".join(
                    f"{v:+.2f}%" for v in g["other types vs retrains (%)"]
                ),
                "passed": f"{int(g['passed'].sum())}/{len(g)}",
            }
        )
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")
    return {"Fisher by category": cats, "verdict": pd.DataFrame(out), "runs": table}
