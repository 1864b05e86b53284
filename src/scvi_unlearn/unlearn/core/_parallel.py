"""Many unlearning requests on one model, in this process or in parallel workers (joblib).

Shared by the benchmark (methods x seeds) and by the reference retrains of an audit
(:func:`scvi_unlearn.attack.train_references`).  Parallel workers get the original model
through a saved copy in a scratch folder (a filesystem shared by the workers on a cluster)
and hand their results back the same way, so nothing but paths crosses process boundaries.
"""

from __future__ import annotations

import inspect
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class UnlearningJob:
    """One ``model.unlearn(forget, method=method, seed=seed, **kwargs)`` request.

    ``label`` names the run in results (default ``method``); ``quiet_degradation`` silences
    the :class:`~scvi_unlearn.unlearn.UnlearningWarning` of a run expected to lose utility
    (a shortened retrain).
    """

    method: str
    seed: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    quiet_degradation: bool = False

    @property
    def name(self) -> str:
        return self.label or self.method


def run_job(model, forget, job: UnlearningJob) -> tuple[Any, float]:
    """Run one job on ``model`` without a progress bar; returns the new model and wall time.

    A degraded model is returned with a warning (``on_degradation="warn"`` unless the job's
    kwargs say otherwise): benchmarks report a method's loss instead of stopping on it.
    """
    from scvi_unlearn.unlearn.core._guard import UnlearningWarning
    from scvi_unlearn.unlearn.core._registry import get_method

    kwargs = dict(job.kwargs)
    # a benchmark measures and reports a degraded run instead of stopping on it
    kwargs.setdefault("on_degradation", "warn")
    params = inspect.signature(get_method(job.method)).parameters
    if "enable_progress_bar" in params and "enable_progress_bar" not in kwargs:
        kwargs["enable_progress_bar"] = False  # one bar over runs is enough
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        if job.quiet_degradation:
            warnings.simplefilter("ignore", UnlearningWarning)
        new = model.unlearn(forget, method=job.method, seed=job.seed, **kwargs)
    return new, time.perf_counter() - t0


def run_jobs(
    model,
    forget,
    jobs: Sequence[UnlearningJob],
    *,
    n_jobs: int = 1,
    scratch_dir: str | None = None,
    on_done: Callable[[UnlearningJob, Any, float], None] | None = None,
) -> list[tuple[Any, float]]:
    """Run every job on ``model`` (never modified); returns ``(new model, wall time)`` per job.

    Parameters
    ----------
    model
        A trained :class:`scvi_unlearn.SCVI`.
    forget
        The forget cells (``obs_names`` or AnnData), shared by every job.
    jobs
        The requests, in order.
    n_jobs
        ``1``: in this process, one after the other.  More: joblib workers (processes); wall
        times then include contention for cores.
    scratch_dir
        Where parallel workers exchange models (default: the system's temporary folder).
    on_done
        Called with ``(job, new model, wall time)`` after each job (e.g. a progress bar).
    """
    if n_jobs == 1:
        out = []
        for job in jobs:
            new, wall = run_job(model, forget, job)
            out.append((new, wall))
            if on_done is not None:
                on_done(job, new, wall)
        return out

    import torch
    from joblib import Parallel, delayed

    cls = type(model)
    threads = torch.get_num_threads()  # the thread count changes the last digits: keep it
    with tempfile.TemporaryDirectory(dir=scratch_dir) as tmp:
        model.save(f"{tmp}/original", save_anndata=False)

        def _worker(i: int, job: UnlearningJob) -> tuple[str, float]:
            import torch

            torch.set_num_threads(threads)
            mdl = cls.load(f"{tmp}/original", adata=model.adata)
            new, wall = run_job(mdl, forget, job)
            new.save(f"{tmp}/job_{i}", save_anndata=True)
            return f"{tmp}/job_{i}", wall

        paths = Parallel(n_jobs=n_jobs)(delayed(_worker)(i, j) for i, j in enumerate(jobs))
        out = []
        for job, (path, wall) in zip(jobs, paths):
            new = cls.load(path)
            out.append((new, wall))
            if on_done is not None:
                on_done(job, new, wall)
    return out
