"""``dp_sgd``: exact unlearning by a differentially private retrain (DP-SGD through Opacus).

The method trains a fresh scVI on the retain cells only, like ``retrain``, but with DP-SGD
(Abadi et al. 2016): every step samples cells by Poisson sampling, clips each cell's gradient to
an L2 norm of ``max_grad_norm`` and adds Gaussian noise calibrated by Opacus' privacy accountant
(Yousefpour et al. 2021) so that the whole run is :math:`(\\varepsilon, \\delta)`-differentially
private with respect to every retain training cell.  The forget cells are simply absent: like any
exact retrain, the result does not depend on them at all.

Implementation (what Opacus needs; details in ``docs/dp_sgd.md``):

* the model is a new instance of the original's class with the original's ``init_params_``
  except ``use_batch_norm="none", use_layer_norm="both"`` (BatchNorm mixes the cells of a batch,
  so a per-cell gradient is not defined; scVI's LayerNorm has no parameters);
* the scVI module is wrapped in :class:`PerCellELBO`, whose ``forward`` takes tensors and returns
  one negative ELBO per cell, and its gene dispersion ``px_r`` (a parameter of the VAE itself,
  used by broadcasting) is re-expressed as an ``nn.Linear`` on a constant / one-hot input, so that
  Opacus sees only ``nn.Linear`` layers;
* per-cell clipping uses Opacus' ghost clipping (``grad_sample_mode="ghost"``): per-cell gradient
  norms from layer activations and output gradients, then a second backward pass of the clipped
  per-cell losses; no per-cell gradient is materialised.  Both passes start from the tensors the
  loss reads (``_dp_split``): the likelihood, most of the backward cost, is differentiated once
  per step, with the same norms and clipped sum as Opacus' own two passes (1.31x a non-private
  epoch instead of 1.61x, ``docs/dp_sgd.md``, "Cost"); ``dp_accounting_["likelihood_passes"]``
  says which ran;
* parameters that receive no gradient (``l_encoder`` with the observed library size, the unused
  dispersion head) are frozen, as Opacus requires;
* Opacus records activations only in train mode, so the module trains in train mode (dropout on).

:func:`train_private` trains a model privately from the start with the same machinery.

References
----------
Abadi et al. (2016), "Deep Learning with Differential Privacy", ACM CCS, 308-318.
Yousefpour et al. (2021), "Opacus: User-Friendly Differential Privacy Library in PyTorch",
arXiv:2109.12298.
"""

from __future__ import annotations

import math

import numpy as np

from scvi_unlearn.unlearn.core._registry import register
from scvi_unlearn.unlearn.private._dp_training import (
    _attach_accounting,
    _check_hyperparameters,
    _check_no_batch_norm,
    _device,
    _warn_library_prior,
    train_dp_module,
)

#: the architecture change DP-SGD needs (scVI's LayerNorm has no parameters)
LAYER_NORM = {"use_batch_norm": "none", "use_layer_norm": "both"}


def _layer_norm_model(task):
    """A fresh model of the original's class and init arguments, but with LayerNorm."""
    return task.new_model(copy_weights=False, **LAYER_NORM)


