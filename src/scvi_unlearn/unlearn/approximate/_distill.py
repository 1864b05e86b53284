"""``distill``: a fresh student trained on the retain cells, distilled from the original, with
a guard against the memory the teacher transfers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scvi.dataloaders import AnnDataLoader
from scvi.module._constants import MODULE_KEYS

from scvi_unlearn.unlearn.core._arguments import fraction_argument, int_argument, number_argument
from scvi_unlearn.unlearn.core._budget import retain_sample_size, sample_positions
from scvi_unlearn.unlearn.core._losses import (
    evaluation_mode,
    expression_kl,
    posterior_and_scale,
    posterior_kl,
)
from scvi_unlearn.unlearn.core._plan import UnlearningTrainingPlan
from scvi_unlearn.unlearn.core._registry import register

#: exact pairwise distances (the matrix-product shortcut is off by ~1e-3 at these norms, enough
#: to move a cell at the k-th neighbour's distance across the radius)
_EXACT = "donot_use_mm_for_euclid_dist"
#: forget cells per block of the neighbour search (bounds its memory at ~block x sample floats)
_BLOCK = 1024


def anneal_factors(max_epochs: int, anneal_fraction: float) -> list[float]:
    """Per-epoch factor of the distillation weight: 1, then a linear ramp to 0 over the last
    ``round(anneal_fraction * max_epochs)`` epochs (``n``): epoch ``e`` of the ramp gets
    ``(max_epochs - 1 - e) / n``, so the last epoch is trained on the retain ELBO alone.

    >>> anneal_factors(6, 0.5)
    [1.0, 1.0, 1.0, 0.6666666666666666, 0.3333333333333333, 0.0]
    """
    n = int(math.floor(anneal_fraction * max_epochs + 0.5))
    if n == 0:
        return [1.0] * max_epochs
    return [min(1.0, (max_epochs - 1 - e) / n) for e in range(max_epochs)]


@torch.no_grad()
def teacher_latent(teacher, manager, indices: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Posterior means of ``teacher`` (eval mode) on the cells ``indices`` of ``manager``'s
    AnnData, in that order (CPU, float32)."""
    loader = AnnDataLoader(manager, indices=indices, batch_size=batch_size, shuffle=False)
    device = next(teacher.parameters()).device
    out = []
    with evaluation_mode(teacher):
        for tensors in loader:
            tensors = {k: v.to(device) for k, v in tensors.items()}
            inference = teacher.inference(**teacher._get_inference_input(tensors))
            out.append(inference[MODULE_KEYS.QZ_KEY].loc.float().cpu())
    return torch.cat(out)


