"""``scvi_unlearn.benchmark.run``: every method x seed, audited against the retrain target."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from scvi_unlearn.benchmark._arguments import original_train_kwargs, resolve_arguments
from scvi_unlearn.benchmark._result import BenchmarkResult
from scvi_unlearn.unlearn.core._parallel import UnlearningJob, run_jobs


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
    from scvi_unlearn._quiet import internal_fit
    from scvi_unlearn._seeding import isolated_seed

    members = adata[(adata.obs[su.data.SPLIT_KEY] == su.data.TRAIN).to_numpy()].copy()
    su.SCVI.setup_anndata(members, layer=layer, labels_key=label_key)
    kwargs = {"n_latent": 10, **(model_kwargs or {})}
    tkw = {"max_epochs": 200, "enable_progress_bar": False, **(train_kwargs or {})}
    with isolated_seed(seed), internal_fit():
        model = su.SCVI(members, **kwargs)
        model.train(**tkw)
    return model


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="benchmark", unit="run")


def run(
    adata: AnnData,
    forget,
    methods: str | Sequence[str] = "all",
    seeds: int | Sequence[int] = 3,
    retrain_seeds: int | Sequence[int] = 5,
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
    margin: float | None = None,
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
    protocol; test every model's per-cell retrain equivalence against the retrains
    (:meth:`scvi_unlearn.attack.RetrainTarget.equivalence`; each retrain against the others);
    measure utility on the held-out cells (:func:`scvi_unlearn.metrics.utility_report` with the
    first retrain as neighbourhood reference).

    Parameters
    ----------
    adata
        Full dataset with ``obs["membership"]`` (:func:`scvi_unlearn.data.membership_split`),
        integer counts in ``layers["counts"]`` and cell types in ``obs[label_key]``.
    forget
        The cells to forget: ``obs_names`` or an AnnData subset; training members only.
    methods
        ``"all"`` (:data:`ALL_METHODS`) or a list of registered method names.  ``rewind``
        needs an original with a training checkpoint: the original trained here keeps one
        (:func:`original_train_kwargs`); a given ``model`` without one raises
        :class:`ValueError` when ``rewind`` is named, and is run without ``rewind`` (a
        warning) under ``"all"``.
    seeds
        Number of seeds (``0..n-1``) or the seeds of every method.
    retrain_seeds
        Number (>= 3) or list of seeds of the retrain references (default 5, the number the
        equivalence test was calibrated with; each retrain's own equivalence row tests it
        against the others, which needs >= 4).
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
    margin
        Equivalence margin on the forget cells' signed mean z (default
        :data:`scvi_unlearn.attack.DEFAULT_MARGIN`).  A model passes only if it passes the
        membership audit of the row's attack **and** the per-cell verdict
        (:meth:`scvi_unlearn.attack.RetrainTarget.equivalence`): for an approximate method the
        equivalence test and the held-out utility checks, for an exact one (``retrain``,
        ``fast_retrain``, ``dp_sgd``) the utility checks alone (``EquivalenceReport.exact``).
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

    margin = su.attack.DEFAULT_MARGIN if margin is None else float(margin)
    if su.data.SPLIT_KEY not in adata.obs:
        raise ValueError(
            "adata needs obs['membership']: run scvi_unlearn.data.membership_split(adata) "
            "before training, so that held-out cells are never trained on."
        )
    forget_names = _as_names(forget)
    if forget_names.size == 0:
        raise ValueError("The forget set is empty.")
    if model is None:
        train_kwargs = original_train_kwargs(methods, train_kwargs)
    methods, seeds, retrain_seeds, attacks = resolve_arguments(
        methods, seeds, retrain_seeds, budgets, attacks, model
    )
    method_kwargs = dict(method_kwargs or {})

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

    jobs = [UnlearningJob("retrain", s) for s in retrain_seeds]
    budget_of: dict[str, float] = {}
    for b in budgets:
        label = f"retrain_{int(round(b * 100))}pct"
        budget_of[label] = b
        jobs += [
            UnlearningJob(
                "retrain",
                s,
                {"max_epochs": max(1, int(b * epochs))},
                label=label,
                quiet_degradation=True,  # a shortened retrain is expected to lose utility
            )
            for s in seeds
        ]
    for m in methods:
        jobs += [UnlearningJob(m, s, method_kwargs.get(m, {})) for s in seeds]

    bar = _progress(len(jobs) + len(jobs) + 1, progress)
    results = run_jobs(
        model,
        forget_names,
        jobs,
        n_jobs=n_jobs,
        scratch_dir=scratch_dir,
        on_done=lambda *_: bar.update(1),
    )
    runs = [
        {
            "label": job.name,
            "seed": job.seed,
            "model": new,
            "wall_time": wall,
            "budget": budget_of.get(job.name),
        }
        for job, (new, wall) in zip(jobs, results)
    ]

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
    equivalences: dict[tuple[str, int], Any] = {}

    def _equivalence(mdl):
        if any(m is mdl for m in retrains) and len(retrains) < 4:
            return None  # a retrain against the others needs >= 3 other references
        return first.equivalence(mdl, adata, margin=margin)  # a retrain: against the others

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
        eq = _equivalence(mdl)
        eq_row = eq.to_frame().iloc[0].to_dict() if eq is not None else {}
        if eq is not None:
            equivalences[(label, run_seed)] = eq
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
                "passed": bool(check.passed) and bool(eq is not None and eq.passed),
                "membership_passed": bool(check.passed),
                "advantage_ok": bool(check.advantage_ok),
                "utility_ok": check.utility_ok,
                "verdict": check.reason,
                "budget": budget,
                "time_vs_retrain": (wall / retrain_time) if wall is not None else np.nan,
                "wall_time_s": wall if wall is not None else np.nan,
                **eq_row,
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
        equivalences=equivalences,
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
            "margin": margin,
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
