"""Adds :meth:`membership_attack`: a membership-inference audit with confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from anndata import AnnData

    from scvi_unlearn.attack import AttackReport, RetrainTarget


class MembershipAttackMixin:
    """Adds :meth:`membership_attack`: a membership-inference audit with confidence intervals.

    Mixed into :class:`scvi_unlearn.SCVI`; reusable by any scvi-tools model whose module is a
    :class:`scvi.module.VAE`.
    """

    def membership_attack(
        self,
        members: AnnData | Sequence[str] | np.ndarray,
        nonmembers: AnnData | Sequence[str] | np.ndarray | None = None,
        *,
        adata: AnnData | None = None,
        attack: str = "mlp",
        reference_models: Sequence[Any] | None = None,
        baseline=None,
        score: str = "elbo",
        feature_set: str = "full",
        n_draws: int = 8,
        seed: int = 0,
        n_splits: int = 5,
        n_neighbors: int = 5,
        n_bootstrap: int = 1000,
        level: float = 0.95,
        fprs: Sequence[float] = (0.01, 0.05),
        match_method: str = "auto",
        label_key: str = "cell_type",
        variance: str = "global",
        cross_fit: bool = True,
        attacker_kwargs: dict | None = None,
        target: RetrainTarget | None = None,
        batch_size: int = 256,
        n_shadow: int = 200,
    ) -> AttackReport:
        """Audit whether ``members`` are detectable as training cells of this model.

        A membership-inference attack (Shokri et al., 2017; Yeom et al., 2018) tries to tell
        the ``members`` (typically the cells a model was asked to forget) from
        ``nonmembers`` (cells no model ever trained on) using per-cell features of this
        model (:func:`scvi_unlearn.attack.attack_features`: ELBO terms averaged over
        ``n_draws`` seeded posterior draws, posterior mean / variance and their norms,
        distance to the model's own training latents).  Every random step is seeded by
        ``seed``; the caller's global RNG, AnnData and this model are left untouched.
        Protocol and rationale: ``docs/audit.md``.

        Parameters
        ----------
        members
            The member cells: an AnnData (e.g. ``adata[forget]``) or ``obs_names`` (then
            ``adata=`` must hold them).  They need not be in ``self.adata`` nor registered.
        nonmembers
            Non-member cells, same forms; must not be among the model's training cells.
            ``None``: held-out cells matched to the members from the *data*
            (:func:`scvi_unlearn.data.matched_nonmembers`; ``adata=`` must be the full
            dataset with ``obs["membership"]``), the same for every model audited.
        adata
            The dataset holding the cells (and, for an unlearned model bound to its retain
            cells only, nothing else is needed: its training cells are in ``self.adata``).
        attack
            ``"mlp"``: a fresh spectral-norm MLP trained for this model with matched-pair
            ``n_splits``-fold cross-fitting, every cell scored out-of-fold;
            ``"threshold"``: the single per-cell score ``score`` (``"elbo"``,
            ``"reconstruction"``, ``"kl"``) with a fixed orientation;
            ``"calibrated"``: ``score`` under this model minus its mean under
            ``reference_models`` that never trained on the cells (LiRA / U-LiRA spirit);
            ``"shadow"``: one MLP fitted under this model on ``n_shadow`` of its *other*
            training cells vs ``n_shadow`` *other* held-out cells of ``adata`` (which must
            carry ``obs["membership"]``), then applied once to the evaluated cells, which
            never shape the attacker;
            ``"drift"``: COMPARISON ONLY, the seed study's protocol: an attacker fitted on
            ``baseline``'s features applied unchanged to this model's.
        reference_models
            Models that never trained on the evaluated cells (``"calibrated"``), e.g.
            retrains; default ``target.models`` when a target is given.
        baseline
            The original model (``"drift"``).
        score
            Per-cell score of ``"threshold"`` / ``"calibrated"``.
        feature_set
            ``"full"`` (summary features plus per-dimension posterior mean and log-variance)
            or ``"summary"`` (scalar features only), for ``"mlp"`` / ``"drift"``.
        n_draws
            Posterior draws averaged per cell for the ELBO terms.
        seed
            Seed of the draws, the folds, the attackers, matched non-members, bootstrap.
        n_splits
            Folds of the cross-fitting (capped by the smaller class).
        n_neighbors
            ``k`` of the distance to the model's training latents (0 drops the feature).
        n_bootstrap, level
            Stratified bootstrap replicates and confidence level of ``report.ci``.
        fprs
            False-positive rates at which the TPR is reported.
        match_method, label_key
            How non-members are matched when ``nonmembers=None``.
        variance
            Calibrated attack: ``"global"`` (pooled reference s.d.), ``"per_cell"`` or
            ``"none"``.
        cross_fit
            Drift protocol: score each cell with a baseline attacker not trained on it
            (``False`` reproduces the study's in-sample AUC).
        attacker_kwargs
            Options of :class:`scvi_unlearn.attack.SpectralMLPAttacker`.
        target
            A :class:`scvi_unlearn.attack.RetrainTarget`: the held-out ELBO is measured and
            ``report.verdict()`` judges the model against it (same protocol required).
        batch_size
            Cells per forward pass.
        n_shadow
            Shadow cells per class for ``attack="shadow"``.

        Returns
        -------
        :class:`scvi_unlearn.attack.AttackReport` with ``auc``, ``advantage``,
        ``yeom_advantage``, ``tpr_at_fpr``, ``ci``, ``to_frame()``, ``plot_roc()`` and
        ``verdict()``.

        Examples
        --------
        >>> forget = su.data.forget_by_label(adata, "CD56+ NK")
        >>> report = model.membership_attack(forget, adata=adata)
        >>> report.auc, report.ci["auc"]
        >>> report.plot_roc()
        """
        from scvi_unlearn.attack import run_membership_attack

        return run_membership_attack(
            self,
            members,
            nonmembers,
            adata=adata,
            attack=attack,
            reference_models=reference_models,
            baseline=baseline,
            score=score,
            feature_set=feature_set,
            n_draws=n_draws,
            seed=seed,
            n_splits=n_splits,
            n_neighbors=n_neighbors,
            n_bootstrap=n_bootstrap,
            level=level,
            fprs=fprs,
            match_method=match_method,
            label_key=label_key,
            variance=variance,
            cross_fit=cross_fit,
            attacker_kwargs=attacker_kwargs,
            target=target,
            batch_size=batch_size,
            n_shadow=n_shadow,
        )

    def retrain_target(
        self,
        forget: AnnData | Sequence[str] | np.ndarray,
        nonmembers: AnnData | Sequence[str] | np.ndarray | None = None,
        *,
        seeds: Sequence[int] = (0, 1, 2, 3, 4),
        adata: AnnData | None = None,
        folder: str | None = None,
        n_jobs: int = 1,
        **kwargs,
    ) -> RetrainTarget:
        """Retrain without ``forget`` for each seed, audit each retrain, return the target.

        The retrains (``self.unlearn(forget, method="retrain", seed=s)``) are the references of
        both verdicts: the membership audit (``target.evaluate(new)``) and the per-cell
        equivalence test (``target.equivalence(new)``, ``docs/equivalence.md``; five references
        is the number it was calibrated with).  ``n_jobs`` trains them in parallel processes;
        ``folder`` keeps them on disk and reuses those already there
        (:func:`scvi_unlearn.attack.train_references`).  With already-built retrained models use
        :func:`scvi_unlearn.attack.retrain_target`.  ``kwargs`` (attack options,
        ``elbo_tolerance``, ``heldout``, ``level``) go to it.

        Examples
        --------
        >>> target = model.retrain_target(forget, adata=adata, attack="calibrated")
        >>> new = model.unlearn(forget)
        >>> target.evaluate(new).verdict()  # membership audit
        >>> target.equivalence(new).verdict()  # per-cell retrain equivalence
        """
        from scvi_unlearn.attack import build_retrain_target

        return build_retrain_target(
            self,
            forget,
            nonmembers,
            seeds=seeds,
            adata=adata,
            folder=folder,
            n_jobs=n_jobs,
            **kwargs,
        )