def neighbour_radii(forget: torch.Tensor, retain: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each forget point to its ``k``-th nearest retain point (Euclidean;
    ``k`` is capped at the number of retain points)."""
    k = min(int(k), retain.shape[0])
    radii = [
        torch.cdist(forget[i : i + _BLOCK], retain, compute_mode=_EXACT)
        .topk(k, dim=1, largest=False)
        .values[:, -1]
        for i in range(0, forget.shape[0], _BLOCK)
    ]
    return torch.cat(radii)


class DistillPlan(UnlearningTrainingPlan):
    """Retain ELBO plus a weighted teacher-to-student divergence on the same retain minibatch.

    ``loss = mean_b nELBO_S(x) + w_e * (1 / |b|) * sum_b keep(x) D(x)`` with
    ``D(x) = KL(q_T(z|x) || q_S(z|x)) + decoder_weight * KL(rho_T(x) || rho_S(x))`` (the
    divergence of :class:`~scvi_unlearn.unlearn.ScrubPlan`), ``w_e = distill_weight *
    factors[epoch]`` and ``keep(x) = 0`` for a retain cell whose teacher posterior mean lies
    within ``radii[f]`` of some forget cell ``f``'s (``forget_latent[f]``), else 1.
    """

    def __init__(
        self,
        module,
        teacher,
        *,
        distill_weight: float,
        decoder_weight: float,
        factors: list[float],
        forget_latent: torch.Tensor | None = None,
        radii: torch.Tensor | None = None,
        **kwargs,
    ):
        super().__init__(module, **kwargs)
        self.teacher = teacher
        self.distill_weight = float(distill_weight)
        self.decoder_weight = float(decoder_weight)
        self.factors = list(factors)
        guard = forget_latent is not None
        self.register_buffer("forget_latent", forget_latent if guard else torch.zeros(0, 1))
        self.register_buffer("radii", radii if guard else torch.zeros(0))

    def weight_at(self, epoch: int) -> float:
        """The distillation weight of ``epoch`` (after the last epoch: that of the last)."""
        return self.distill_weight * self.factors[min(int(epoch), len(self.factors) - 1)]

    def keep(self, teacher_loc: torch.Tensor) -> torch.Tensor:
        """1.0 for the cells whose distillation term counts, 0.0 for the guarded neighbours of
        the forget cells."""
        if self.forget_latent.shape[0] == 0:
            return torch.ones(teacher_loc.shape[0], device=teacher_loc.device)
        dist = torch.cdist(teacher_loc.float(), self.forget_latent, compute_mode=_EXACT)
        return (~(dist <= self.radii).any(dim=1)).float()

    def divergence(self, tensors) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-cell ``D(x)`` (gradients through the student, in training mode) and the
        teacher's posterior means."""
        with torch.no_grad(), evaluation_mode(self.teacher):
            qz_t, rho_t = posterior_and_scale(self.teacher, tensors)
        qz_s, rho_s = posterior_and_scale(self.module, tensors)
        d = posterior_kl(qz_t, qz_s)
        if self.decoder_weight:
            d = d + self.decoder_weight * expression_kl(rho_t, rho_s)
        return d, qz_t.loc

    def unlearning_loss(self, retain, forget):
        out = self.retain_elbo(retain)
        l_r = out.nelbo.mean()
        weight = self.weight_at(self.current_epoch)
        terms = {"retain_nelbo": float(l_r.detach()), "distill_weight": weight}
        if weight == 0:
            return l_r, terms, out.loss_output
        d, loc = self.divergence(retain)
        keep = self.keep(loc)
        l_d = (d * keep).sum() / d.shape[0]
        terms["distill_divergence"] = float(l_d.detach())
        terms["guarded_fraction"] = float(1 - keep.mean())
        return l_r + weight * l_d, terms, out.loss_output


@register(
    "distill",
    guarantee=(
        "none: a fresh model, but distilled from the original's outputs, which carry the "
        "forget cells"
    ),
    reference=(
        "knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv:1503.02531) with "
        "SCRUB's divergence (Kurmanji et al. 2023)"
    ),
    status="research baseline",
    measured=(
        "27/54: pbmc68k's six forget sets x originals of 60 / 200 / 400 epochs x 3 seeds (0 / "
        "15 / 12 of 18); equivalent 30, remembers 18, over-forgets 2; median 0.17x a retrain "
        "(benchmarks/RESULTS.md, approximate_matrix)"
    ),
)
def distill(
    task,
    *,
    max_epochs: int = 25,
    lr: float = 6e-3,
    distill_weight: float = 3.0,
    decoder_weight: float = 1.0,
    guard_neighbors: int = 15,
    anneal_fraction: float = 0.5,
    weight_decay: float = 1e-6,
    batch_size: int = 128,
    retain_sample: int | str | None = None,
    accelerator: str = "auto",
    devices: Any = "auto",
    enable_progress_bar: bool = True,
    **trainer_kwargs,
):
    """Distil the original into a fresh model on the retain cells, guarding against the memory
    the teacher transfers.

    Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
    Network", arXiv:1503.02531): a student matches a frozen teacher's output distribution; here
    the teacher is the original model and its outputs, as in SCRUB's min-steps (Kurmanji et al.
    2023, "Towards Unbounded Machine Unlearning", NeurIPS; :func:`scrub`), are the posterior
    ``q(z|x)`` and the decoder's normalized expression.  The student is a **fresh**
    initialisation of the same architecture (``task.new_model(copy_weights=False)``, drawn
    from the request's seed) trained on the retain cells only, with Adam on

    ``mean nELBO_S(x) + w_e * mean keep(x) [KL(q_T(z|x) || q_S(z|x)) + decoder_weight *
    KL(rho_T(x) || rho_S(x))]``

    over retain minibatches (:class:`DistillPlan`; KL weight 1 in the ELBO).  The student never
    sees a forget cell, but the teacher's outputs on retain cells carry its fit of the forget
    cells (a distilled student without a guard remembers them: mean z +2.5 in the measurement
    that motivated the guards), so **it is approximate**; the per-cell equivalence test is the
    judge.  Two guards against that transferred memory:

    - **neighbour exclusion** (``guard_neighbors = k > 0``): the retain cells nearest to the
      forget cells in the teacher's latent space get the ELBO term only.  For each forget cell
      ``f``, ``r_f`` is the Euclidean distance from its teacher posterior mean to that of its
      ``k``-th nearest retain cell among a seeded sample of ``retain_sample`` retain cells; a
      retain cell is excluded when its teacher posterior mean lies within ``r_f`` of some forget
      cell's (exactly the ``k`` nearest neighbours of each forget cell within the sample;
      about ``k x n_retain / sample`` of them in all).  The teacher sees the forget cells only
      in eval mode, to locate them.
    - **annealing** (``anneal_fraction = a > 0``): ``w_e = distill_weight`` for the first
      epochs, then a linear ramp to 0 over the last ``round(a * max_epochs)`` epochs
      (:func:`anneal_factors`): the student ends on the retain ELBO alone.

    Parameters
    ----------
    task
        The :class:`~scvi_unlearn.unlearn.UnlearningTask`.
    max_epochs
        Budget: epochs, each over a fresh random sample of ``retain_sample`` retain training
        cells (every one on data with at most 2,048 retain training cells), so the cost is
        ``max_epochs x retain_sample`` cell passes (each with a teacher forward pass and a
        second student pass at the posterior mean) whatever the dataset's size.
    lr
        Adam learning rate (constant).
    distill_weight
        Weight of the distillation term, ``>= 0`` (0: a plain fresh retrain on the sample).
    decoder_weight
        Weight of the decoder-output KL inside the divergence, ``>= 0``.
    guard_neighbors
        ``k`` of the neighbour exclusion, an int ``>= 0`` (0: no exclusion).
    anneal_fraction
        Share of the budget, in ``[0, 1]``, over which the distillation weight falls to 0
        (0: constant weight).
    weight_decay
        Adam weight decay.
    batch_size
        Retain cells per minibatch.
    retain_sample
        Retain training cells per epoch (a fresh random sample each epoch) and retain cells of
        the neighbour search (one seeded sample): ``None`` (default) 10 x the forget cells, at
        least 2,048 and at most 16,384 (every retain cell on smaller data); ``"all"`` or an int
        to override (:func:`~scvi_unlearn.unlearn.retain_sample_size`).
    accelerator, devices, enable_progress_bar, **trainer_kwargs
        As in :meth:`scvi.model.SCVI.train`.

    Raises
    ------
    ValueError
        On a bad hyper-parameter (before any training).

    Notes
    -----
    The record's log starts with ``{"step": 0, "guard_neighbors", "guard_sample",
    "guarded_in_sample", "guard_radius"}`` (``guarded_in_sample``: the share of the sampled
    retain cells excluded; ``guard_radius``: the mean ``r_f``; both 0 without the guard),
    followed by the per-step terms (``retain_nelbo``, ``distill_weight``,
    ``distill_divergence``, ``guarded_fraction`` of the minibatch).  The returned model has the
    original's training recipe (as every method's).  The retain sample of the neighbour search
    is recorded as ``budget["retain_cells_guard"]``.

    Defaults (measured) with ``python -m benchmarks run verdict --config distill`` and
    ``--config distill_weights``: pbmc68k, the 200-epoch original of
    ``docs/reproduction.md``, forget = the 22 "CD56+ NK" and the 90 "CD14+ Monocyte" members,
    seeds 0-2, 24 settings (no guard / neighbour exclusion ``k = 15`` / annealing over the last
    half / both; 10, 20, 25, 30, 40 epochs; weight 1 or 3; lr 6e-3), each run judged by the
    per-cell equivalence test against 5 default-recipe retrains.  The retain sample is every
    retain training cell there (424-469 cells), so the budget is epochs over all of them.
    The defaults (``max_epochs=25, distill_weight=3, guard_neighbors=15,
    anneal_fraction=0.5``): all checks passed in 6 of 6 runs (mean z -0.67 to +0.22), at
    0.15-0.17x a default retrain's wall time (``fast_retrain``, 30 epochs at 1.2e-2: 6 of 6 at
    0.11-0.18x).  The budget decides more than the guard: 10 epochs over-forget with every
    guard (0 of 6; mean z -2.1 to -7.3, held-out ELBO of the other types 2.7-4.6% below the
    retrains'), 20 epochs pass 2-3 of 6, 25 and 30 epochs pass 5-6 of 6 with or without a
    guard.  The guard shows at 40 epochs, where the distilled student starts to remember the
    monocytes: without a guard mean z +1.0 to +1.3 (3 of the 6 monocyte runs fail; the
    measurement that opened this work, 40 epochs without a guard, had +2.5), with annealing
    alone +0.7 to +1.2 (2 of 6 fail), with both guards +0.7 to +0.9 (6 of 6 pass; all 18 NK
    runs at 40 epochs pass).  Neighbour exclusion alone was measured only at 10-30 epochs
    (6 of 6 at 30, as without a guard).
    On three forget sets not used to choose them (a random 50, the 38 "CD8+ Cytotoxic T", 10
    of the NK cells) the defaults passed 3 of 9 runs (``fast_retrain`` 2 of 9): the membership
    test found them equivalent or without power in 9 of 9 (mean z -1.66 to +0.38), but on the
    random set the same-type check failed in 3 of 3 (held-out ELBO of the other types -0.2% to
    -1.7% of the retrains'; every ``distill`` setting failed it there, 0 of 18) and on CD8+
    Cytotoxic T in 2 of 3.  (Of the other five 25-epoch settings, judged on the same three
    sets after the choice, the unguarded weight 3 passed 6 of 9, the guarded weight 1 5 of 9.)
    The retain-ELBO drop was -0.3% to +1.6% in all 36 runs of the six 25-epoch settings there
    (``fast_retrain`` -0.9% to +0.9%).
    **It does not beat** ``fast_retrain`` **at equal cost**: on this small dataset the retain
    sample is every cell, both train for 25-30 epochs over them, and ``distill``'s teacher pass
    and second student pass cost about what its 5 fewer epochs save.  With a retain sample much
    smaller than the data (its point; ``python -m benchmarks run scaling --config
    retain_sample_exact`` and ``--config retain_sample_20k``, 6,000 / 20,000 simulated cells,
    512 / 2,048 cells an epoch, docs/scale.md) it is dominated by ``fast_retrain`` given the
    same cell passes (other types' held-out ELBO -2.42% / -0.36% against -0.41% / +0.92%); its
    per-cell verdict there is not measured.  The per-cell verdict is measured only on this
    200-epoch original.  Across training lengths (``python -m benchmarks run defaults --config
    across --set methods='["distill"]'``: pbmc68k originals of 60, 200 and 400 epochs, 9 forget
    sets, a simulated dataset) the held-out ELBO of the other types stays within 2% of the
    original's in 26 of 28 settings; the random 60 cells on the 200- and 400-epoch originals
    lose 3.5% and 2.5%, and the retain check stops both.
    """
    max_epochs = int_argument("max_epochs", max_epochs, 1)
    guard_neighbors = int_argument("guard_neighbors", guard_neighbors, 0)
    int_argument("batch_size", batch_size, 1)
    lr = number_argument("lr", lr, positive=True)
    distill_weight = number_argument("distill_weight", distill_weight)
    decoder_weight = number_argument("decoder_weight", decoder_weight)
    weight_decay = number_argument("weight_decay", weight_decay)
    anneal_fraction = fraction_argument("anneal_fraction", anneal_fraction)
    retain_sample_size(task.n_forget, task.train_indices.size, retain_sample)  # validates it

    model = task.new_model(copy_weights=False)
    teacher = task.teacher_module
    forget_latent = radii = None
    entry = {"step": 0, "guard_neighbors": float(guard_neighbors)}
    entry.update({"guard_sample": 0.0, "guarded_in_sample": 0.0, "guard_radius": 0.0})
    if guard_neighbors and distill_weight:
        every = np.concatenate([task.train_indices, task.validation_indices])
        size = retain_sample_size(task.n_forget, every.size, retain_sample)
        task.budget["retain_cells_guard"] = size
        positions = sample_positions(every, size, task.seed)
        retain_latent = teacher_latent(teacher, task.adata_manager, positions)
        forget_latent = teacher_latent(
            teacher, task.forget_manager, np.arange(task.forget_adata.n_obs)
        )
        radii = neighbour_radii(forget_latent, retain_latent, guard_neighbors)
        inside = (torch.cdist(retain_latent, forget_latent, compute_mode=_EXACT) <= radii).any(
            dim=1
        )
        entry.update(
            {
                "guard_sample": float(size),
                "guarded_in_sample": float(inside.float().mean()),
                "guard_radius": float(radii.mean()),
            }
        )
    task.log.append(entry)
    plan = DistillPlan(
        model.module,
        teacher,
        distill_weight=distill_weight,
        decoder_weight=decoder_weight,
        factors=anneal_factors(max_epochs, anneal_fraction),
        forget_latent=forget_latent,
        radii=radii,
        lr=lr,
        weight_decay=weight_decay,
        kl_weight=1.0,
        step_log=task.log,
    )
    task.fit(
        model,
        plan,
        task.datamodule(batch_size, with_forget=False, retain_sample=retain_sample),
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        enable_progress_bar=enable_progress_bar,
        **trainer_kwargs,
    )
    return model