# ---------------------------------------------------------------------------- the method
@register(
    "dp_sgd",
    from_scratch=True,
    private=True,
    guarantee=(
        "exact (never reads a forget cell) and (epsilon, delta)-differentially private "
        "with respect to each retain training cell (target_epsilon=8 by default; the "
        "accountant's epsilon is dp_epsilon_)"
    ),
    reference=(
        "DP-SGD (Abadi et al. 2016, ACM CCS) through Opacus (Yousefpour et al. 2021, "
        "arXiv:2109.12298)"
    ),
    status="recommended",
    measured=(
        "0/3 CD56+ NK, 0/3 CD34+, 0/3 CD14+ Monocyte (fails the utility checks: the cost of "
        "epsilon 8 on 469 retain cells); 0.75-0.82x (0.95x on a loaded run; "
        "docs/reproduction.md)"
    ),
    benchmark=True,
)
def dp_sgd(
    task,
    *,
    target_epsilon: float = 8.0,
    target_delta: float | None = None,
    max_grad_norm: float = 1.0,
    max_epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-2,
    accountant: str = "prv",
    log_loss: bool = False,
    accelerator: str = "auto",
    enable_progress_bar: bool = True,
):
    """Exact unlearning by a differentially private retrain on the retain cells (DP-SGD).

    A fresh model of the original's class with the original's ``init_params_`` except
    ``use_batch_norm="none", use_layer_norm="both"`` (BatchNorm is not compatible with
    per-cell gradients), trained on the retain training cells only with DP-SGD
    (Abadi et al. 2016) through Opacus (Yousefpour et al. 2021)
    (``PrivacyEngine.make_private_with_epsilon``: Poisson sampling, per-cell gradient
    clipping by ghost clipping, Gaussian noise calibrated by the accountant).  The loss is the
    per-cell negative ELBO with KL weight 1 from the first step (no warm-up), Adam.

    Guarantees: like ``retrain``, the model never sees a forget cell, so it does not depend on
    them at all (exact unlearning); in addition the training is
    ``(epsilon, delta)``-differentially private with respect to each retain training cell
    (add or remove one cell), with the ``epsilon`` reported by Opacus' accountant for the
    steps actually taken.  The guarantee covers the trained weights and anything computed
    from them alone; not the AnnData bound to the model (it holds the retain cells), the
    registry (gene names, categories), the retain ELBO check of ``unlearn_record_["checks"]``
    (a statistic of the retain validation cells, which are not trained on), nor the losses
    recorded with ``log_loss=True``.  See ``docs/dp_sgd.md``.

    Parameters
    ----------
    task
        The :class:`~scvi_unlearn.unlearn.UnlearningTask`.
    target_epsilon
        Privacy budget ``epsilon`` (> 0) of the whole run; the noise multiplier is chosen by
        Opacus so that the accountant's epsilon after ``max_epochs`` epochs is at most this.
    target_delta
        ``delta`` in (0, 1); ``None`` (default): ``1 / n**2`` for ``n`` retain training cells.
    max_grad_norm
        Per-cell clipping norm ``C`` (> 0) of the gradient of the per-cell negative ELBO.
    max_epochs
        Epochs (each ``ceil(n / batch_size)`` Poisson-sampled steps).  Fixed in advance: it
        enters the noise calibration.
    batch_size
        Expected number of cells per step (sampling rate ``1 / ceil(n / batch_size)``).
    lr
        Adam learning rate.
    accountant
        Opacus accountant: ``"prv"`` (default, privacy random variables, tightest), ``"rdp"``
        or ``"gdp"``.
    log_loss
        Record the mean training loss of each epoch in ``unlearn_record_["log"]`` (a
        non-private statistic of the retain cells; off by default).
    accelerator
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"gpu"`` / ``"cuda"`` or ``"mps"``.
    enable_progress_bar
        Show a progress bar over epochs.

    Returns
    -------
    The new model (bound to ``task.adata``, trained, eval mode) with the accounting in saved
    attributes: ``dp_epsilon_`` and ``dp_delta_`` (the achieved budget) and
    ``dp_accounting_`` (noise multiplier, sample rate, steps, ...; see
    :func:`train_dp_module`).  ``unlearn_record_`` has no slot for method results, so these
    live on the model; the last entry of ``unlearn_record_["log"]`` repeats ``epsilon`` and
    ``delta``.

    Notes
    -----
    Defaults, measured once on pbmc68k (``python -m benchmarks run dp --config grid``; the
    setting of ``docs/unlearning.md``: 424 retain training cells after forgetting the 22
    "CD56+ NK" members; mean held-out ELBO of the 209 non-members, 8 draws; ``epsilon = 8``,
    ``delta = 1 / n**2``; tables in ``docs/dp_sgd.md``): over ``max_epochs`` in {20, 50, 100}
    x ``batch_size`` in {64, 128, 256} x ``lr`` in {1e-3, 3e-3, 1e-2} (seed 0), the best
    configurations lie within 1% of each other; ``50 / 256 / 1e-2`` gives -769.1 (3 seeds,
    sd 0.9) at two thirds of the time of ``100 / 64 / 3e-3`` (-768.7); ``lr = 1e-3`` is
    worst in every row (-798 to -910) and ``lr = 3e-2`` is worse again (-815.5).
    ``max_grad_norm`` in
    {0.1, 1, 10} gives the same ELBO to 0.01 nats: a per-cell negative ELBO (hundreds of nats)
    has gradient norms far above any of these, so every gradient is clipped and Adam's update
    does not depend on the scale.  A non-private ``retrain`` reaches -685.2 (3 seeds): at this
    size DP costs 12% of held-out ELBO at ``epsilon = 8`` and 33% at ``epsilon = 1``, beyond
    the 5% tolerance of ``unlearn``'s retain check, which then warns.

    Noise comes from torch's ordinary generator (Opacus' ``secure_mode=False``), so runs are
    reproducible from the request's seed; Opacus recommends its secure mode (a
    cryptographically secure generator, robust to floating-point attacks) for a production
    release.  Hyper-parameters chosen by looking at the data are not covered by the
    guarantee.  With ``use_observed_lib_size=False`` the library-size prior is computed from
    the cells without noise: a warning says so.

    References
    ----------
    Abadi et al. (2016), "Deep Learning with Differential Privacy", ACM CCS.
    Yousefpour et al. (2021), "Opacus: User-Friendly Differential Privacy Library in
    PyTorch", arXiv:2109.12298.
    """
    _check_hyperparameters(
        target_epsilon, target_delta, max_grad_norm, max_epochs, batch_size, lr, accountant
    )
    _device(accelerator)
    model = _layer_norm_model(task)
    _warn_library_prior(model)
    accounting = train_dp_module(
        model.module,
        task.adata_manager,
        task.train_indices,
        target_epsilon=target_epsilon,
        target_delta=target_delta,
        max_grad_norm=max_grad_norm,
        max_epochs=max_epochs,
        batch_size=batch_size,
        lr=lr,
        accountant=accountant,
        accelerator=accelerator,
        enable_progress_bar=enable_progress_bar,
        log=task.log,
        log_loss=log_loss,
    )
    model.train_recipe_ = task.retain_recipe()
    _attach_accounting(model, accounting)
    model.is_trained_ = True
    return model


