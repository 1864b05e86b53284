"""Reference retrains: trained once (in parallel if wanted), saved to a folder, reused.

Every verdict of this package (the retrain target of the membership audit and the per-cell
equivalence test) is relative to models retrained without the forget cells.  They are the cost
of an audit, so they are built once per forget set, kept in a folder, and reused for every
candidate.  The folder holds one scvi-tools model folder per seed (with its retain-cell AnnData)
and ``references.json`` (seeds, the number of forget cells and a SHA-256 digest of their sorted
``obs_names``, used to refuse references of another forget set).  It therefore identifies the
forget set to whoever can enumerate candidate cells: keep it with the audit, not with the
unlearned model.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from scvi_unlearn.attack._audit import CellsLike
from scvi_unlearn.attack._evaluation_data import as_obs_names
from scvi_unlearn.attack._target import RetrainTarget, retrain_target

_MANIFEST = "references.json"


def _digest(names: np.ndarray) -> str:
    joined = "\n".join(np.sort(np.asarray(names, dtype=str)))
    return hashlib.sha256(joined.encode()).hexdigest()


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / _MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def train_references(
    model,
    forget,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    *,
    folder: str | Path | None = None,
    n_jobs: int = 1,
    scratch_dir: str | None = None,
    **retrain_kwargs,
) -> list[Any]:
    """Exact retrains of ``model`` without ``forget``, one per seed; cached in ``folder``.

    Parameters
    ----------
    model
        The original :class:`scvi_unlearn.SCVI` (not modified).
    forget
        The forget cells (AnnData or ``obs_names``).
    seeds
        One retrain per seed (``model.unlearn(forget, method="retrain", seed=s)``).  Five is
        the recommended number of references for the equivalence test
        (``docs/equivalence.md``).
    folder
        If given, retrains already in the folder (same forget set, same seed) are loaded
        instead of trained, and new ones are saved there: a second call with more seeds only
        trains the missing ones.
    n_jobs
        Parallel workers (joblib processes) for the retrains that must be trained.
    scratch_dir
        Where parallel workers exchange models.
    retrain_kwargs
        Options of the ``retrain`` method (e.g. ``max_epochs``); saved references must have
        been trained with the same ones (not checked beyond the manifest).

    Returns
    -------
    The retrained models, in the order of ``seeds``.
    """
    from scvi_unlearn.unlearn.core._parallel import UnlearningJob, run_jobs

    names = as_obs_names(forget, "forget")
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}.")
    have: dict[int, Any] = {}
    if folder is not None:
        folder = Path(folder)
        manifest = _read_manifest(folder)
        if manifest is not None:
            _check_manifest(manifest, names, folder)
            have = {
                s: model.__class__.load(str(folder / f"retrain_seed{s}"))
                for s in seeds
                if s in manifest["seeds"]
            }
    todo = [s for s in seeds if s not in have]
    jobs = [UnlearningJob("retrain", s, dict(retrain_kwargs)) for s in todo]
    for job, (new, _) in zip(
        jobs, run_jobs(model, names, jobs, n_jobs=n_jobs, scratch_dir=scratch_dir)
    ):
        have[job.seed] = new
    if folder is not None and todo:
        save_references([have[s] for s in seeds], seeds, names, folder)
    return [have[s] for s in seeds]


def save_references(models: Sequence[Any], seeds: Sequence[int], forget, folder) -> None:
    """Save reference models (one sub-folder per seed) and their manifest into ``folder``."""
    names = as_obs_names(forget, "forget")
    if len(models) != len(seeds):
        raise ValueError(f"{len(models)} models but {len(seeds)} seeds.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(folder)
    if manifest is not None:
        _check_manifest(manifest, names, folder)
    known = set(manifest["seeds"]) if manifest else set()
    for model, seed in zip(models, seeds):
        if int(seed) not in known:
            model.save(str(folder / f"retrain_seed{int(seed)}"), save_anndata=True)
            known.add(int(seed))
    (folder / _MANIFEST).write_text(
        json.dumps(
            {
                "seeds": sorted(known),
                "n_forget": int(names.size),
                "forget_sha256": _digest(names),
                "model_class": f"{type(models[0]).__module__}:{type(models[0]).__qualname__}",
            },
            indent=1,
        )
    )


def load_references(folder, forget=None) -> list[Any]:
    """Load every reference retrain saved in ``folder`` (ordered by seed).

    ``forget``, if given, must be the forget set the references were trained without.  The
    models are loaded with the class that saved them (recorded in the manifest).
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"No {_MANIFEST} in {folder}: not a folder of references.")
    if forget is not None:
        _check_manifest(manifest, as_obs_names(forget, "forget"), folder)
    module, _, qualname = manifest["model_class"].partition(":")
    model_class = getattr(importlib.import_module(module), qualname)
    return [model_class.load(str(folder / f"retrain_seed{s}")) for s in manifest["seeds"]]


def _check_manifest(manifest: dict[str, Any], names: np.ndarray, folder: Path) -> None:
    if manifest["forget_sha256"] != _digest(names):
        raise ValueError(
            f"The references in {folder} were trained without another forget set "
            f"({manifest['n_forget']} cells, not these {names.size}); use another folder."
        )


def build_retrain_target(
    model,
    forget: CellsLike,
    nonmembers: CellsLike | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    adata: AnnData | None = None,
    folder: str | None = None,
    n_jobs: int = 1,
    **kwargs,
) -> RetrainTarget:
    """Retrain ``model`` without ``forget`` once per seed and return :func:`retrain_target`.

    The retrains come from :func:`scvi_unlearn.attack.train_references`
    (``model.unlearn(forget, method="retrain", seed=s)``: same init arguments and training
    recipe as ``model``, retain cells only), trained in ``n_jobs`` parallel workers and cached
    in ``folder`` if given (a later call reuses them).  Five seeds by default: the number of
    references the per-cell equivalence test was calibrated with (``docs/equivalence.md``);
    a forget set of fewer than 20 cells needs 8
    (:func:`~scvi_unlearn.attack.references_needed`), and :func:`retrain_target` warns when
    the retrains cannot reach a decision.  ``kwargs`` go to :func:`retrain_target`.
    """
    if len(seeds) < 3:
        raise ValueError(f"Give at least 3 seeds, got {list(seeds)}.")
    if not callable(getattr(model, "unlearn", None)):
        raise NotImplementedError(
            f"{type(model).__name__} has no unlearn() method, so it cannot build retrained "
            "models itself: retrain without the forget cells with >= 3 seeds and pass the "
            "models to scvi_unlearn.attack.retrain_target."
        )
    try:
        models = train_references(model, forget, seeds, folder=folder, n_jobs=n_jobs)
    except (KeyError, NotImplementedError) as err:
        raise NotImplementedError(
            "model.unlearn(..., method='retrain') is not available "
            f"({err}); build the retrained models yourself and use retrain_target."
        ) from err
    return retrain_target(models, forget, nonmembers, adata=adata, **kwargs)
