"""The membership critic shared by ``extragradient`` and ``mi_regularized``.

Both methods train a small classifier (the *critic*) to tell forget cells from non-members
(cells the original never trained on) using differentiable per-cell features of the current
VAE, and train the VAE so that the critic cannot: forget cells should look like *unseen* cells
(retrain equivalence), not like retain cells (that would be over-forgetting).  This module holds
what the two methods share:

* :func:`membership_features`: per-cell features of a VAE, differentiable in its weights and
  deterministic (``z`` at the posterior mean, eval mode; no sampling noise);
* :class:`MembershipCritic`: a spectrally normalised MLP on those features, standardized with
  fixed statistics of the non-members under the original model;
* :func:`balanced_bce` and :func:`mi_lower_bound`: the critic's class-balanced cross-entropy
  and the variational lower bound ``I(F; Y) >= H(Y) - CE = log 2 - CE`` on the mutual
  information between the features ``F`` and membership ``Y`` (Barber & Agakov 2003);
* :func:`nonmember_data`: where the non-members come from (the ``nonmembers`` hyper-parameter);
* :class:`CriticPlan`: the training-plan base (two optimizers, manual optimisation, a cycled
  non-member loader).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.dataloaders import AnnDataLoader
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from scvi_unlearn.unlearn.core._budget import retain_sample_size, sample_positions
from scvi_unlearn.unlearn.core._losses import evaluation_mode, posterior_and_likelihood
from scvi_unlearn.unlearn.core._plan import UnlearningTrainingPlan

#: columns of :func:`membership_features`, in order
FEATURE_NAMES = ("reconstruction_per_count", "kl_z", "qz_logvar_mean", "qz_mean_norm")
#: fewest non-member cells accepted
MIN_NONMEMBERS = 2


def membership_features(module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-cell membership features of ``module`` (cells x :data:`FEATURE_NAMES`).

    The reconstruction negative log-likelihood of the counts at ``z`` = posterior mean divided
    by the cell's total count, the analytic ``KL(q(z|x) || N(0, I))``, the mean posterior
    log-variance and the norm of the posterior mean: the ELBO terms and latent summaries the
    membership attacks use (:func:`scvi_unlearn.attack.attack_features`), here deterministic
    and differentiable.  Run it under :func:`~scvi_unlearn.unlearn.core._losses.evaluation_mode` so
    that the cells do not enter BatchNorm statistics.
    """
    x = tensors[REGISTRY_KEYS.X_KEY]
    qz, px = posterior_and_likelihood(module, tensors)
    reconstruction = -px.log_prob(x).sum(-1)
    library = x.sum(-1).clamp_min(1.0)
    var = qz.scale.pow(2)
    kl_z = 0.5 * (var + qz.loc.pow(2) - 1.0 - var.log()).sum(-1)
    return torch.stack(
        [reconstruction / library, kl_z, var.log().mean(-1), qz.loc.norm(dim=-1)], dim=-1
    )


