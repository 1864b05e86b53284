"""Module of :class:`~scvi_unlearn.ConditionalSCVI`: scVI with a per-label offset on the decoder.

:class:`ConditionalVAE` is :class:`scvi.module.VAE` whose decoder adds a learnable,
zero-initialised offset per (label, gene) to the expression logits before the softmax:

.. math:: \\rho_{ng} = \\mathrm{softmax}_g\\big(W h(z_n) + b + o_{y_n}\\big),

with :math:`y_n` the cell's label (the ``labels_key`` of ``setup_anndata``).  This is the
cluster-conditional decoder of the study this package grew from (a one-hot label concatenated to
the input of the decoder's output layer): the extra input columns of that layer *are* the offsets
:math:`o_y`.  Label :math:`y`'s offsets receive a gradient only from cells of label
:math:`y` (the one-hot entry of every other cell is zero), so their Fisher information on any
other cell is exactly zero and a model trained without label :math:`y` never moves them from
their initial value.
"""

from __future__ import annotations

import torch
from scvi.module import VAE
from scvi.nn import DecoderSCVI
from torch import nn

from scvi_unlearn.fisher._label_offsets import LABEL_OFFSETS

#: Name, in ``module.named_parameters()``, of the label offsets (a bias-free ``nn.Linear`` whose
#: weight is ``(n_genes, n_labels)``: column ``y`` holds label ``y``'s offsets).
LABEL_OFFSET_PARAMETER = LABEL_OFFSETS


def _one_hot(y: torch.Tensor, n_labels: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot rows of the label codes ``y`` (shape ``(n, 1)`` or ``(n,)``), by comparison:
    no data-dependent range check, so it batches under :func:`torch.func.vmap`."""
    codes = y.reshape(*y.shape[:-1]) if y.dim() > 1 and y.shape[-1] == 1 else y
    classes = torch.arange(n_labels, device=y.device)
    return (codes.long().unsqueeze(-1) == classes).to(dtype)


class LabelOffsetDecoderSCVI(DecoderSCVI):
    """:class:`scvi.nn.DecoderSCVI` whose expression logits get a per-label offset.

    Built from an existing decoder by :meth:`from_decoder` (the decoder scvi-tools'
    :class:`~scvi.module.VAE` constructs, with all its options), which keeps every sub-module and
    parameter name of that decoder and adds ``px_label_offset``: a bias-free
    :class:`torch.nn.Linear` from the one-hot label to the genes, initialised to zero.

    The label ``y`` is the last positional argument after the covariates, as
    :meth:`scvi.module.VAE.generative` passes it (scvi-tools' decoder ignores it).
    """

    px_label_offset: nn.Linear

    @classmethod
    def from_decoder(cls, decoder: DecoderSCVI, n_labels: int) -> LabelOffsetDecoderSCVI:
        """Turn ``decoder`` (in place) into a :class:`LabelOffsetDecoderSCVI` and return it.

        The offsets are created without drawing from the global random generator (so the other
        parameters, and the random state, are those of a plain scVI built with the same seed).
        """
        if type(decoder) is not DecoderSCVI:
            raise TypeError(
                "A label-offset decoder extends scvi.nn.DecoderSCVI, got "
                f"{type(decoder).__name__}."
            )
        n_genes = decoder.px_scale_decoder[0].out_features
        with torch.random.fork_rng(devices=[]):
            offset = nn.Linear(n_labels, n_genes, bias=False)
        nn.init.zeros_(offset.weight)
        decoder.__class__ = cls
        decoder.px_label_offset = offset
        return decoder

    @property
    def n_labels(self) -> int:
        """Number of labels (columns of the offset weight)."""
        return self.px_label_offset.in_features

    def forward(self, dispersion: str, z: torch.Tensor, library: torch.Tensor, *cat_list):
        """:meth:`scvi.nn.DecoderSCVI.forward` with the label offset added to the logits.

        ``cat_list`` holds the decoder's covariates followed by the label codes ``y``.
        """
        n_covariates = len(self.px_decoder.n_cat_list)
        covariates = cat_list[:n_covariates]
        y = cat_list[n_covariates] if len(cat_list) > n_covariates else None
        if y is None:
            raise ValueError(
                "The label-offset decoder needs the cells' labels (y); scvi-tools' "
                "VAE.generative passes them from the registered labels field."
            )
        px = self.px_decoder(z, *covariates)
        logits = self.px_scale_decoder[0](px)
        # (cells, genes) offsets broadcast over a leading posterior-sample dimension of z
        logits = logits + self.px_label_offset(_one_hot(y, self.n_labels, logits.dtype))
        px_scale = self.px_scale_decoder[1](logits)
        px_dropout = self.px_dropout_decoder(px)
        px_rate = torch.exp(library) * px_scale
        px_r = self.px_r_decoder(px) if dispersion == "gene-cell" else None
        return px_scale, px_r, px_rate, px_dropout


class ConditionalVAE(VAE):
    """scVI's :class:`~scvi.module.VAE` with a learnable per-label gene offset on the decoder.

    The module of :class:`scvi_unlearn.ConditionalSCVI`.  The decoder
    (``LabelOffsetDecoderSCVI``) adds, for a cell of label ``y``, the offsets ``o_y``
    (one per gene, zero at initialisation) to its expression logits before the softmax (or the
    softplus with ``use_size_factor_key``): with the softmax, a per-label, per-gene factor
    ``exp(o_yg)`` on the expression before it is normalised over the genes.  It is the
    cluster-conditional decoder of the study this package grew from (Section 7.5 of its
    write-up; a one-hot cluster concatenated to the input of the output layer), on top of scVI
    :cite:p:`Lopez18`.

    Parameters
    ----------
    n_input, n_batch, n_labels, **kwargs
        As in :class:`scvi.module.VAE`; ``n_labels`` (the number of categories of the registered
        labels) must be >= 1.

    Notes
    -----
    The offsets are the weight of ``decoder.px_label_offset`` (a bias-free
    :class:`torch.nn.Linear` of the one-hot label, weight ``(n_genes, n_labels)``, named
    ``decoder.px_label_offset.weight``), so the per-sample Fisher taps treat them as any
    linear layer; :attr:`label_offsets` gives them as ``(n_labels, n_genes)``.
    """

    def __init__(self, n_input: int, n_batch: int = 0, n_labels: int = 0, **kwargs):
        if n_labels < 1:
            raise ValueError(f"ConditionalVAE needs n_labels >= 1, got {n_labels}.")
        super().__init__(n_input, n_batch=n_batch, n_labels=n_labels, **kwargs)
        self.decoder = LabelOffsetDecoderSCVI.from_decoder(self.decoder, n_labels)

    @property
    def label_offsets(self) -> torch.Tensor:
        """The offsets as a ``(n_labels, n_genes)`` view (row ``y``: label ``y``)."""
        return self.decoder.px_label_offset.weight.T

    @torch.no_grad()
    def reset_label_offsets(self, codes) -> None:
        """Set the offsets of the labels ``codes`` (integer codes) to their initial value, 0."""
        codes = torch.as_tensor(codes, dtype=torch.long).reshape(-1)
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.n_labels):
            raise IndexError(f"label codes out of range [0, {self.n_labels}): {codes.tolist()}")
        self.decoder.px_label_offset.weight[:, codes] = 0.0
