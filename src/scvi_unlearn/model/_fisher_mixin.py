"""Adds :meth:`fisher_overlap`: per-sample Fisher-information overlap between cell sets."""

from __future__ import annotations


class FisherMixin:
    """Adds :meth:`fisher_overlap`: per-sample Fisher-information overlap between cell sets.

    Mixed into :class:`scvi_unlearn.SCVI`; reusable by any scvi-tools model whose module is a
    :class:`scvi.module.VAE`.
    """

    def fisher_overlap(
        self,
        adata_forget,
        adata_retain=None,
        *,
        control: str | None = "classifier",
        labels_key: str | None = None,
        n_draws: int = 1,
        seed: int = 0,
        batch_size: int = 128,
        classifier_epochs: int = 100,
    ):
        """Overlap of the forget and retain cells' Fisher information, with a classifier control.

        Computes the per-sample diagonal empirical Fisher of the negative ELBO
        (:func:`scvi_unlearn.fisher.diagonal_fisher`: squared per-cell gradients, fixed
        posterior noise, eval mode, parameters without gradient excluded) on the forget cells
        and on the retain cells, and compares them: cosine globally, per tensor and per
        category, a magnitude-normalised aggregate, top-k overlap, effective rank, log-Fisher
        correlation and the Proposition 1 check of the decoder output layer.  No damping
        constant enters any cosine.  With ``control="classifier"`` an MLP with the encoder's
        hidden sizes is trained (seeded) on the same cells to predict the cell type, and its
        Fisher, from the same estimator, gives the VAE / classifier ratios of the study that
        motivated this analysis (Section 7 of the study's write-up; its estimator mixed batch
        and per-sample gradients).  For a :class:`~scvi_unlearn.ConditionalSCVI` the result
        also has ``label_offsets``: the share of the forget Fisher in the offsets of labels no
        retain cell has, and the retain Fisher there (exactly 0).

        Parameters
        ----------
        adata_forget
            The forget cells: an AnnData (e.g. a subset of the data) or their ``obs_names``.
            Cells are looked up in the model's AnnData; an AnnData whose cells are not there
            is evaluated itself (a copy; it is never modified).
        adata_retain
            The retain cells, in the same forms.  Default: the model's training cells
            (:attr:`trained_obs_names`) minus the forget cells, from the model's AnnData.
        control
            ``"classifier"`` (default) or ``None`` (no control).
        labels_key
            ``obs`` column of the cell-type labels for the classifier; default the labels
            registered with ``setup_anndata``.
        n_draws
            Posterior draws of ``z`` per cell (the per-cell loss is averaged over them
            before its gradient is squared).
        seed
            Seed of the posterior noise and of the classifier's training.
        batch_size
            Cells per vectorised backward pass.
        classifier_epochs
            Training epochs of the classifier (Adam, lr 1e-3).

        Returns
        -------
        :class:`scvi_unlearn.fisher.FisherOverlap` with ``global_cosine``, ``by_tensor``,
        ``by_category``, ``summary()``, ``to_frame()`` and ``plot()``.

        Examples
        --------
        >>> forget = adata[adata.obs["cell_type"] == "CD56+ NK"]
        >>> ov = model.fisher_overlap(forget)
        >>> ov.summary()
        >>> fig = ov.plot()
        """
        from scvi_unlearn.fisher import fisher_overlap

        return fisher_overlap(
            self,
            adata_forget,
            adata_retain,
            control=control,
            labels_key=labels_key,
            n_draws=n_draws,
            seed=seed,
            batch_size=batch_size,
            classifier_epochs=classifier_epochs,
        )
