"""``ssd``: Selective Synaptic Dampening (no gradient steps)."""

from __future__ import annotations

import torch

from scvi_unlearn.unlearn.core._importances import forget_importance, pooled, retain_importance
from scvi_unlearn.unlearn.core._registry import register


@register(
    "ssd",
    guarantee=(
        "none: dampens the original's parameters that matter most to the forget cells; no "
        "gradient step"
    ),
    reference="Selective Synaptic Dampening (Foster, Schoepf & Brintrup 2024, AAAI)",
    status="research baseline",
    measured=(
        "0/54: pbmc68k's six forget sets x originals of 60 / 200 / 400 epochs x 3 seeds (0 / "
        "0 / 0 of 18); equivalent 1, remembers 46, over-forgets 3; median 0.01x a retrain "
        "(benchmarks/RESULTS.md, approximate_matrix)"
    ),
    benchmark=True,
)
def ssd(
    task,
    *,
    alpha: float = 10.0,
    lambda_: float = 1.0,
    n_draws: int = 1,
    batch_size: int = 128,
    retain_sample: int | str | None = None,
):
    """Selective Synaptic Dampening: shrink the parameters far more important to the forget cells.

    Follows Foster, Schoepf and Brintrup 2024, "Fast Machine Unlearning Without Retraining
    Through Selective Synaptic Dampening" (AAAI).  Importances are per-sample diagonal Fisher
    values of the original model (:func:`scvi_unlearn.fisher.diagonal_fisher`: mean over cells
    of the squared per-cell gradient of the negative ELBO): ``I_D`` on the full training data
    (every cell the model trained on, forget included; pooled exactly from the retain and forget
    means) and ``I_f`` on the forget cells.  Each parameter ``theta`` with
    ``I_f > alpha * I_D`` is multiplied by ``min(lambda_ * I_D / I_f, 1)``; the others are
    unchanged.  No gradient step, no retraining: the cost is two Fisher passes.  Parameters that
    receive no gradient from the ELBO (absent from the Fisher) and buffers are unchanged.

    Parameters
    ----------
    task
        The :class:`~scvi_unlearn.unlearn.UnlearningTask`.
    alpha
        Selection threshold (paper default 10): a parameter is selected when its forget
        importance exceeds ``alpha`` times its importance on the full training data.
    lambda_
        Dampening constant (paper default 1): selected parameters are scaled by
        ``min(lambda_ * I_D / I_f, 1)``.
    n_draws
        Posterior draws of ``z`` per cell in the Fisher (seeded with the request's seed).
    batch_size
        Cells per vectorised backward pass of the Fisher.
    retain_sample
        Retain cells the retain importances are averaged over: ``None`` (default) a seeded
        random sample of 10 x the forget cells, at least 2,048 and at most 16,384 (every retain
        cell on smaller data), so the cost grows with the forget set and not with the dataset;
        ``"all"`` or an int to override (:func:`~scvi_unlearn.unlearn.retain_sample_size`).

    Notes
    -----
    Defaults (measured) on the offline PBMC data (700 cells; members of a stratified 70/30 split;
    default ``su.SCVI`` trained 400 epochs; forget = the 22 "CD56+ NK" members), measured with
    ``python -m benchmarks run defaults --config unlearn_grid`` (docs/unlearning.md).  Forget-cell
    ELBO: original -596.3, retrain (3 seeds) -709.9; held-out ELBO of the other types: original
    -687.5. The paper's ``alpha=10, lambda_=1``: forget ELBO -676.7 (71% of the way to retrain),
    other held-out -0.32%, in 0.5 s -- the best utility at the lowest cost by this ELBO criterion.
    The membership audit (docs/reproduction.md) shows it leaves the forget cells about as
    detectable as the original does, so it is not the default method.  ``alpha=5`` overshot (182%,
    -2.22%); ``lambda_=5`` moved 36% (-0.11%).
    """
    if alpha <= 0 or lambda_ <= 0:
        raise ValueError(f"alpha and lambda_ must be > 0, got alpha={alpha}, lambda_={lambda_}.")
    model = task.new_model(copy_weights=True)
    model.module.eval()
    i_r = retain_importance(
        task,
        model,
        n_draws=n_draws,
        seed=task.seed,
        batch_size=batch_size,
        retain_sample=retain_sample,
    )
    i_f = forget_importance(task, n_draws=n_draws, seed=task.seed, batch_size=batch_size)
    n_r = task.train_indices.size + task.validation_indices.size
    i_d = pooled(i_r, n_r, i_f, task.n_forget)
    n_selected = n_total = 0
    scale_sum = 0.0
    with torch.no_grad():
        for name, p in model.module.named_parameters():
            if name not in i_d:
                continue
            d = i_d[name].to(p.device, torch.float64)
            f = i_f[name].to(p.device, torch.float64)
            selected = f > alpha * d
            factor = torch.where(
                selected, torch.clamp(lambda_ * d / f.clamp_min(1e-300), max=1.0), 1.0
            )
            p.mul_(factor.to(p.dtype))
            n_selected += int(selected.sum())
            n_total += p.numel()
            scale_sum += float((1.0 - factor)[selected].sum())
    task.log.append(
        {
            "step": 0,
            "n_selected": float(n_selected),
            "fraction_selected": n_selected / max(n_total, 1),
            "mean_dampening": scale_sum / max(n_selected, 1),
        }
    )
    model.is_trained_ = True
    return model
