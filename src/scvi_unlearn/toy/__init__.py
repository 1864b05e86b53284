"""The seeds' toy models: two-Gaussian MI unlearning and mixture-of-Gaussians VAE simulations."""

from scvi_unlearn.toy._mog_data import (
    FORGET_KINDS,
    SEPARATIONS,
    make_mog_anndata,
    mog_forget_set,
)
from scvi_unlearn.toy._mog_vae import mog_vae_experiment, mog_vae_table, summarize_mog_vae
from scvi_unlearn.toy._mutual_information import (
    notebook_mutual_information,
    plugin_mutual_information,
)
from scvi_unlearn.toy._two_gaussian import (
    ARMS,
    SEED_NOTEBOOK_NUMBERS,
    summarize_two_gaussian,
    two_gaussian_experiment,
    two_gaussian_table,
)
from scvi_unlearn.toy._two_gaussian_data import TwoGaussianData, make_two_gaussian

__all__ = [
    "ARMS",
    "FORGET_KINDS",
    "SEPARATIONS",
    "make_mog_anndata",
    "mog_forget_set",
    "mog_vae_experiment",
    "mog_vae_table",
    "summarize_mog_vae",
    "SEED_NOTEBOOK_NUMBERS",
    "TwoGaussianData",
    "make_two_gaussian",
    "notebook_mutual_information",
    "plugin_mutual_information",
    "summarize_two_gaussian",
    "two_gaussian_experiment",
    "two_gaussian_table",
]
