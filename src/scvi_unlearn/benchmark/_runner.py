"""``scvi_unlearn.benchmark.run``: every method x seed, audited against the retrain target."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from scvi_unlearn.benchmark._result import BenchmarkResult

#: ``methods="all"``: every built-in approximate method (``retrain`` is always run as target).
ALL_METHODS = ("finetune", "gradient_ascent", "ssd", "scrub", "contrastive", "fisher")
#: attacks the benchmark can audit with (``drift`` is comparison-only and needs a baseline).
BENCHMARK_ATTACKS = ("calibrated", "shadow", "mlp", "threshold")


def _as_names(forget) -> np.ndarray:
    if isinstance(forget, AnnData):
        return np.asarray(forget.obs_names, dtype=str)
    return np.asarray(list(forget), dtype=str)


def train_original(
    adata: AnnData,
    *,
    label_key: str = "cell_type",
    layer: str = "counts",
    model_kwargs: dict[str, Any] | None = None,
    train_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
):
    """Train :class:`scvi_unlearn.SCVI` on the training members of ``adata`` (seeded).

    The members are the cells with ``obs["membership"] == "train"``; the held-out cells are
    never given to the model.  Defaults: ``n_latent=10``, 200 epochs, no progress bar.
    """
    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed

    members = adata[(adata.obs[su.data.SPLIT_KEY] == su.data.TRAIN).to_numpy()].copy()
    su.SCVI.setup_anndata(members, layer=layer, labels_key=label_key)
    kwargs = {"n_latent": 10, **(model_kwargs or {})}
    tkw = {"max_epochs": 200, "enable_progress_bar": False, **(train_kwargs or {})}
    with isolated_seed(seed):
        model = su.SCVI(members, **kwargs)
        model.train(**tkw)
    return model


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="benchmark", unit="run")


def _unlearn_timed(model, forget, method, seed, kwargs, expect_degradation=False):
    import inspect
    import warnings

    import scvi_unlearn as su
    from scvi_unlearn.unlearn import UnlearningWarning

    params = inspect.signature(su.unlearn.get_method(method)).parameters
    if "enable_progress_bar" in params and "enable_progress_bar" not in kwargs:
        kwargs = {**kwargs, "enable_progress_bar": False}  # one bar over runs is enough
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        if expect_degradation:  # a shortened retrain is expected to lose utility
            warnings.simplefilter("ignore", UnlearningWarning)
        new = model.unlearn(forget, method=method, seed=seed, **kwargs)
    return new, time.perf_counter() - t0


def run(
    adata: AnnData,
    forget,
    methods: str | Sequence[str] = "all",
    seeds: int | Sequence[int] = 3,
    retrain_seeds: int | Sequence[int] = 3,
    *,
    model=None,
    label_key: str = "cell_type",
    model_kwargs: dict[str, Any] | None = None,
    train_kwargs: dict[str, Any] | None = None,
    method_kwargs: dict[str, dict[str, Any]] | None = None,
    budgets: Sequence[float] = (0.25, 0.5),
    attacks: str | Sequence[str] = ("calibrated", "shadow"),
    n_draws: int = 8,
    n_bootstrap: int = 1000,
    elbo_tolerance: float = 0.02,
    n_jobs: int = 1,
    scratch_dir: str | None = None,
    progress: bool = True,
    umap: bool = True,
    seed: int = 0,
) -> BenchmarkResult:
    """Run unlearning methods x seeds on one forget set and audit all with one protocol.

    Steps: train (or take) the original model on the training members; train
    ``retrain_seeds`` exact retrains without the forget cells and turn their audits into the
    retrain target (:func:`scvi_unlearn.attack.retrain_target`); run every method for every
    seed (``model.unlearn(forget, method=m, seed=s)``) and the cost-matched exact baselines
    (``retrain`` with ``budgets`` x the original's epochs, private by construction); audit
    every model against the target with the *same* members, matched non-members and attack
    protocol; measure utility on the held-out cells (:func:`scvi_unlearn.metrics.utility_report`
    with the first retrain as neighbourhood reference).

    Parameters
    ----------
    adata
        Full dataset with ``obs["membership"]`` (:func:`scvi_unlearn.data.membership_split`),
        integer counts in ``layers["counts"]`` and cell types in ``obs[label_key]``.
    forget
        The cells to forget: ``obs_names`` or an AnnData subset; training members only.
    methods
        ``"all"`` (:data:`ALL_METHODS`) or a list of registered method names.
    seeds
        Number of seeds (``0..n-1``) or the seeds of every method.
    retrain_seeds
        Number (>= 3) or list of seeds of the retrain references.
    model
        A trained :class:`scvi_unlearn.SCVI` (trained on the members); default: train one with
        :func:`train_original` (``model_kwargs``, ``train_kwargs``, ``seed``).
    label_key
        Cell-type column (matched non-members, utility metrics).
    method_kwargs
        Per-method hyper-parameters, ``{"ssd": {"alpha": 5.0}}``.
    budgets
        Fractions of the original's epochs for the cost-matched retrain baselines (empty to
        skip).
    attacks
        Attacks of the audit (each with its own retrain target; see
        :meth:`scvi_unlearn.SCVI.membership_attack`).  Default: ``"calibrated"`` (per-cell
        scores calibrated against the retrains, leave-one-out for the retrains themselves; the
        attack with power on a small forget set) and ``"shadow"`` (an MLP fitted under each
        model on its other training cells vs other held-out cells, applied once to the
        evaluated cells).  ``"mlp"`` (cross-fitted on the evaluated cells) and ``"threshold"``
        are also accepted.
    n_draws, n_bootstrap
        Posterior draws per cell and bootstrap replicates of the audit.
    elbo_tolerance
        Relative held-out ELBO tolerance of the pass rule.
    n_jobs
        Parallel workers for the unlearning runs (joblib; ``1`` runs in this process).  Wall
        times measured in parallel include contention; compare times from ``n_jobs=1`` runs.
    scratch_dir
        Where parallel workers exchange models (default: the system's temporary folder); on a
        cluster, a folder on a filesystem shared by the workers.
    progress
        Show a progress bar over runs.
    umap
        Compute the latent UMAP figure (original / default method / retrain).
    seed
        Seed of the original's training and of the audit protocol.

    Returns
    -------
    :class:`BenchmarkResult` with ``table`` (one row per model), ``summary`` (mean and 95% CI per
    method), ``to_csv``, ``to_markdown``, ``save_figures``.
    """
    import scvi_unlearn as su

    if su.data.SPLIT_KEY not in adata.obs:
        raise ValueError(
            "adata needs obs['membership']: run scvi_unlearn.data.membership_split(adata) "
            "before training, so that held-out cells are never trained on."
        )
    forget_names = _as_names(forget)
    if forget_names.size == 0:
        raise ValueError("The forget set is empty.")
    if methods == "all":
        methods = list(ALL_METHODS)
    elif isinstance(methods, str):
        methods = [methods]
    methods = list(methods)
    for m in methods:
        su.unlearn.get_method(m)  # unknown names list the available ones
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    retrain_seeds = (
        list(range(retrain_seeds)) if isinstance(retrain_seeds, int) else list(retrain_seeds)
    )
    if len(retrain_seeds) < 3:
        raise ValueError("retrain_seeds: at least 3 retrains are needed for the target interval.")
    if any(not 0.0 < b < 1.0 for b in budgets):
        raise ValueError(f"budgets must be fractions in (0, 1), got {list(budgets)}.")
    method_kwargs = dict(method_kwargs or {})
    attacks = [attacks] if isinstance(attacks, str) else list(attacks)
    for a in attacks:
        if a not in BENCHMARK_ATTACKS:
            raise ValueError(
                f"Unknown attack {a!r} for the benchmark; use one of {BENCHMARK_ATTACKS}."
            )
    if not attacks:
        raise ValueError("Give at least one attack.")

    original_time = None  # unknown for a model trained elsewhere
    if model is None:
        t0 = time.perf_counter()
        model = train_original(
            adata,
            label_key=label_key,
            model_kwargs=model_kwargs,
            train_kwargs=train_kwargs,
            seed=seed,
        )
        original_time = time.perf_counter() - t0
    epochs = int(model.train_recipe_["max_epochs"])

    jobs: list[tuple[str, int, dict[str, Any], float | None]] = [
        ("retrain", s, {}, None) for s in retrain_seeds
    ]
    for b in budgets:
        jobs += [
            (f"retrain_{int(round(b * 100))}pct", s, {"max_epochs": max(1, int(b * epochs))}, b)
            for s in seeds
        ]
    for m in methods:
        jobs += [(m, s, method_kwargs.get(m, {}), None) for s in seeds]

    bar = _progress(len(jobs) + len(jobs) + 1, progress)
    runs = _execute(model, forget_names, jobs, n_jobs, bar, scratch_dir)

    retrains = [r["model"] for r in runs if r["label"] == "retrain"]
    targets = {
        a: su.attack.retrain_target(
            retrains,
            forget_names,
            adata=adata,
            attack=a,
            seed=seed,
            n_draws=n_draws,
            n_bootstrap=n_bootstrap,
            elbo_tolerance=elbo_tolerance,
            label_key=label_key,
        )
        for a in attacks
    }
    bar.update(1)
    first = targets[attacks[0]]
    retrain_time = float(np.mean([r["wall_time"] for r in runs if r["label"] == "retrain"]))
    heldout = adata[first.heldout].copy()
    markers = su.metrics.select_marker_genes(heldout, labels_key=label_key, layer="counts")
    reference = retrains[0]

    rows = []
    reports: dict[tuple[str, str, int], Any] = {}

    def _rows(label, run_seed, mdl, wall, budget=None):
        util = su.metrics.utility_report(
            mdl,
            heldout,
            labels_key=label_key,
            reference=reference if mdl is not reference else None,
            markers=markers,
            n_draws=n_draws,
            seed=seed,
        )
        for a, target in targets.items():
            if label == "retrain":
                i = next(j for j, m in enumerate(retrains) if m is mdl)
                report = target.reports[i]
                report.heldout_elbo = float(target.heldout_elbos[i])
            else:
                report = target.evaluate(mdl, adata)
            check = target.check(report)
            row = {
                "attack": a,
                "method": label,
                "seed": run_seed,
                **_report_columns(report),
                "passed": bool(check.passed),
                "advantage_ok": bool(check.advantage_ok),
                "utility_ok": check.utility_ok,
                "verdict": check.reason,
                "budget": budget,
                "time_vs_retrain": (wall / retrain_time) if wall is not None else np.nan,
                "wall_time_s": wall if wall is not None else np.nan,
            }
            row.update({f"utility_{k}": float(v) for k, v in util.items()})
            rows.append(row)
            reports[(a, label, run_seed)] = report

    _rows("original", seed, model, original_time)
    for r in runs:
        _rows(r["label"], r["seed"], r["model"], r["wall_time"], r["budget"])
        bar.update(1)
    bar.close()

    latents = None
    if umap and methods:
        first = next(r for r in runs if r["label"] == methods[0])
        latents = {
            "original": model,
            f"{methods[0]} (seed {first['seed']})": first["model"],
            f"retrain (seed {retrain_seeds[0]})": reference,
        }
    return BenchmarkResult(
        table=pd.DataFrame(rows),
        targets=targets,
        reports=reports,
        adata=adata,
        forget=forget_names,
        label_key=label_key,
        latent_models=latents,
        settings={
            "methods": methods,
            "seeds": seeds,
            "retrain_seeds": retrain_seeds,
            "budgets": list(budgets),
            "attacks": list(attacks),
            "n_draws": n_draws,
            "n_bootstrap": n_bootstrap,
            "elbo_tolerance": elbo_tolerance,
            "seed": seed,
            "original_epochs": epochs,
            "n_forget": int(forget_names.size),
        },
    )


def _report_columns(report) -> dict[str, Any]:
    out: dict[str, Any] = {
        "auc": report.auc,
        "auc_low": report.ci["auc"][0],
        "auc_high": report.ci["auc"][1],
        "advantage": report.advantage,
        "advantage_low": report.ci["advantage"][0],
        "advantage_high": report.ci["advantage"][1],
        "yeom_advantage": report.yeom_advantage,
    }
    for fpr, tpr in report.tpr_at_fpr.items():
        out[f"tpr_at_{fpr:g}_fpr"] = tpr
    out["below_chance_leak"] = bool(report.leak_below_chance)
    out["heldout_elbo"] = report.heldout_elbo
    return out


def _execute(model, forget, jobs, n_jobs, bar, scratch_dir=None) -> list[dict[str, Any]]:
    def _one(label, s, kwargs, budget, mdl):
        method = "retrain" if label.startswith("retrain") else label
        new, wall = _unlearn_timed(mdl, forget, method, s, kwargs, budget is not None)
        return {"label": label, "seed": s, "model": new, "wall_time": wall, "budget": budget}

    if n_jobs == 1:
        out = []
        for job in jobs:
            out.append(_one(*job, model))
            bar.update(1)
        return out
    import tempfile

    from joblib import Parallel, delayed

    with tempfile.TemporaryDirectory(dir=scratch_dir) as tmp:
        model.save(tmp + "/original", save_anndata=False)

        def _worker(label, s, kwargs, budget):
            import scvi_unlearn as su

            mdl = su.SCVI.load(tmp + "/original", adata=model.adata)
            res = _one(label, s, kwargs, budget, mdl)
            res["model"].save(tmp + f"/{label}_{s}", save_anndata=True)
            res["model"] = tmp + f"/{label}_{s}"
            return res

        results = Parallel(n_jobs=n_jobs)(delayed(_worker)(*job) for job in jobs)
        import scvi_unlearn as su

        for res in results:
            res["model"] = su.SCVI.load(res["model"])
            bar.update(1)
    return results
