"""Custom data loaders: su.SCVI trains from a LightningDataModule exactly as scvi.model.SCVI.

scvi-tools builds such a model without AnnData, either ``SCVI()`` (the module is created by
``train(datamodule=...)``) or ``SCVI(adata=None, registry=datamodule.registry)``, and trains it
with ``train(datamodule=...)``.  Such a model has no AnnData and no recorded cells, so
``unlearn()`` refuses it with a clear error.
"""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch
from lightning.pytorch import LightningDataModule
from scvi.dataloaders import AnnDataLoader

import scvi_unlearn as su
from scvi_unlearn._seeding import isolated_seed


class TinyDataModule(LightningDataModule):
    """A minimal custom datamodule serving a registered AnnData, as scvi-tools' loaders do.

    It exposes what ``train(datamodule=...)`` reads (``n_obs``, ``n_vars``, ``n_batch``,
    ``n_labels``, ``registry``) and yields the registry-keyed minibatches of
    :class:`scvi.dataloaders.AnnDataLoader`; no ``train_idx``, no validation loader.
    """

    def __init__(self, manager, batch_size: int = 64):
        super().__init__()
        self.manager = manager
        self.batch_size = batch_size

    @property
    def n_obs(self) -> int:
        return self.manager.adata.n_obs

    @property
    def n_vars(self) -> int:
        return self.manager.summary_stats.n_vars

    @property
    def n_batch(self) -> int:
        return self.manager.summary_stats.n_batch

    @property
    def n_labels(self) -> int:
        return self.manager.summary_stats.n_labels

    @property
    def registry(self) -> dict:
        return self.manager.registry

    def train_dataloader(self):
        return AnnDataLoader(self.manager, shuffle=True, batch_size=self.batch_size)

    def inference_dataloader(self):
        return AnnDataLoader(self.manager, shuffle=False, batch_size=self.batch_size)


@pytest.fixture(scope="module")
def base_adata():
    with isolated_seed(0):  # synthetic_iid draws from the global numpy generator
        return scvi.data.synthetic_iid(batch_size=100, n_genes=50, n_batches=2, n_labels=3)


def _datamodule(cls, base_adata) -> TinyDataModule:
    adata = base_adata.copy()
    cls.setup_anndata(adata, batch_key="batch", labels_key="labels")
    return TinyDataModule(cls._get_most_recent_anndata_manager(adata, required=True))


def _train(cls, datamodule, construction: str, seed: int = 0, **train_kwargs):
    with isolated_seed(seed):
        if construction == "none":
            with pytest.warns(UserWarning, match="initialized without `adata`"):
                model = cls(n_latent=5, n_hidden=32)
        else:
            model = cls(adata=None, registry=datamodule.registry, n_latent=5, n_hidden=32)
        model.train(datamodule=datamodule, enable_progress_bar=False, **train_kwargs)
    return model


@pytest.mark.parametrize("construction", ["none", "registry"])
def test_trains_from_a_datamodule_exactly_like_scvi(base_adata, construction):
    plain = _train(scvi.model.SCVI, _datamodule(scvi.model.SCVI, base_adata), construction,
                   max_epochs=2)  # fmt: skip
    dm = _datamodule(su.SCVI, base_adata)
    # before the fix, construction="none" raised AttributeError: no attribute '_adata'
    ours = _train(su.SCVI, dm, construction, max_epochs=2)
    assert ours.is_trained_ and plain.is_trained_
    state, ref = ours.module.state_dict(), plain.module.state_dict()
    assert list(state) == list(ref)
    for name in ref:
        assert torch.equal(state[name], ref[name]), name
    assert set(ours.history) == set(plain.history)
    for key in ("train_loss", "elbo_train", "reconstruction_loss_train", "kl_local_train"):
        np.testing.assert_array_equal(
            ours.history[key].to_numpy(dtype=float), plain.history[key].to_numpy(dtype=float)
        )
    latent = ours.get_latent_representation(dataloader=dm.inference_dataloader())
    ref_latent = plain.get_latent_representation(dataloader=dm.inference_dataloader())
    assert latent.shape == (dm.n_obs, 5)
    np.testing.assert_array_equal(latent, ref_latent)