# ---------------------------------------------------------------------------- DP original
def train_private(
    model,
    *,
    train_size: float = 0.9,
    seed: int | None = 0,
    target_epsilon: float = 8.0,
    target_delta: float | None = None,
    max_grad_norm: float = 1.0,
    max_epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-2,
    accountant: str = "prv",
    accelerator: str = "auto",
    enable_progress_bar: bool = True,
):
    """Train a (LayerNorm) :class:`~scvi_unlearn.SCVI` privately from the start (DP-SGD).

    The DP counterpart of ``model.train()``: a random ``train_size`` fraction of the model's
    cells (drawn from ``seed``, independently of the data) is trained on with DP-SGD
    (Abadi et al. 2016) through Opacus (Yousefpour et al. 2021), exactly as in :func:`dp_sgd`;
    the rest is the validation split.  The model records its split like ``train()`` does
    (``train_obs_names_``, ``validation_obs_names_``), so it can be unlearned later, and
    the accounting in ``dp_epsilon_``, ``dp_delta_``, ``dp_accounting_``.

    A model that is ``(epsilon, delta)``-DP with respect to each training cell is
    ``(k epsilon, k e^{(k-1) epsilon} delta)``-DP with respect to any group of ``k`` cells
    (group privacy), so a deletion request for a small group is answered by the guarantee
    itself, without retraining, as far as that bound is acceptable (``docs/dp_sgd.md``).

    Parameters
    ----------
    model
        An untrained :class:`~scvi_unlearn.SCVI` built with
        ``use_batch_norm="none", use_layer_norm="both"``.
    train_size
        Fraction of the cells trained on, in (0, 1].
    seed
        Seed of the split, the initial sampling and the noise (``None``: the global
        generators as they are).
    target_epsilon, target_delta, max_grad_norm, max_epochs, batch_size, lr, accountant, \
accelerator, enable_progress_bar
        As in :func:`dp_sgd`; ``target_delta=None`` is ``1 / n**2`` for ``n`` training cells.

    Returns
    -------
    The model (trained in place, eval mode).

    Examples
    --------
    >>> import scvi_unlearn as su
    >>> from scvi_unlearn.unlearn import train_private
    >>> su.SCVI.setup_anndata(adata, layer="counts")
    >>> model = su.SCVI(adata, use_batch_norm="none", use_layer_norm="both")
    >>> train_private(model, target_epsilon=4.0)
    >>> model.dp_epsilon_  # <= 4
    """
    from scvi_unlearn._seeding import isolated_seed

    if not isinstance(train_size, int | float) or not 0 < train_size <= 1:
        raise ValueError(f"train_size must be in (0, 1], got {train_size!r}.")
    _check_hyperparameters(
        target_epsilon, target_delta, max_grad_norm, max_epochs, batch_size, lr, accountant
    )
    _check_no_batch_norm(model.module)
    _warn_library_prior(model)
    n_obs = model.adata.n_obs
    with isolated_seed(seed):
        order = np.random.permutation(n_obs)  # noqa: NPY002 (seeded and restored by isolated_seed)
        n_train = max(2, int(math.ceil(train_size * n_obs)))
        train, val = np.sort(order[:n_train]), np.sort(order[n_train:])
        accounting = train_dp_module(
            model.module,
            model.adata_manager,
            train,
            target_epsilon=target_epsilon,
            target_delta=target_delta,
            max_grad_norm=max_grad_norm,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            accountant=accountant,
            accelerator=accelerator,
            enable_progress_bar=enable_progress_bar,
        )
    names = np.asarray(model.adata.obs_names, dtype=str)
    model.train_indices = train
    model.validation_indices = val
    model.test_indices = np.asarray([], dtype=int)
    model.train_obs_names_ = names[train]
    model.validation_obs_names_ = names[val]
    model.train_recipe_ = None  # not replayable by model.train(); see dp_accounting_
    accounting["seed"] = seed
    _attach_accounting(model, accounting)
    model.is_trained_ = True
    return model
