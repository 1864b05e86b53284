"""Datasets, member / non-member splits, forget-set builders and matched non-members."""

from scvi_unlearn.data._forget import forget_by_label, forget_label_subset, forget_random
from scvi_unlearn.data._matched import log_normalized_pca, matched_nonmembers
from scvi_unlearn.data._membership import HOLDOUT, SPLIT_KEY, TRAIN, membership_split
from scvi_unlearn.data._pbmc68k import pbmc68k

__all__ = [
    "HOLDOUT",
    "SPLIT_KEY",
    "TRAIN",
    "forget_by_label",
    "forget_label_subset",
    "forget_random",
    "log_normalized_pca",
    "matched_nonmembers",
    "membership_split",
    "pbmc68k",
]
