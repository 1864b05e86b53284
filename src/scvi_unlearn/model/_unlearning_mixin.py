"""Adds :meth:`unlearn`: remove a set of cells from a trained model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

# importing the subpackage registers the built-in methods (and exposes su.unlearn)
from scvi_unlearn import unlearn as _unlearn


class UnlearningMixin:
    """Adds :meth:`unlearn` (remove a set of cells from a trained model) and
    :meth:`deletion_certificate` (what the removal guarantees, for a data steward to keep).

    Mixed into :class:`scvi_unlearn.SCVI`; reusable by any scvi-tools model whose module is a
    :class:`scvi.module.VAE` and which records the cells it trained on (``train_obs_names_``,
    ``validation_obs_names_``, ``train_recipe_``, as :meth:`scvi_unlearn.SCVI.train` does).
    """

    #: provenance of the unlearning run that produced this model (``None`` for a trained model)
    unlearn_record_: dict[str, Any] | None = None

    def unlearn(
        self,
        adata_forget: AnnData | Sequence[str] | pd.Index | np.ndarray,
        method: str = _unlearn.DEFAULT_METHOD,
        *,
        seed: int | None = None,
        ignore_untrained: bool = False,
        retain_tolerance: float = _unlearn.RETAIN_TOLERANCE,
        on_degradation: str = "auto",
        check_cells: AnnData | None = None,
        retain_confidence: float = _unlearn.RETAIN_CONFIDENCE,
        datamodule=None,
        **method_kwargs: Any,
    ):
        """Return a new model that has forgotten ``adata_forget``; this model is not modified.

        The forget cells are identified by ``obs_names`` among the cells this model was trained
        on (training + validation split of :meth:`train`).  The retain cells are the trained
        cells minus the forget cells, read from ``self.adata`` -- or, for a model trained out of
        core on a TileDB-SOMA store, streamed from the recorded store (``fast_retrain`` and
        ``retrain`` only; ``docs/howto_atlas.md``).  The returned model is a new
        instance of this class bound to a copy of the retain cells only: its recorded training
        cells (``train_obs_names_``, ``validation_obs_names_``, indices), history and registry
        mention no forgotten cell, so saving it (with or without its AnnData) does not reveal
        them.  ``unlearn_record_`` holds the provenance (method, hyper-parameters with defaults,
        seed, number of forgotten cells, salted digest of their names, wall time, package
        versions, per-step losses, the retain-ELBO check, a slot for an audit, the method's
        guarantee, digests of the retain cells, their counts and the weights, and the chain of
        earlier requests); :meth:`deletion_certificate` turns it into a certificate.

        Parameters
        ----------
        adata_forget
            The cells to forget: an AnnData (e.g. ``adata[mask]``; only its ``obs_names`` are
            used, it is not modified) or a sequence of ``obs_names``.  For a model trained out
            of core on scvi-tools' :class:`~scvi.dataloaders.TileDBDataModule`: a sequence of
            ``soma_joinid`` (integers) or of the store's ``obs`` ids (strings, the ``obs_id``
            column), resolved in the recorded store (``docs/howto_atlas.md``).
        method
            Name of a method in :data:`scvi_unlearn.unlearn.METHODS`: the exact ``"retrain"``,
            ``"fast_retrain"`` (the default, chosen by measurement: ``docs/unlearning.md``) and
            ``"dp_sgd"``; the approximate ``"finetune"``, ``"gradient_ascent"``, ``"ssd"``,
            ``"scrub"``, ``"contrastive"``, ``"fisher"``, ``"extragradient"``,
            ``"mi_regularized"``, ``"reinit_finetune"``, ``"rewind"`` (needs a model trained
            with ``train(..., rewind_epoch=k)``), ``"distill"`` and, for a
            :class:`~scvi_unlearn.ConditionalSCVI` only, ``"conditional_reset"``; or one added
            with :func:`scvi_unlearn.unlearn.register`.
        seed
            Seed of every random draw of the method (global generators are seeded inside the
            call and restored afterwards).  ``None``: the seed recorded at training time
            (``train_recipe_["seed"]``), so ``method="retrain"`` repeats the original training;
            pass other seeds for several retrain references.
        ignore_untrained
            Skip cells this model never trained on instead of raising an error.
        retain_tolerance
            Largest tolerated relative drop of the mean ELBO on retain cells (new vs this model)
            before :class:`~scvi_unlearn.unlearn.UnlearningWarning` (or an error, see
            ``on_degradation``).  The check passes when the one-sided bound of the drop at
            ``retain_confidence`` (by default 95%: drop + 1.645 standard errors over the checked
            cells, :data:`~scvi_unlearn.unlearn.CHECK_Z`) is within it, so a drop just below the
            tolerance on few cells is flagged; the drop, its standard error and the bound are
            in ``unlearn_record_["checks"]``.
            Non-finite parameters always raise
            :class:`~scvi_unlearn.unlearn.UnlearningError`.
        on_degradation
            What to do when the retain ELBO is not within ``retain_tolerance``: ``"raise"``
            (:class:`~scvi_unlearn.unlearn.UnlearningError`, no model returned), ``"warn"``
            (:class:`~scvi_unlearn.unlearn.UnlearningWarning`, the model is returned) or
            ``"auto"`` (default): ``"warn"`` for the methods that train a fresh model on the
            retain cells only (``retrain``, ``fast_retrain``, ``dp_sgd``: their loss is the
            cost of not having the forget cells, or of privacy) and ``"raise"`` for the methods
            that edit the original, whose defaults do not keep the 2% in every setting
            (docs/unlearning.md, "Defaults across training lengths and forget sets"): a
            damaged model is not returned silently.  The value used is recorded in
            ``unlearn_record_["checks"]["on_degradation"]``.
        check_cells
            Cells neither model trained on for the retain-ELBO check (an AnnData with the
            model's genes; at least 16 cells; at most 2,048 are scored), instead of the retain
            cells of the original's validation split.  That split is small (10% of the
            training cells by default: on pbmc68k 30-50 cells, whose drop can be a few tenths
            of a point off the held-out change), so held-out cells make the 2% check more
            accurate; use cells of the types you did not forget, since a retrain also fits
            unseen cells of a forgotten type less well.  Cells the original trained on are a
            :class:`ValueError`.  Not kept in the record, which says how many were scored.
        retain_confidence
            Confidence of the check's one-sided bound on the drop, in [0.5, 1): 0.95 (default,
            :data:`~scvi_unlearn.unlearn.RETAIN_CONFIDENCE`) flagged all 83 runs of the
            defaults study beyond the 2% goal and stopped 20 of 169 within it
            (docs/unlearning.md, "Defaults across training lengths and forget sets"); 0.9
            (``z`` = 1.28) also flagged all 83 and stopped 18; 0.5 is the point drop, which
            missed 7.  Higher values stop more runs that are within the tolerance.
        datamodule
            For a model trained with ``train(datamodule=...)`` only: the user's retain stream, a
            LightningDataModule serving the original's training cells minus the forget cells
            (for custom loaders: AnnCollection, annbatch, lamin, ...; the model's genes and
            batch encoding).  ``adata_forget`` then names the forget cells for the record only
            (their number and salted digest; with a recorded SOMA store they are also checked
            against it).  Only ``"fast_retrain"`` and ``"retrain"`` train on it; without a
            recorded store there are no retain validation cells to match the original's fit on
            or to check, so ``fast_retrain`` trains its epoch budget (``max_epochs``) and only
            non-finite weights are checked.  ``None`` (default): a model trained on a
            ``TileDBDataModule`` streams the retain cells from its recorded store; any other
            datamodule-trained model raises.
        **method_kwargs
            Hyper-parameters of the method (see each method's docstring); unknown names raise a
            :class:`TypeError` listing the accepted ones.  Lightning ``Trainer`` arguments
            (``accelerator``, ``devices``, ``strategy``, ...) pass through as in ``train()``;
            under a DDP strategy each of the ``W`` processes takes ``batch_size // W`` cells a
            step, so steps and budgets are the one-device ones (docs/scale.md, "Several
            devices").

        Returns
        -------
        A new model of this class, trained (``is_trained_``), with ``unlearn_record_``.

        Examples
        --------
        >>> forget = adata[adata.obs["cell_type"] == "CD56+ NK"]
        >>> new = model.unlearn(forget, method="retrain")
        >>> new.unlearn_record_["n_forget"]
        """
        from scvi_unlearn._quiet import internal_fit
        from scvi_unlearn.unlearn.core._engine import run_unlearning

        with internal_fit():  # the request's fits are internal: no per-fit Lightning notes
            return run_unlearning(
                self,
                adata_forget,
                method,
                seed=seed,
                ignore_untrained=ignore_untrained,
                retain_tolerance=retain_tolerance,
                on_degradation=on_degradation,
                check_cells=check_cells,
                retain_confidence=retain_confidence,
                datamodule=datamodule,
                **method_kwargs,
            )

    def deletion_certificate(self, verdict=None) -> dict[str, Any]:
        """A JSON-serialisable certificate of the deletion that produced this model.

        For a data steward to keep next to the model (``json.dumps(certificate)``) and to
        re-check later with :func:`scvi_unlearn.verify_certificate`.  It is read from
        ``unlearn_record_``, so it survives ``save`` / ``load``; it names no cell.

        Parameters
        ----------
        verdict
            Optional: the :class:`~scvi_unlearn.attack.EquivalenceReport` of this model
            (``target.equivalence(new)``), whose ``passed`` and ``verdict()`` are included.

        Returns
        -------
        dict
            * ``certificate_version``, ``issued`` (UTC time), ``issued_with`` (scvi-unlearn's
              version now);
            * ``model``: class and SHA-256 of the weights the request produced;
            * ``request``: method, time, record layout, number of forgotten cells, times;
            * ``guarantee``: ``kind``, ``exact``, ``private`` and the guarantee in words, as
              :func:`scvi_unlearn.unlearn.methods` stated them at the time of the request;
            * ``versions`` (scvi-tools, torch, scvi-unlearn, ...), ``seed``, ``recipe``
              (the method's hyper-parameters and the training recipe the new model keeps);
            * ``retain_digest``: SHA-256 of the sorted names of the new model's training cells
              (the retain cells), their number and SHA-256 of their registered counts;
            * ``forget_digest``: the salted SHA-256 of the forgotten cells' names (a requester
              who knows their barcodes can check them with the salt; no name is stored);
            * ``chain``: the earlier requests behind the original, oldest first (method,
              guarantee, seed, number of cells, salted forget digest, retain and weight
              digests, time), so a model unlearned twice lists the first request;
            * ``checks`` (the retain-ELBO check), ``audit`` (``None`` unless recorded),
              ``verdict`` (from ``verdict``, else ``None``), ``not_checked``.

        Raises
        ------
        ValueError
            For a model that was never unlearned (no ``unlearn_record_``).

        Examples
        --------
        >>> new = model.unlearn(forget)
        >>> certificate = new.deletion_certificate()
        >>> su.verify_certificate(new, certificate, forget=forget)["verified"]
        True
        """
        from scvi_unlearn.unlearn.core._certificate import issue_certificate

        return issue_certificate(self, verdict=verdict)
