"""Audit speed and the attack checks: the audit's and the Fisher estimator's cost, attack nulls.

Experiments:

* ``scaling``: the audit (features, attacks, equivalence test) and the Fisher analysis on
  30k simulated training cells, wall time of each step;
* ``fisher_speed``: the per-sample diagonal Fisher estimator against a per-cell backward loop;
* ``pbmc_audit``: the membership audit of the original and of an independent retrain on
  pbmc68k ("CD56+ NK"), every attack, with the retrain targets and the ROC figure;
* ``null_checks``: the cross-fitted MLP's fold designs and the shadow attack under null data;
* ``fold_antilearning``: out-of-fold anti-learning on a matched design, stratified vs
  matched-pair folds.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._harness import ROOT, Common, experiment
from benchmarks.suites._settings import simulated_members

# ---------------------------------------------------------------------------- scaling


@dataclasses.dataclass
class ScalingParams(Common):
    """Parameters of the ``scaling`` experiment.

    Simulates ``members / 0.7`` cells (``su.data.simulate``, calibrated on pbmc68k; seed 0),
    splits them into members (trained on) and held-out non-members, trains a default
    ``su.SCVI`` on the members for ``epochs`` epochs, forgets ``forget`` members of the rarest
    type with ``ssd`` (any unlearned model would do: the audit's cost does not depend on it)
    and times, each on its own:

    * ``new.membership_attack(forget, adata=adata, attack="threshold")`` (matching, the attack
      features of the forget cells and of their matched non-members: 8 posterior draws per
      cell);
    * ``new.membership_attack(forget, adata=adata)`` (default attacker: an MLP, 5-fold
      out-of-fold scores, bootstrap confidence intervals);
    * the per-cell equivalence test ``su.attack.equivalence_test(new, references, forget)``
      against ``references`` references (the audit's scoring only: the references are
      retrains, trained beforehand with the original's recipe and not timed);
    * ``model.fisher_overlap(forget cells)`` (per-sample Fisher of forget and retain cells plus
      the classifier control) and the per-sample diagonal Fisher of all members.

    The goal (issue 13): features + attacks + equivalence test under 60 s on 2 cores.

    Attributes
    ----------
    members
        Training members (the simulated cells are ``members / 0.7``).
    genes
        Genes simulated.
    forget
        Forget cells (members of the rarest type).
    epochs
        Training epochs of the original.
    references
        Reference retrains of the equivalence test.
    """

    members: int = 30_000
    genes: int = 2000
    forget: int = 200
    epochs: int = 2
    references: int = 5


@experiment("scaling", ScalingParams)
def scaling(args: ScalingParams) -> pd.DataFrame:
    """Wall time of the audit and the Fisher analysis on simulated training cells."""
    import scvi_unlearn as su

    n_total = int(round(args.members / 0.7))
    adata, train, model = simulated_members(n_total, args.genes, args.epochs)
    rare = train.obs["cell_type"].value_counts().index[-1]
    members = su.data.forget_by_label(adata, rare)
    forget = list(
        np.random.default_rng(0).choice(members, min(args.forget, members.size), replace=False)
    )
    print(f"{train.n_obs} members, {adata.n_obs - train.n_obs} non-members, forget {len(forget)}")
    references = su.attack.train_references(
        model, forget, seeds=range(args.references), enable_progress_bar=False
    )
    new = model.unlearn(forget, method="ssd")

    results: dict[str, float] = {}

    def timed(label: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        results[label] = time.perf_counter() - t0
        print(f"{label}: {results[label]:.1f} s", flush=True)

    timed(
        "membership_attack (threshold): matching + features + attack",
        lambda: new.membership_attack(forget, adata=adata, attack="threshold"),
    )
    timed("membership_attack (mlp)", lambda: new.membership_attack(forget, adata=adata))
    timed(
        f"equivalence test ({args.references} references)",
        lambda: su.attack.equivalence_test(new, references, forget, adata=adata),
    )
    audit = sum(results.values())
    print(f"audit total: {audit:.1f} s (goal < 60 s)")
    timed(
        "fisher_overlap (forget vs retain, classifier control)",
        lambda: model.fisher_overlap(train[forget]),
    )
    timed("per-sample diagonal Fisher, all members", lambda: su.fisher.diagonal_fisher(model))
    rows = [{"step": label, "seconds": f"{s:.1f}"} for label, s in results.items()]
    rows.append({"step": "**audit (the three above)**", "seconds": f"**{audit:.1f}**"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- Fisher speed

#: the architectures timed by ``fisher_speed``
ARCHITECTURES = {
    "batchnorm (default)": {},
    "layernorm": {"use_batch_norm": "none", "use_layer_norm": "both"},
}


@dataclasses.dataclass
class FisherSpeedParams(Common):
    """Parameters of the ``fisher_speed`` experiment.

    Builds scVI models on the offline PBMC data (700 cells x 765 genes; the first ``cells``
    cells, cycled if more are asked for) with the default architecture (BatchNorm, zinb) and
    with LayerNorm (``use_batch_norm="none", use_layer_norm="both"``), trains each for
    ``epochs`` epochs, and times on the same cells and the same posterior noise:

    * ``loop``: one ordinary forward + backward per cell (the reference of the tests);
    * ``fast``: :func:`scvi_unlearn.fisher.fisher_of_cells` (default route: Linear layers by
      activation x output-gradient products, the other parameters by ``torch.func.vmap``);
    * ``vmap``: the same with every parameter by ``torch.func.vmap`` (materialised per-cell
      gradients).

    Reported: the wall time of each (the minimum over ``repeats`` runs, the usual guard
    against other processes' noise), the speed-up of ``fast`` and ``vmap`` over the loop, and
    the largest relative difference to the loop (max |a - b| / max |b| per tensor).  All three
    run in one process, one after the other, with ``threads`` torch threads: a fair ratio on a
    shared machine.

    Attributes
    ----------
    cells
        Cells whose Fisher is computed.
    draws
        Posterior draws per cell.
    batch_size
        Minibatch size of ``fast`` and ``vmap``.
    epochs
        Training epochs of each model.
    repeats
        Runs of each estimator (the fastest counts).
    """

    cells: int = 512
    draws: int = 1
    batch_size: int = 128
    epochs: int = 10
    repeats: int = 3


def loop_fisher(model, adata, indices, n_draws, seed):
    """One ordinary forward + backward per cell; tensors prepared up front (not timed apart)."""
    import torch
    from scvi import REGISTRY_KEYS

    from scvi_unlearn.fisher import draw_noise, vae_cell_loss

    module = model.module
    module.eval()
    noise = draw_noise(len(indices), module.n_latent, n_draws, seed)
    loader = model._make_data_loader(adata=adata, indices=indices, batch_size=1, shuffle=False)
    params = dict(module.named_parameters())
    sums = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in params.items()}
    keys = (REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.LABELS_KEY)
    for i, tensors in enumerate(loader):
        inputs = {k: tensors[k] for k in keys}
        inputs["_eps_z"] = noise["_eps_z"][i : i + 1]
        inputs["_eps_l"] = noise["_eps_l"][i : i + 1]
        loss = vae_cell_loss(module, inputs).sum()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for k, g in zip(params, grads):
            if g is not None:
                sums[k] += g.double() ** 2
    return {k: v / len(indices) for k, v in sums.items() if k in _used(model)}


def fast_fisher(model, indices, n_draws, batch_size):
    from scvi_unlearn.fisher import fisher_of_cells

    return fisher_of_cells(model, indices=indices, n_draws=n_draws, batch_size=batch_size).values


def vmap_fisher(model, adata, indices, n_draws, batch_size):
    from scvi_unlearn.fisher import draw_noise, vae_cell_loss
    from scvi_unlearn.fisher._per_sample import squared_gradient_mean
    from scvi_unlearn.fisher._vae_fisher import _batches

    noise = draw_noise(len(indices), model.module.n_latent, n_draws, 0)
    batches = _batches(model, adata, indices, batch_size, noise)
    return squared_gradient_mean(model.module, vae_cell_loss, batches, route="vmap").values


def _used(model):
    from scvi_unlearn.fisher import fisher_of_cells

    return set(fisher_of_cells(model, indices=np.arange(2)).values)


def max_rel(a, b):
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30)) for k in b)


@experiment("fisher_speed", FisherSpeedParams)
def fisher_speed(args: FisherSpeedParams) -> pd.DataFrame:
    """Speed of the per-sample diagonal Fisher estimator relative to a per-cell backward loop."""
    import torch

    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed
    from scvi_unlearn.fisher import fisher_of_cells

    adata = su.data.pbmc68k()
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    indices = np.arange(args.cells) % adata.n_obs
    print(
        f"cells={args.cells} genes={adata.n_vars} draws={args.draws} "
        f"batch_size={args.batch_size} threads={args.threads} torch={torch.__version__}"
    )

    def timed(fn):
        best, value = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            value = fn()
            best = min(best, time.perf_counter() - t0)
        return best, value

    rows = []
    for name, kwargs in ARCHITECTURES.items():
        with isolated_seed(0):
            model = su.SCVI(adata, n_latent=10, **kwargs)
            model.train(max_epochs=args.epochs, enable_progress_bar=False)
        fisher_of_cells(model, indices=indices[:8])  # warm-up (first-call overheads)
        t_loop, ref = timed(partial(loop_fisher, model, adata, indices, args.draws, 0))
        t_fast, fast = timed(
            partial(fast_fisher, model, indices, n_draws=args.draws, batch_size=args.batch_size)
        )
        t_vmap, vm = timed(
            partial(vmap_fisher, model, adata, indices, args.draws, args.batch_size)
        )
        rows.append(
            {
                "architecture": name,
                "loop s": f"{t_loop:.2f}",
                "fast s": f"{t_fast:.2f}",
                "vmap s": f"{t_vmap:.2f}",
                "fast x": f"{t_loop / t_fast:.1f}",
                "vmap x": f"{t_loop / t_vmap:.1f}",
                "fast err": f"{max_rel(fast, ref):.1e}",
                "vmap err": f"{max_rel(vm, ref):.1e}",
            }
        )
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- pbmc68k audit


@dataclasses.dataclass
class PbmcAuditParams(Common):
    """Parameters of the ``pbmc_audit`` experiment.

    Trains the original model (the test-suite recipe: n_latent=10, n_hidden=64, ``epochs``
    epochs on the training members, ``train_size=0.9``, seed 0), builds the retrain target from
    3 retrains (``model.retrain_target``, seeds 0-2) for the ``mlp`` and ``calibrated``
    attacks, and audits the original and a fourth, independent retrain (seed 3) with every
    attack.  The retrain targets and the verdicts are printed; the table has each audit with
    its wall time; the ROC figure of the calibrated audits is saved.

    Attributes
    ----------
    epochs
        Training epochs of the original.
    figures
        Folder of the ROC figure (``audit_roc_cd56nk.png``).
    """

    epochs: int = 30
    figures: str = "docs/figures"


@experiment("pbmc_audit", PbmcAuditParams)
def pbmc_audit(args: PbmcAuditParams) -> pd.DataFrame:
    """Membership audit on the offline PBMC data, "CD56+ NK" as the forget set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed

    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    forget = su.data.forget_by_label(adata, "CD56+ NK")
    train = adata[adata.obs["membership"] == "train"].copy()
    su.SCVI.setup_anndata(train, layer="counts", labels_key="cell_type")
    with isolated_seed(0):
        original = su.SCVI(train, n_latent=10, n_hidden=64)
        original.train(max_epochs=args.epochs, train_size=0.9, enable_progress_bar=False)
    candidate = original.unlearn(forget, method="retrain", seed=3)
    nonmembers = su.data.matched_nonmembers(adata, forget, seed=0)
    print(
        f"{forget.size} members (CD56+ NK training cells), {nonmembers.size} matched non-members"
    )

    rows, targets = [], {}
    for attack in ("mlp", "calibrated"):
        t = time.perf_counter()
        targets[attack] = original.retrain_target(
            forget, nonmembers, seeds=(0, 1, 2), adata=adata, attack=attack
        )
        print(f"\n{targets[attack]}\n  built in {time.perf_counter() - t:.1f} s")
    for name, model in (("original", original), ("retrain seed 3", candidate)):
        for attack, kwargs in (
            ("mlp", {"target": targets["mlp"]}),
            ("threshold", {"score": "elbo"}),
            ("calibrated", {"target": targets["calibrated"]}),
            ("drift", {"baseline": original}),
        ):
            if attack == "drift" and model is original:
                continue
            t = time.perf_counter()
            report = model.membership_attack(
                forget, nonmembers, adata=adata, attack=attack, **kwargs
            )
            seconds = time.perf_counter() - t
            row = report.to_frame().iloc[0]
            rows.append(
                {
                    "model": name,
                    "attack": attack,
                    "auc": f"{row['auc']:.3f}",
                    "auc_ci": f"[{row['auc_low']:.3f}, {row['auc_high']:.3f}]",
                    "advantage": f"{row['advantage']:.3f}",
                    "yeom": f"{row['yeom_advantage']:.3f}",
                    "tpr@5%fpr": f"{row['tpr@5%fpr']:.3f}",
                    "seconds": f"{seconds:.3f}",
                }
            )
            print(f"{name:>15} | {report.verdict()}")
            if attack == "calibrated":
                ax = plt.gca()
                report.plot_roc(ax=ax, label=f"{name} AUC {report.auc:.2f}")
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / "audit_roc_cd56nk.png"
    plt.title("Calibrated attack, CD56+ NK forget set")
    plt.savefig(path, dpi=120, bbox_inches="tight")
    plt.close()
    print(f"\nROC figure: {path}")
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- null checks

#: the cross-fitted MLP's fold designs
FOLDS = ("paired", "stratified", "grouped")


@dataclasses.dataclass
class NullChecksParams(Common):
    """Parameters of the ``null_checks`` experiment.

    For a 100-epoch ``su.benchmark.train_original`` model of the pbmc68k split used throughout
    (holdout 0.3, stratified, seed 0):

    1. random null: two random disjoint sets of 40 held-out cells (no model trained on either),
       ``random_reps`` repetitions, out-of-fold AUC of the MLP with paired / stratified /
       grouped folds; ``shadow_reps`` repetitions of the shadow attack;
    2. structured null: the 22 "CD56+ NK" members vs their matched held-out cells under a
       retrain that never saw them, and under the original that did (5 seeds per fold design,
       3 for shadow);
    3. the test suite's label-matched design (30 random training members vs 30 label-matched
       held-out cells, models trained 300 epochs on 30 other members; the fixtures of
       ``tests/test_attack.py``, reused rather than restated), 4 seeds per fold design.

    Attributes
    ----------
    epochs
        Training epochs of the original.
    random_reps
        Repetitions of the random null per fold design.
    shadow_reps
        Repetitions of the shadow attack on the random null.
    """

    epochs: int = 100
    random_reps: int = 12
    shadow_reps: int = 6


def _features(model, adata, names):
    from scvi_unlearn.attack import attack_features, feature_columns

    feats = attack_features(model, adata, names)
    return feats[feature_columns(feats, "full")].to_numpy()


def _mlp_aucs(x, y, seeds, folds):
    from scvi_unlearn.attack import mlp_attack, roc_auc

    return [roc_auc(y, mlp_attack(x, y, seed=s, folds=folds).scores) for s in seeds]


@experiment("null_checks", NullChecksParams)
def null_checks(args: NullChecksParams) -> pd.DataFrame:
    """Null checks of the cross-fitted MLP's fold designs and of the shadow attack (pbmc68k)."""
    import scvi_unlearn as su
    from scvi_unlearn.attack import mlp_attack, roc_auc
    from scvi_unlearn.benchmark import train_original

    rows = []

    def line(check: str, name: str, values) -> None:
        rows.append(
            {
                "check": check,
                "model / attack": name,
                "mean AUC": f"{np.mean(values):.3f}",
                "sd": f"{np.std(values):.3f}",
                "AUCs": " ".join(f"{v:.2f}" for v in values),
            }
        )
        print(rows[-1], flush=True)

    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    model = train_original(adata, train_kwargs={"max_epochs": args.epochs})
    held = np.asarray(adata.obs_names[adata.obs["membership"] == "heldout"])

    check = "1. random null"
    x_held = _features(model, adata, held)
    y = np.r_[np.ones(40), np.zeros(40)].astype(int)
    for folds in FOLDS:
        aucs = []
        for s in range(args.random_reps):
            idx = np.random.default_rng(100 + s).permutation(held.size)[:80]
            aucs.append(roc_auc(y, mlp_attack(x_held[idx], y, seed=s, folds=folds).scores))
        line(check, f"mlp, {folds} folds", aucs)
    aucs = []
    for s in range(args.shadow_reps):
        p = np.random.default_rng(100 + s).permutation(held)
        r = model.membership_attack(
            p[:40], p[40:80], adata=adata, attack="shadow", seed=s, n_bootstrap=100
        )
        aucs.append(r.auc)
    line(check, "shadow", aucs)

    check = "2. NK forget set vs matched held-out cells"
    forget = su.data.forget_by_label(adata, "CD56+ NK")
    non = su.data.matched_nonmembers(adata, forget)
    y2 = np.r_[np.ones(forget.size), np.zeros(non.size)].astype(int)
    retrain = model.unlearn(forget, method="retrain", seed=1)
    for name, mdl in (("retrain (null)", retrain), ("original", model)):
        x2 = _features(mdl, adata, np.r_[forget, non])
        for folds in FOLDS:
            line(check, f"{name}, mlp {folds}", _mlp_aucs(x2, y2, range(5), folds))
        aucs = [
            mdl.membership_attack(
                forget, adata=adata, attack="shadow", seed=s, n_bootstrap=100
            ).auc
            for s in range(3)
        ]
        line(check, f"{name}, shadow", aucs)

    check = "3. the test suite's label-matched design"
    sys.path.insert(0, str(ROOT.parent / "tests"))
    import test_attack as design  # the fixtures' recipe, reused rather than restated

    cells = design.cells.__wrapped__(adata)
    members, nonmembers = cells["members"], cells["nonmembers"]
    y3 = np.r_[np.ones(members.size), np.zeros(nonmembers.size)].astype(int)
    models = {
        "retrain seed 1 (null)": design._fit(adata, cells["retain"], seed=1),
        "retrain seed 2 (null)": design._fit(adata, cells["retain"], seed=2),
        "original": design._fit(adata, np.r_[members, cells["retain"]], seed=0),
    }
    for name, mdl in models.items():
        x3 = _features(mdl, adata, np.r_[members, nonmembers])
        for folds in FOLDS:
            line(check, f"{name}, mlp {folds}", _mlp_aucs(x3, y3, range(4), folds))
        aucs = [
            mdl.membership_attack(
                members, nonmembers, adata=adata, attack="shadow", seed=s, n_bootstrap=100
            ).auc
            for s in range(3)
        ]
        line(check, f"{name}, shadow", aucs)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- fold anti-learning


@dataclasses.dataclass
class FoldParams(Common):
    """Parameters of the ``fold_antilearning`` experiment.

    Members (30 training members) and label-matched held-out non-members are audited under
    models that never saw the members (trained ``epochs`` epochs on 30 other training members,
    seeds ``seeds``), so the true AUC is 0.5.  Reported: the out-of-fold MLP AUC (95% CI) with
    scikit-learn's stratified folds and with matched-pair folds (``paired_folds``; the default
    is now label-blind grouped folds, see ``null_checks``).

    Attributes
    ----------
    epochs
        Training epochs of the models.
    seeds
        Seeds of the models.
    """

    epochs: int = 300
    seeds: list[int] = dataclasses.field(default_factory=lambda: [1, 2])


@experiment("fold_antilearning", FoldParams)
def fold_antilearning(args: FoldParams) -> pd.DataFrame:
    """Out-of-fold anti-learning on a matched design: stratified vs matched-pair folds."""
    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed
    from scvi_unlearn.attack import (
        attack_features,
        bootstrap_ci,
        feature_columns,
        mlp_attack,
        roc_auc,
    )

    pbmc = su.data.pbmc68k()
    su.data.membership_split(pbmc, holdout=0.3, stratify="cell_type", seed=0)
    rng = np.random.default_rng(0)
    train = np.sort(np.asarray(pbmc.obs_names[pbmc.obs["membership"] == "train"], dtype=str))
    chosen = rng.choice(train, size=60, replace=False)
    members, retain = np.sort(chosen[:30]), np.sort(chosen[30:])
    nonmembers = su.data.matched_nonmembers(pbmc, members, method="label", seed=0)
    y = np.r_[np.ones(members.size, int), np.zeros(nonmembers.size, int)]
    rows = []
    for seed in args.seeds:
        sub = pbmc[pbmc.obs_names.isin(retain)].copy()
        su.SCVI.setup_anndata(sub, layer="counts", labels_key="cell_type")
        with isolated_seed(seed):
            model = su.SCVI(sub, n_latent=10, n_hidden=64)
            model.train(max_epochs=args.epochs, train_size=1.0, enable_progress_bar=False)
        feats = attack_features(model, pbmc, np.r_[members, nonmembers])
        x = feats[feature_columns(feats)].to_numpy()
        for folds in ("stratified", "paired"):
            scores = mlp_attack(x, y, seed=0, folds=folds).scores
            lo, hi = bootstrap_ci(y, scores, seed=0)["auc"]
            rows.append(
                {
                    "model": f"seed {seed}",
                    "folds": folds,
                    "AUC": f"{roc_auc(y, scores):.3f}",
                    "95% CI": f"[{lo:.3f}, {hi:.3f}]",
                }
            )
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)
