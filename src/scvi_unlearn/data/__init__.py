"""Datasets, member / non-member splits, forget-set builders and matched non-members."""

from scvi_unlearn.data._download import REMOTE_FILES, RemoteFile, cache_dir, fetch
from scvi_unlearn.data._forget import (
    forget_by_label,
    forget_donor,
    forget_label_subset,
    forget_random,
)
from scvi_unlearn.data._matched import log_normalized_pca, matched_nonmembers
from scvi_unlearn.data._membership import HOLDOUT, SPLIT_KEY, TRAIN, membership_split
from scvi_unlearn.data._pbmc33k import pbmc33k
from scvi_unlearn.data._pbmc68k import pbmc68k
from scvi_unlearn.data._preprocess import check_counts, preprocess_counts
from scvi_unlearn.data._simulate import simulate
from scvi_unlearn.data._soma import DONOR_KEY, SIMULATION_METADATA_KEY, simulate_to_soma
from scvi_unlearn.data._tabula_muris import tabula_muris

__all__ = [
    "REMOTE_FILES",
    "RemoteFile",
    "cache_dir",
    "check_counts",
    "fetch",
    "pbmc33k",
    "preprocess_counts",
    "simulate",
    "simulate_to_soma",
    "tabula_muris",
    "HOLDOUT",
    "SPLIT_KEY",
    "TRAIN",
    "DONOR_KEY",
    "SIMULATION_METADATA_KEY",
    "forget_by_label",
    "forget_donor",
    "forget_label_subset",
    "forget_random",
    "log_normalized_pca",
    "matched_nonmembers",
    "membership_split",
    "pbmc68k",
]