class MembershipCritic(nn.Module):
    """A spectrally normalised MLP scoring membership (logit; higher = forget cell).

    Spectral normalisation (Miyato et al. 2018, "Spectral Normalization for Generative
    Adversarial Networks", ICLR) bounds each layer's Lipschitz constant by 1, which keeps the
    critic smooth in its input, so that the VAE receives useful gradients and the min-max game
    is better conditioned.  Inputs are standardized with fixed statistics (:meth:`standardize`).

    Parameters
    ----------
    n_features
        Number of input features.
    n_hidden
        Width of the hidden layers.
    n_layers
        Number of hidden layers.
    """

    def __init__(
        self, n_features: int = len(FEATURE_NAMES), n_hidden: int = 32, n_layers: int = 2
    ):
        super().__init__()
        if n_hidden < 1 or n_layers < 1:
            raise ValueError(f"critic_hidden and critic_layers must be >= 1, got {n_hidden}, "
                             f"{n_layers}.")  # fmt: skip
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(n_layers):
            layers += [spectral_norm(nn.Linear(width, n_hidden)), nn.LeakyReLU(0.2)]
            width = n_hidden
        layers.append(spectral_norm(nn.Linear(width, 1)))
        self.net = nn.Sequential(*layers)
        self.register_buffer("shift", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    @torch.no_grad()
    def standardize(self, features: torch.Tensor) -> None:
        """Fix the input standardization to the mean and sd of ``features`` (cells x features)."""
        self.shift.copy_(features.mean(0))
        sd = features.std(0) if features.shape[0] > 1 else torch.ones_like(self.scale)
        self.scale.copy_(torch.where(sd > 1e-6, sd, torch.ones_like(sd)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Membership logits, one per cell."""
        return self.net((features - self.shift) / self.scale).squeeze(-1)


def balanced_bce(logits_forget: torch.Tensor, logits_nonmember: torch.Tensor) -> torch.Tensor:
    """Class-balanced binary cross-entropy of the critic (forget = 1, non-member = 0).

    Each class contributes half, whatever the batch sizes, so membership has prior 1/2 and
    entropy ``H(Y) = log 2``; a critic at chance scores ``log 2``.
    """
    bce = nn.functional.binary_cross_entropy_with_logits
    return 0.5 * (
        bce(logits_forget, torch.ones_like(logits_forget))
        + bce(logits_nonmember, torch.zeros_like(logits_nonmember))
    )


def mi_lower_bound(cross_entropy: torch.Tensor) -> torch.Tensor:
    """``log 2 - CE``: the Barber-Agakov lower bound on ``I(F; Y)`` (nats) for balanced ``Y``.

    ``I(F; Y) = H(Y) - H(Y | F) >= H(Y) - E[-log q(Y | F)]`` for any classifier ``q`` (Barber &
    Agakov 2003, "The IM algorithm: a variational approach to information maximization",
    NeurIPS); the bound is tight when ``q`` is the true posterior of membership.
    """
    return math.log(2.0) - cross_entropy


@contextlib.contextmanager
def nonmember_data(task, nonmembers: AnnData | str) -> Iterator[tuple[object, np.ndarray]]:
    """Yield ``(manager, indices)`` of the non-member cells a critic compares forget cells with.

    Parameters
    ----------
    task
        The :class:`~scvi_unlearn.unlearn.UnlearningTask`.
    nonmembers
        ``"validation"``: the retain validation cells of the original's training split (they
        steered early stopping but never received a gradient); or an AnnData of cells the
        original never trained on (e.g. held-out cells, same genes), registered on a private
        copy for the duration of the block.  At most
        :func:`~scvi_unlearn.unlearn.core._budget.retain_sample_size` of them (a seeded random
        sample; every cell on small data) are used, so the cost follows the forget set.

    Raises
    ------
    ValueError
        For ``"validation"`` when the model has fewer than :data:`MIN_NONMEMBERS` retain
        validation cells, for an AnnData with cells the original trained on, or with too few
        cells; :class:`TypeError` for any other value.
    """
    from scvi_unlearn._evaluation import evaluation_adata
    from scvi_unlearn.attack._evaluation_data import check_unseen_adata

    if isinstance(nonmembers, str):
        if nonmembers != "validation":
            raise ValueError(
                "nonmembers must be 'validation' or an AnnData of unseen cells, got "
                f"{nonmembers!r}."
            )
        if task.validation_indices.size < MIN_NONMEMBERS:
            raise ValueError(
                f"nonmembers='validation' needs at least {MIN_NONMEMBERS} retain validation "
                f"cells, but the model has {task.validation_indices.size} (trained with "
                "train_size=1?). Pass nonmembers=<AnnData of cells the model never trained "
                "on>, e.g. held-out cells of scvi_unlearn.data.membership_split."
            )
        yield task.adata_manager, _budgeted(task, task.validation_indices)
        return
    accepted = "'validation' or an AnnData of cells the model never trained on"
    check_unseen_adata(task.original, nonmembers, "nonmembers", accepted, MIN_NONMEMBERS)
    with evaluation_adata(task.original, nonmembers) as sub:
        manager = task.original.get_anndata_manager(sub, required=True)
        yield manager, _budgeted(task, np.arange(sub.n_obs))


def _budgeted(task, indices: np.ndarray) -> np.ndarray:
    """A seeded random sample of ``indices`` of the default retain-sample size."""
    return sample_positions(indices, retain_sample_size(task.n_forget, indices.size), task.seed)


def features_of(
    module, manager, indices: np.ndarray | None, batch_size: int = 256
) -> torch.Tensor:
    """:func:`membership_features` of the cells ``indices`` (``None``: all) of a registered
    AnnData, without gradient."""
    loader = AnnDataLoader(manager, indices=indices, batch_size=batch_size, shuffle=False)
    device = next(module.parameters()).device
    out = []
    with torch.no_grad(), evaluation_mode(module):
        for tensors in loader:
            out.append(membership_features(module, {k: v.to(device) for k, v in tensors.items()}))
    return torch.cat(out)


def pretrain_critic(
    critic: MembershipCritic, f_forget: torch.Tensor, f_nonmember: torch.Tensor, *, steps: int,
    lr: float,
) -> float:  # fmt: skip
    """Standardize ``critic`` on the non-members and train it ``steps`` full-batch Adam steps.

    The game then starts from a critic that already separates the original's forget cells
    from non-members, so the VAE's first adversarial gradients point somewhere.  Returns the
    critic's final balanced cross-entropy.
    """
    critic.standardize(f_nonmember)
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    x = torch.cat([f_forget, f_nonmember])
    n = f_forget.shape[0]
    bce = torch.tensor(math.log(2.0))
    for _ in range(steps):
        logits = critic(x)
        bce = balanced_bce(logits[:n], logits[n:])
        opt.zero_grad()
        bce.backward()
        opt.step()
    return float(bce.detach())


def check_game(adversary_weight: float, critic_warmup: int, lr: float, critic_lr: float) -> None:
    """Clear errors for hyper-parameters of the critic game of both methods."""
    if not adversary_weight >= 0:
        raise ValueError(f"The membership weight must be >= 0, got {adversary_weight}.")
    if isinstance(critic_warmup, bool) or not isinstance(critic_warmup, int) or critic_warmup < 0:
        raise ValueError(f"critic_warmup must be an int >= 0, got {critic_warmup!r}.")
    if not (lr > 0 and critic_lr > 0):
        raise ValueError(f"lr and critic_lr must be > 0, got {lr}, {critic_lr}.")


class CriticPlan(UnlearningTrainingPlan):
    """Base plan of the critic methods: a VAE optimizer, a critic optimizer, non-member batches.

    Subclasses implement :meth:`training_step` (manual optimisation).  Non-members come from a
    cycled :class:`~scvi.dataloaders.AnnDataLoader` (shuffled with the seeded global generator);
    their features are computed without gradient: like real data in a GAN, they are the target
    the forget cells must become indistinguishable from, and the VAE is not trained on them.

    Parameters
    ----------
    module
        The scVI module being unlearned.
    critic
        A :class:`MembershipCritic`, already standardized.
    nonmember_loader
        Loader of non-member minibatches.
    adversary_weight
        Weight ``lambda`` of the membership term in the VAE's objective.
    critic_lr
        Adam learning rate of the critic.
    **kwargs
        :class:`~scvi_unlearn.unlearn.UnlearningTrainingPlan` arguments (``lr`` is the VAE's).
    """

    #: optimizer class of both players
    optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam

    def __init__(
        self, module, critic, nonmember_loader, *, adversary_weight: float, critic_lr: float,
        **kwargs,
    ):  # fmt: skip
        super().__init__(module, **kwargs)
        self.critic = critic
        self.nonmember_loader = nonmember_loader
        self.adversary_weight = float(adversary_weight)
        self.critic_lr = float(critic_lr)
        self.automatic_optimization = False
        self._nonmember_iter = None

    def next_nonmembers(self) -> dict[str, torch.Tensor]:
        """The next non-member minibatch on the plan's device (the loader is cycled)."""
        if self._nonmember_iter is not None:
            batch = next(self._nonmember_iter, None)
            if batch is not None:
                return {k: v.to(self.device) for k, v in batch.items()}
        self._nonmember_iter = iter(self.nonmember_loader)
        return self.next_nonmembers()

    def features(self, tensors, *, grad: bool) -> torch.Tensor:
        """:func:`membership_features` of the current VAE in eval mode (with or without grad)."""
        with torch.set_grad_enabled(grad), evaluation_mode(self.module):
            return membership_features(self.module, tensors)

    def critic_ce(self, f_forget: torch.Tensor, f_nonmember: torch.Tensor) -> torch.Tensor:
        """Balanced cross-entropy of the critic on forget vs non-member features."""
        logits = self.critic(torch.cat([f_forget, f_nonmember]))
        n = f_forget.shape[0]
        return balanced_bce(logits[:n], logits[n:])

    def log_step(self, loss: torch.Tensor, terms: dict[str, float], retain_out) -> None:
        """Record the step (per-step log, Lightning's train loss and ELBO metrics)."""
        self.record_step(loss, terms)
        n = int(retain_out.nelbo.shape[0])
        self.log("train_loss", loss.detach(), on_epoch=True, prog_bar=True, batch_size=n)
        self.compute_and_log_metrics(retain_out.loss_output, self.train_metrics, "train")

    def configure_optimizers(self):
        """Two optimizers of :attr:`optimizer_class`: the VAE's (``lr``, ``weight_decay``,
        ``eps`` as scvi-tools') and the critic's (``critic_lr``)."""
        vae = [p for p in self.module.parameters() if p.requires_grad]
        return [
            self.optimizer_class(vae, lr=self.lr, weight_decay=self.weight_decay, eps=self.eps),
            self.optimizer_class(self.critic.parameters(), lr=self.critic_lr),
        ]


def fit_with_critic(
    task,
    model,
    make_plan: Callable[[MembershipCritic, AnnDataLoader], CriticPlan],
    *,
    nonmembers: AnnData | str,
    critic_hidden: int,
    critic_layers: int,
    critic_warmup: int,
    critic_lr: float,
    batch_size: int,
    forget_batch_size: int | None,
    retain_sample: int | str | None,
    max_epochs: int,
    **fit_kwargs,
) -> None:
    """Train ``model`` with the plan ``make_plan(critic, nonmember_loader)`` through
    :meth:`~scvi_unlearn.unlearn.UnlearningTask.fit`.

    Resolves the non-members (:func:`nonmember_data`), builds the critic, standardizes and
    pre-trains it on the original's features of all forget and non-member cells
    (:func:`pretrain_critic`; its cross-entropy is logged as step -1), and cycles non-members
    in minibatches of the forget batch size.
    """
    forget_batch = int(forget_batch_size or batch_size)
    with nonmember_data(task, nonmembers) as (manager, indices):
        critic = MembershipCritic(n_hidden=critic_hidden, n_layers=critic_layers)
        f_forget = features_of(model.module, task.forget_manager, None)
        f_non = features_of(model.module, manager, indices)
        ce = pretrain_critic(critic, f_forget, f_non, steps=critic_warmup, lr=critic_lr)
        task.log.append({"epoch": -1, "step": -1, "loss": ce, "critic_ce": ce})
        loader = AnnDataLoader(manager, indices=indices, batch_size=forget_batch, shuffle=True)
        task.fit(
            model,
            make_plan(critic, loader),
            task.datamodule(
                batch_size,
                with_forget=True,
                forget_batch_size=forget_batch,
                retain_sample=retain_sample,
            ),
            max_epochs=max_epochs,
            **fit_kwargs,
        )
