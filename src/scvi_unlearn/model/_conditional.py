"""The cluster-conditional scVI: :class:`ConditionalSCVI`."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scvi_unlearn.model._conditional_module import ConditionalVAE
from scvi_unlearn.model._scvi import SCVI


class ConditionalSCVI(SCVI):
    """scVI with a learnable per-label gene offset on the decoder (cluster-conditional scVI).

    :class:`scvi_unlearn.SCVI` whose module is a :class:`~scvi_unlearn.model.ConditionalVAE`:
    for a cell of label ``y`` (the ``labels_key`` registered with :meth:`setup_anndata`, e.g.
    clusters or cell types), the decoder adds offsets ``o_y`` (one per gene, zero at
    initialisation) to the expression logits before the softmax.  This is the study's
    cluster-conditional VAE (a one-hot cluster concatenated to the input of the decoder's output
    layer; Section 7.5 of its write-up) on top of scVI :cite:p:`Lopez18`.

    A label's offsets receive a gradient only from cells of that label, so the Fisher information
    of every other cell on them is exactly zero, and a model trained without the label never
    moves them from zero.  ``unlearn(forget, method="conditional_reset")`` uses this: it resets
    the offsets of labels whose training cells are all forgotten (the study's "conditional
    scrubbing"); every other unlearning method, :meth:`membership_attack` and
    :meth:`fisher_overlap` (which then reports the forget Fisher mass in the forgotten labels'
    offsets, ``FisherOverlap.label_offsets``) work as for :class:`~scvi_unlearn.SCVI`.
    ``docs/fisher.md`` ("Conditional scVI") has the measurements: resetting the offsets alone
    does not make the model retrain-equivalent, because the shared encoder and decoder still
    carry the forgotten cells.

    The labels are part of the generative model: every cell needs one, from the registered
    categories (all categories present at :meth:`setup_anndata`, whether or not their cells
    end up in the training split; a label without training cells keeps zero offsets, and its
    cells are encoded and decoded like those of any label).  The encoder does not read the labels,
    so latent representations do not depend on them.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` **with** ``labels_key``.
    registry, n_hidden, n_latent, n_layers, dropout_rate, dispersion, gene_likelihood, \
use_observed_lib_size, latent_distribution, **kwargs
        Exactly as in :class:`scvi.model.SCVI`.

    Raises
    ------
    ValueError
        When the AnnData (or registry) has no registered ``labels_key``.

    Examples
    --------
    >>> import scvi_unlearn as su
    >>> adata = su.data.pbmc68k()
    >>> su.ConditionalSCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    >>> model = su.ConditionalSCVI(adata, n_latent=10)
    >>> model.train(max_epochs=20)
    >>> model.get_label_offsets().shape  # labels x genes
    """

    _module_cls = ConditionalVAE

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dispersion: Literal["gene", "gene-batch", "gene-label", "gene-cell"] = "gene",
        gene_likelihood: Literal["zinb", "nb", "poisson", "normal"] = "zinb",
        use_observed_lib_size: bool = True,
        latent_distribution: Literal["normal", "ln"] = "normal",
        **kwargs,
    ):
        self._check_labels_registered(adata, registry)
        super().__init__(
            adata,
            registry,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            use_observed_lib_size=use_observed_lib_size,
            latent_distribution=latent_distribution,
            **kwargs,
        )
        self._model_summary_string = self._model_summary_string.replace(
            "SCVI model", "ConditionalSCVI model (per-label decoder offsets)", 1
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def _check_labels_registered(cls, adata: AnnData | None, registry: dict | None) -> None:
        if adata is not None:
            manager = cls._get_most_recent_anndata_manager(adata, required=True)
            setup_args = manager.registry["setup_args"]
        elif registry is not None:
            setup_args = registry.get("setup_args", {})
        else:
            raise ValueError(
                "ConditionalSCVI needs an AnnData registered with "
                "ConditionalSCVI.setup_anndata(adata, labels_key=...) (or its registry): the "
                "labels are part of its decoder."
            )
        if setup_args.get("labels_key") is None:
            raise ValueError(
                "ConditionalSCVI conditions its decoder on the cells' labels, but the AnnData "
                "was registered without labels_key: call "
                "ConditionalSCVI.setup_anndata(adata, ..., labels_key=<obs column>) first."
            )

    @property
    def label_categories(self) -> np.ndarray:
        """The registered label categories, in code order (row ``i`` of the offsets)."""
        # from the saved registry: also defined for a model loaded without its AnnData
        field = self.registry_["field_registries"][REGISTRY_KEYS.LABELS_KEY]
        return np.asarray(field["state_registry"]["categorical_mapping"]).astype(str)

    def get_label_offsets(self) -> pd.DataFrame:
        """The decoder's per-label gene offsets: labels (rows) x genes (columns), a copy."""
        values = self.module.label_offsets.detach().cpu().numpy().copy()
        genes = (
            self.adata.var_names
            if self.adata is not None
            else pd.RangeIndex(values.shape[1], name="gene")
        )
        return pd.DataFrame(
            values, index=pd.Index(self.label_categories, name="label"), columns=genes
        )