def test_recipe_recorded_for_a_datamodule(base_adata):
    dm = _datamodule(su.SCVI, base_adata)
    model = _train(su.SCVI, dm, "none", seed=3, max_epochs=2, batch_size=32)
    recipe = model.train_recipe_
    assert recipe["datamodule"] == "<TinyDataModule>"
    assert recipe["max_epochs"] == 2 and recipe["batch_size"] == 32
    assert recipe["seed"] == 3
    assert recipe["scvi_tools_version"] == scvi.__version__
    assert "max_epochs_from_heuristic" not in recipe
    # no AnnData: no cells are recorded, and asking for them says why
    assert model.train_obs_names_ is None and model.validation_obs_names_ is None
    with pytest.raises(ValueError, match="no record of the cells"):
        model.trained_obs_names  # noqa: B018 (the property raises)


def test_default_epochs_recorded_from_the_datamodule_size(base_adata):
    from scvi.model._utils import get_max_epochs_heuristic

    dm = _datamodule(su.SCVI, base_adata)
    model = su.SCVI(adata=None, registry=dm.registry, n_latent=5, n_hidden=32)
    # scvi-tools resolves max_epochs=None with datamodule.n_obs; the recipe records the same
    recipe = model._bind_train_arguments((), {"datamodule": dm})
    assert recipe["max_epochs"] == get_max_epochs_heuristic(dm.n_obs)
    assert recipe["max_epochs_from_heuristic"] is True


@pytest.mark.parametrize("construction", ["none", "registry"])
@pytest.mark.parametrize("method", ["contrastive", "retrain", "finetune"])
def test_unlearn_refuses_a_datamodule_model_early(base_adata, construction, method):
    dm = _datamodule(su.SCVI, base_adata)
    model = _train(su.SCVI, dm, construction, max_epochs=1)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    forget = list(dm.manager.adata.obs_names[:5])
    with pytest.raises(ValueError, match=r"train\(datamodule=\.\.\.\)") as info:
        model.unlearn(forget, method=method)
    message = str(info.value)
    assert "scvi_unlearn.SCVI.train" in message and "AnnData" in message
    for name, value in model.module.state_dict().items():
        assert torch.equal(value, before[name])
    assert model.unlearn_record_ is None


def test_saves_and_loads_like_scvi(base_adata, tmp_path):
    """A registry-built datamodule model saves without AnnData and loads back, as in scvi-tools.

    ``save`` scans every attribute; the ``trained_obs_names`` property of a model without a
    record of its cells must not break that scan.
    """
    for cls in (scvi.model.SCVI, su.SCVI):
        dm = _datamodule(cls, base_adata)
        model = _train(cls, dm, "registry", max_epochs=1)
        path = tmp_path / cls.__module__
        model.save(path, save_anndata=False)
        loaded = cls.load(path, adata=False)
        assert type(loaded) is cls and loaded.is_trained_
        for name, value in model.module.state_dict().items():
            assert torch.equal(loaded.module.state_dict()[name], value)
    assert loaded.train_recipe_ == model.train_recipe_
    assert loaded.train_recipe_["datamodule"] == "<TinyDataModule>"
    assert loaded.train_obs_names_ is None


def test_untrained_model_saves(base_adata, tmp_path):
    adata = base_adata.copy()
    su.SCVI.setup_anndata(adata, batch_key="batch")
    model = su.SCVI(adata, n_latent=5, n_hidden=32)
    model.save(tmp_path / "untrained", save_anndata=False)
    loaded = su.SCVI.load(tmp_path / "untrained", adata=adata)
    assert not loaded.is_trained_ and loaded.train_recipe_ is None
    with pytest.raises(ValueError, match="no record of the cells"):
        loaded.trained_obs_names  # noqa: B018 (the property raises)
