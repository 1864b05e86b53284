"""The settings the suites share: data, split, original model, forget sets, reference folders.

* pbmc68k (the offline real data; 30% held out, stratified, seed 0) with a 200-epoch original
  cached in ``cache/original`` (:func:`setting`) and its named forget sets (:func:`forget_sets`);
  the 400-epoch default-recipe original of the defaults study (:func:`setup`);
* simulated data (``su.data.simulate``, calibrated on pbmc68k): the original trained with
  scvi-tools' recipe and epoch heuristic (:func:`simulated_setting`) or a few epochs
  (:func:`simulated_members`);
* the per-run columns of a verdict (:func:`verdict_columns`) and where a forget set's cached
  retrains live (:func:`reference_folder`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from benchmarks.suites._common import quiet

# ``fast_retrain`` as measured before fit matching and weight averaging were its defaults: the
# full budget, last weights.  The configs whose committed tables used it pass it explicitly.
FULL_BUDGET = {"match_fit": False, "average_epochs": None}
#: every approximate method (the methods timed by the scaling suite and run by the defaults study)
APPROXIMATE = ["finetune", "gradient_ascent", "scrub", "contrastive", "fisher", "ssd"]
APPROXIMATE += ["extragradient", "mi_regularized", "reinit_finetune", "distill"]
#: the forget label of the defaults study (22 training members in pbmc68k)
FORGET_LABEL = "CD56+ NK"
#: where :func:`simulated_setting` records the original's training time
ORIGINAL_TIME = "original_time.json"


def setting(cache: str, threads: int, max_epochs: int = 200):
    """Quiet one-thread torch, pbmc68k with its split (seed 0), and the original model: loaded
    from ``cache/original`` or trained (200 epochs, seed 0) and saved there.  Shared by the
    benchmark scripts that reuse this cache."""
    import scvi

    import scvi_unlearn as su
    from scvi_unlearn.benchmark._runner import train_original

    quiet(threads)

    scvi.settings.seed = 0
    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    path = Path(cache) / "original"
    if path.exists():
        model = su.SCVI.load(str(path))
    else:
        model = train_original(adata, train_kwargs={"max_epochs": max_epochs}, seed=0)
        model.save(str(path), save_anndata=True)
    return su, adata, model


def forget_sets(su, adata, *, cd34: bool = False):
    """The forget sets of the pbmc68k benchmarks, by name; with ``cd34``, first the 9 CD34+
    members of ``docs/reproduction.md``."""
    sets = {}
    if cd34:
        members = su.data.forget_by_label(adata, "CD34+")
        sets[f"CD34+ ({members.size})"] = members
    return sets | {
        "CD56+ NK (22)": su.data.forget_by_label(adata, "CD56+ NK"),
        "CD14+ Monocyte (90)": su.data.forget_by_label(adata, "CD14+ Monocyte"),
        "CD56+ NK subset (10)": su.data.forget_label_subset(adata, "CD56+ NK", 10, seed=0),
        "random (50)": su.data.forget_random(adata, 50, seed=0),
        "CD8+ Cytotoxic T (38)": su.data.forget_by_label(adata, "CD8+ Cytotoxic T"),
    }


def reference_folder(cache, set_name: str) -> Path:
    """The folder of a forget set's cached retrains: ``cache`` / the set's name before " (",
    with "+" as "p" and spaces as "_" (``"CD56+ NK (22)"`` -> ``CD56p_NK``)."""
    return Path(cache) / set_name.split(" (")[0].replace("+", "p").replace(" ", "_")


def verdict_columns(rep, wall: float, full_time: float, new=None) -> dict:
    """The per-run columns of the verdict suite (``grid`` and ``conditional``) from an
    :class:`~scvi_unlearn.attack.EquivalenceReport`: cost, mean z, decision, membership
    contrast, both utility checks, the retain check's drop of ``new`` (when it has a record)
    and the epochs it trained (when recorded: the fit-matched ``fast_retrain``), passed."""
    u = rep.utility
    row = {
        "time / retrain": wall / full_time,
        "mean z": rep.statistic,
        "decision": rep.decision,
        "membership contrast": rep.membership_test.statistic,
        "global shift": rep.global_shift,
        "same-type ok": u["same_type_ok"],
        "other types vs retrains (%)": 100
        * (u["other_types_elbo"] - u["other_types_reference"])
        / abs(u["other_types_reference"]),
    }
    record = getattr(new, "unlearn_record_", None)
    if record is not None:
        row["retain check drop (%)"] = 100 * record["checks"]["relative_drop"]
        if "epochs" in record["budget"]:  # fast_retrain stopped at the original's fit
            row["epochs trained"] = record["budget"]["epochs"]
    row["exact"] = rep.exact  # judged on utility alone (EquivalenceReport.exact)
    row["failing types"] = ", ".join(map(str, rep.failing_types))
    row["passed"] = rep.passed
    return row


def simulated_setting(cells: int, genes: int, cache: Path):
    """``(su, adata, original)``: the simulated data with its split and the original, loaded
    from ``cache/original`` or trained there (default recipe, the epoch heuristic, seed 0; its
    training time written to ``cache/original_time.json``)."""
    import scvi
    import torch
    from scvi.model._utils import get_max_epochs_heuristic

    import scvi_unlearn as su
    from scvi_unlearn.benchmark._runner import train_original

    scvi.settings.seed = 0
    adata = su.data.simulate(cells, genes, random_state=0)
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    path = cache / "original"
    if path.exists():
        return su, adata, su.SCVI.load(str(path))
    members = int((adata.obs[su.data.SPLIT_KEY] == su.data.TRAIN).sum())
    epochs = get_max_epochs_heuristic(members)
    t0 = time.perf_counter()
    model = train_original(adata, train_kwargs={"max_epochs": epochs}, seed=0)
    seconds = time.perf_counter() - t0
    model.save(str(path), save_anndata=True)
    timing = {"seconds": seconds, "torch_threads": torch.get_num_threads()}
    (cache / ORIGINAL_TIME).write_text(json.dumps(timing))
    return su, adata, model


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


def default_budget(method, original_epochs: int) -> int:
    """Epochs of ``fast_retrain`` or ``rewind`` with their default budget rule on an original
    trained ``original_epochs`` epochs (the defaults read from the method's signature)."""
    import inspect

    from scvi_unlearn.unlearn.exact._fast_retrain import fast_budget

    params = inspect.signature(method).parameters
    fraction, floor = params["epoch_fraction"].default, params["min_epochs"].default
    capped = method.__name__ == "fast_retrain"  # never more epochs than the original
    return fast_budget(original_epochs, fraction, floor, at_most_original=capped)


def setup(cache_dir: str, threads: int | None):
    """Data, split, the original model (cached in ``cache_dir``) and the evaluation sets."""
    import torch

    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed

    if threads:
        torch.set_num_threads(threads)
    adata = su.data.pbmc68k()
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    members = adata[adata.obs["membership"] == "train"].copy()
    heldout = adata[adata.obs["membership"] == "heldout"].copy()
    su.SCVI.setup_anndata(members, layer="counts", labels_key="cell_type")
    path = os.path.join(cache_dir, "original")
    if os.path.exists(path):
        model = su.SCVI.load(path, adata=members)
    else:
        with isolated_seed(0):
            model = su.SCVI(members)
            model.train(train_size=0.9, enable_progress_bar=False)
        model.save(path, overwrite=True)
    forget = su.data.forget_by_label(adata, FORGET_LABEL)
    return model, members, heldout, forget


def cached_retrain(model, forget, seed: int, cache_dir: str):
    """The exact retrain of ``model`` without ``forget`` for ``seed``: loaded from
    ``cache_dir/retrain_seed{seed}`` (with its recorded wall time) or run and saved there.
    Returns ``(retrained model, seconds)``."""
    import scvi_unlearn as su

    path = os.path.join(cache_dir, f"retrain_seed{seed}")
    if os.path.exists(path):
        new = su.SCVI.load(path)
        return new, new.unlearn_record_["wall_time_s"]
    t = time.perf_counter()
    new = model.unlearn(forget, method="retrain", seed=seed, enable_progress_bar=False)
    seconds = time.perf_counter() - t
    new.save(path, save_anndata=True, overwrite=True)
    return new, seconds


def pbmc68k_cache(cache: str, original_epochs: int) -> Path:
    """The folder of the pbmc68k original trained ``original_epochs`` epochs and of its
    retrains: ``cache`` itself for the 200-epoch original of :func:`setting`, else
    ``cache/pbmc68k_{original_epochs}_epochs`` (each original its own retrains)."""
    if original_epochs == 200:
        return Path(cache)
    return Path(cache) / f"pbmc68k_{original_epochs}_epochs"


def simulated_cache(cache: str, cells: int, genes: int) -> Path:
    """The folder of :func:`simulated_setting`'s original of ``cells`` x ``genes`` and of its
    retrains: ``cache/simulated_{cells}x{genes}`` (created)."""
    folder = Path(cache) / f"simulated_{cells}x{genes}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
