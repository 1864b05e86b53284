"""``fisher``: Fisher forgetting (noise from the inverse retain Fisher), optional ascent."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from scvi_unlearn.unlearn.approximate._gradient_ascent import NegGradPlusPlan
from scvi_unlearn.unlearn.core._budget import sample_positions
from scvi_unlearn.unlearn.core._guard import mean_elbo
from scvi_unlearn.unlearn.core._importances import retain_importance
from scvi_unlearn.unlearn.core._registry import register


class PreconditionedSGD(torch.optim.Optimizer):
    """SGD with a fixed diagonal preconditioner: ``theta -= lr * P * grad``.

    Parameters without a preconditioner (no Fisher) are not updated.
    """

    def __init__(self, params, preconditioners: dict[int, torch.Tensor], lr: float):
        super().__init__(params, {"lr": lr})
        self.preconditioners = preconditioners

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                pre = self.preconditioners.get(id(p))
                if p.grad is None or pre is None:
                    continue
                p.add_(p.grad * pre.to(p.device, p.dtype), alpha=-group["lr"])
        return loss


#: first noise scale tried by the calibration, and the range it searches
_ALPHA_START, _ALPHA_MIN, _ALPHA_MAX = 5e-5, 1e-9, 1e-2
#: retain training cells the calibration scores (a seeded sample) and log-space bisection steps
_CALIBRATION_CELLS, _BISECTIONS = 1024, 4


def _calibrated_alpha(task, model, add_noise, budget: float) -> tuple[float, float]:
    """The largest ``alpha`` whose noise keeps the retain-ELBO drop within ``budget``.

    The drop is the relative loss of mean ELBO
    (:func:`~scvi_unlearn.unlearn.core._guard.mean_elbo`,
    4 seeded draws) of the noised model against the original on a seeded sample of at most
    1,024 retain *training* cells (the engine's check scores the retain validation cells, so the
    two stay separate).  ``alpha`` is bracketed by factors of 4 from 5e-5 within [1e-9, 1e-2],
    then refined by 4 log-space bisections (to within 9%).  Returns ``(alpha, drop)``;
    ``alpha = 0`` when the model already lost the budget before the noise (after the ascent).
    """
    cells = sample_positions(task.train_indices, _CALIBRATION_CELLS, seed=task.seed)
    manager = task.adata_manager
    device = next(model.module.parameters()).device
    reference = mean_elbo(task.teacher_module.to(device), manager, cells)

    def drop_at(a: float) -> float:
        add_noise(a)
        new = mean_elbo(model.module, manager, cells)
        return (reference - new) / abs(reference) if np.isfinite(new) else np.inf

    base = drop_at(0.0)
    if base > budget:
        return 0.0, base
    lo, lo_drop, hi, a = 0.0, base, None, _ALPHA_START
    while True:
        d = drop_at(a)
        if d <= budget:
            lo, lo_drop = a, d
            if hi is not None or a >= _ALPHA_MAX:
                break
            a = min(4 * a, _ALPHA_MAX)
        else:
            hi = a
            if lo > 0 or a <= _ALPHA_MIN:
                break
            a = a / 4
    if lo > 0 and hi is not None:
        for _ in range(_BISECTIONS):
            mid = float(np.sqrt(lo * hi))
            d = drop_at(mid)
            if d <= budget:
                lo, lo_drop = mid, d
            else:
                hi = mid
    return lo, lo_drop


@register(
    "fisher",
    guarantee="none: Fisher-scaled noise on a copy of the original",
    reference=(
        "Fisher forgetting (Golatkar, Achille & Soatto 2020, Eternal Sunshine of the "
        "Spotless Net, CVPR)"
    ),
    status="research baseline",
    measured=(
        "0/54: pbmc68k's six forget sets x originals of 60 / 200 / 400 epochs x 3 seeds (0 / "
        "0 / 0 of 18); equivalent 3, remembers 49, over-forgets 0; median 0.06x a retrain "
        "(benchmarks/RESULTS.md, approximate_matrix)"
    ),
    benchmark=True,
)
def fisher(
    task,
    *,
    alpha: float | None = None,
    noise_budget: float = 0.01,
    variance_cap: float = 1e3,
    n_draws: int = 1,
    ascent_epochs: int = 0,
    ascent_lr: float = 3e-4,
    forget_margin: float = 0.05,
    damping: float = 0.1,
    batch_size: int = 128,
    forget_batch_size: int | None = None,
    retain_sample: int | str | None = None,
    accelerator: str = "auto",
    devices: Any = "auto",
    enable_progress_bar: bool = True,
    **trainer_kwargs,
):
    """Fisher forgetting: Gaussian noise with covariance ``alpha * min(F_retain^-1, cap)``.

    Follows the Fisher forgetting of Golatkar, Achille and Soatto 2020, "Eternal Sunshine of
    the Spotless Net: Selective Forgetting in Deep Networks" (CVPR).  ``F_retain`` is the
    per-sample diagonal Fisher of the original model on the retain cells
    (:func:`scvi_unlearn.fisher.diagonal_fisher`).  Every parameter with a Fisher value gets
    independent noise ``N(0, alpha * min(1 / (F + 1e-8), variance_cap))``, as in the authors'
    implementation: directions the retain cells do not constrain (small ``F``) are randomised,
    destroying the information that only the forget cells put there, while directions the retain
    cells rely on barely move.  The noise is drawn from a private
    ``torch.Generator`` seeded with the request's seed.

    By default (``alpha=None``) the noise scale is **calibrated from the model**: the largest
    ``alpha`` whose noise costs at most ``noise_budget`` (1%) of the original's mean ELBO on a
    seeded sample of at most 1,024 retain *training* cells (4 seeded draws; bracketed by
    factors of 4 from 5e-5, then 4 log-space bisections; a handful of forward passes).  A fixed
    ``alpha`` does not transfer: the damage of the noise is about ``alpha / 2`` times the
    number of parameters the Fisher constrains, and that and the ELBO's scale change with the
    data, the architecture and the training length (see Notes).  The chosen ``alpha`` and the
    calibration drop are in the record's log.  Pass a float ``alpha`` for the fixed scale.

    Option (``ascent_epochs > 0``): before the noise, a Fisher-preconditioned, bounded gradient
    ascent on the forget cells: the NegGrad+ forget term of ``gradient_ascent`` with
    ``beta = 0`` (each forget cell's loss capped at ``(1 + forget_margin)`` times the
    original's, so it cannot diverge), stepped by SGD preconditioned with
    ``P = mean(F) / (F + damping * mean(F))`` (a scale-free, damped ``F^-1``: large steps where
    the retain cells do not care).  Runs through Lightning like the other training methods, with
    the module in eval mode, as the Fisher was computed (Lightning keeps a module's mode: no
    dropout, and BatchNorm on the original's running statistics, which the forget-only batches
    do not update); the measured defaults below were chosen this way.

    Parameters
    ----------
    task
        The :class:`~scvi_unlearn.unlearn.UnlearningTask`.
    alpha
        Noise scale.  ``None`` (default): calibrated to ``noise_budget`` (above); a float: that
        scale (the authors' default was 1e-6; 5e-5 was this method's default before the
        calibration).
    noise_budget
        With ``alpha=None``: the largest tolerated relative drop of the retain-training ELBO
        (vs the original, any ascent included; no noise if the ascent already lost more), in
        ``(0, 1)``; default 0.01, half of ``unlearn``'s 2% retain tolerance.
    variance_cap
        Cap of the per-parameter inverse Fisher before scaling by ``alpha`` (the authors' 1e3).
    n_draws
        Posterior draws of ``z`` per cell in the Fisher.
    ascent_epochs
        Epochs of preconditioned bounded ascent (0: noise only, the paper's method).
    ascent_lr
        Learning rate of the preconditioned ascent.
    forget_margin
        Relative cap of a forget cell's loss above the original's during the ascent.
    damping
        Relative damping of the ascent's preconditioner.
    batch_size, forget_batch_size
        Cells per Fisher backward pass / per retain and forget minibatch of the ascent.
    retain_sample
        Retain cells the Fisher ``F_retain`` is averaged over (a seeded random sample) and
        retain training cells per epoch of the ascent (a fresh sample each epoch): ``None``
        (default) 10 x the forget cells, at least 2,048 and at most 16,384 (every retain cell on
        smaller data), so the cost grows with the forget set and not with the dataset; ``"all"``
        or an int to override (:func:`~scvi_unlearn.unlearn.retain_sample_size`).
    accelerator, devices, enable_progress_bar, **trainer_kwargs
        As in :meth:`scvi.model.SCVI.train` (ascent only).

    Notes
    -----
    Defaults (measured) on the offline PBMC data (700 cells; members of a stratified 70/30 split;
    default ``su.SCVI`` trained 400 epochs; forget = the 22 "CD56+ NK" members), measured with
    ``python -m benchmarks run defaults --config unlearn_grid`` (docs/unlearning.md).  Forget-cell
    ELBO: original -596.3, retrain (3 seeds) -709.9; held-out ELBO of the other types: original
    -687.5. The authors' ``alpha=1e-6`` changes nothing measurable on scVI (0%); ``alpha=5e-5``
    (default): forget ELBO -620.0 (21% of the way to retrain), other held-out -1.40%;
    ``alpha=1e-4``: 65% but -4.43%; ``1e-3`` destroys the model.  The noise is not specific to the
    forget cells, so it moves them little within the 2% budget.  The ascent option is far more
    specific: ``ascent_epochs=5, alpha=1e-6`` (with the default ``ascent_lr=3e-4,
    forget_margin=0.05``) moved 80% at -1.25%; keep ``alpha`` at 1e-6 with the ascent
    (``alpha=5e-5`` plus ascent cost -2.98%).

    Across settings (``python -m benchmarks run defaults --config across``, docs/unlearning.md,
    "Defaults across training lengths and forget sets": pbmc68k originals of 60, 200 and 400 epochs
    x 9 forget sets, and a simulated dataset), the former fixed default ``alpha=5e-5`` lost up to
    3.1% held-out ELBO of the other cell types and more than 2% in 13 of 28 settings (every
    60-epoch one, at -2.1% to -3.1%; -1.3% to -1.8% on the 400-epoch original).  The calibrated
    default (``noise_budget=0.01``) chose ``alpha`` between 1.8e-5 and 3.0e-5 and stayed within 2%
    in all 28 (worst -1.02%).  On the setting above it moves the forget ELBO to -607.2 (10% of the
    way to retrain) at -0.63%: it is less aggressive than ``alpha=5e-5`` there, by design, since
    the budget must also hold where ``5e-5`` did not.
    """
    if (alpha is not None and not alpha >= 0) or not variance_cap > 0:
        raise ValueError("alpha must be None or >= 0 and variance_cap > 0.")
    if not 0 < noise_budget < 1:
        raise ValueError(f"noise_budget must be in (0, 1), got {noise_budget!r}.")
    if ascent_epochs < 0 or damping <= 0 or forget_margin < 0:
        raise ValueError("ascent_epochs and forget_margin must be >= 0 and damping > 0.")
    model = task.new_model(copy_weights=True)
    model.module.eval()
    f_r = retain_importance(
        task,
        model,
        n_draws=n_draws,
        seed=task.seed,
        batch_size=batch_size,
        retain_sample=retain_sample,
    )
    params = dict(model.module.named_parameters())

    if ascent_epochs > 0:
        mean_f = torch.cat([f.reshape(-1) for f in f_r.values()]).mean()
        pre = {id(params[n]): (mean_f / (f + damping * mean_f)).float() for n, f in f_r.items()}
        plan = NegGradPlusPlan(
            model.module,
            task.teacher_module,
            beta=0.0,
            forget_margin=forget_margin,
            ascent_epochs=ascent_epochs,
            optimizer="Custom",
            optimizer_creator=lambda ps: PreconditionedSGD(ps, pre, ascent_lr),
            step_log=task.log,
        )
        task.fit(
            model,
            plan,
            task.datamodule(
                batch_size,
                with_forget=True,
                forget_batch_size=forget_batch_size,
                retain_sample=retain_sample,
            ),
            max_epochs=ascent_epochs,
            accelerator=accelerator,
            devices=devices,
            enable_progress_bar=enable_progress_bar,
            **trainer_kwargs,
        )

    gen = torch.Generator().manual_seed(task.seed)
    scales, eps = {}, {}
    for name, f in f_r.items():  # inverse Fisher (capped) and the seeded unit draws
        scales[name] = torch.clamp(1.0 / (f + 1e-8), max=variance_cap)
        eps[name] = torch.randn(params[name].shape, generator=gen, dtype=torch.float64)
    start = {name: params[name].detach().clone() for name in f_r}

    def add_noise(a: float) -> tuple[float, float]:
        noise_sq = n_noised = 0.0
        with torch.no_grad():
            for name in f_r:
                p = params[name]
                noise = ((a * scales[name]).sqrt() * eps[name]).to(p.device, p.dtype)
                p.copy_(start[name] + noise)
                noise_sq += float((noise.double() ** 2).sum())
                n_noised += p.numel()
        return noise_sq, n_noised

    entry: dict[str, float] = {"step": len(task.log)}
    if alpha is None:
        alpha, drop = _calibrated_alpha(task, model, add_noise, noise_budget)
        entry["calibration_drop"] = drop
    noise_sq, n_noised = add_noise(float(alpha))
    entry.update(
        alpha=float(alpha),
        noise_rms=(noise_sq / max(n_noised, 1)) ** 0.5,
        n_noised=float(n_noised),
    )
    task.log.append(entry)
    model.is_trained_ = True
    return model
