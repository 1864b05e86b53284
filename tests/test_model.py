"""The drop-in su.SCVI: identical behaviour to scvi.model.SCVI plus a recorded recipe."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch

import scvi_unlearn as su
from scvi_unlearn._seeding import isolated_seed


def _small(adata, cls, seed=0, **train):
    with isolated_seed(seed):
        model = cls(adata, n_latent=5, n_hidden=32)
        model.train(max_epochs=train.pop("max_epochs", 3), enable_progress_bar=False, **train)
    return model


@pytest.fixture()
def synth():
    adata = scvi.data.synthetic_iid(batch_size=100, n_genes=60, n_batches=2, n_labels=3)
    return adata


def test_same_class_name_and_subclass():
    assert su.SCVI.__name__ == "SCVI"
    assert issubclass(su.SCVI, scvi.model.SCVI)
    for mixin in (
        su.model.UnlearningMixin,
        su.model.MembershipAttackMixin,
        su.model.FisherMixin,
    ):
        assert issubclass(su.SCVI, mixin)


def test_training_is_identical_to_plain_scvi(synth):
    a1, a2 = synth.copy(), synth.copy()
    scvi.model.SCVI.setup_anndata(a1, batch_key="batch", labels_key="labels")
    su.SCVI.setup_anndata(a2, batch_key="batch", labels_key="labels")
    m1 = _small(a1, scvi.model.SCVI)
    m2 = _small(a2, su.SCVI)
    for (n1, p1), (n2, p2) in zip(
        m1.module.state_dict().items(), m2.module.state_dict().items(), strict=True
    ):
        assert n1 == n2 and torch.equal(p1, p2)
    assert np.array_equal(m1.train_indices, m2.train_indices)
    np.testing.assert_array_equal(
        m1.get_latent_representation(give_mean=True), m2.get_latent_representation(give_mean=True)
    )


def test_recipe_and_cells_recorded(synth):
    su.SCVI.setup_anndata(synth, batch_key="batch")
    scvi.settings.seed = 7
    try:
        model = _small(synth, su.SCVI, max_epochs=2, batch_size=64, train_size=0.8)
    finally:
        scvi.settings.seed = 0
    rec = model.train_recipe_
    assert rec["max_epochs"] == 2 and rec["batch_size"] == 64 and rec["train_size"] == 0.8
    assert rec["trainer_kwargs"] == {"enable_progress_bar": False}
    assert rec["seed"] == 0  # isolated_seed(0) in _small sets the seed seen by the splitter
    assert "plan_kwargs" in rec and "early_stopping" in rec
    names = synth.obs_names.to_numpy()
    assert set(model.train_obs_names_) == set(names[model.train_indices])
    assert set(model.validation_obs_names_) == set(names[model.validation_indices])
    assert len(model.train_obs_names_) == 160
    assert set(model.trained_obs_names) == set(names)


def test_a_callback_that_cannot_be_pickled_is_not_recorded(synth, tmp_path):
    """A callback class defined inside a function cannot be pickled: scvi-tools' own SCVI saves
    such a model, so ours must too. The recipe keeps a placeholder, a picklable callback is
    kept, and a retrain replays without the placeholder and says so."""
    from lightning.pytorch.callbacks import Callback

    class Local(Callback):  # defined in a function: pickle cannot find it by name
        pass

    su.SCVI.setup_anndata(synth, batch_key="batch")
    kept = scvi.train.SaveCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="elbo_train")
    model = _small(synth, su.SCVI, max_epochs=2, callbacks=[Local(), kept])
    recorded = model.train_recipe_["trainer_kwargs"]["callbacks"]
    assert (
        recorded[0]
        == "<unpicklable test_a_callback_that_cannot_be_pickled_is_not_recorded.<locals>.Local>"
    )
    assert type(recorded[1]) is type(kept)
    model.save(tmp_path / "model", save_anndata=True)
    loaded = su.SCVI.load(tmp_path / "model")
    assert loaded.train_recipe_["trainer_kwargs"]["callbacks"][0] == recorded[0]
    forget = synth.obs_names[model.train_indices[:10]]
    with pytest.warns(UserWarning, match="could not be saved with it"):
        new = loaded.unlearn(forget, method="retrain", max_epochs=1, enable_progress_bar=False)
    assert new.is_trained_


def test_record_round_trips_and_is_robust_to_reordering(synth, tmp_path):
    su.SCVI.setup_anndata(synth, batch_key="batch")
    model = _small(synth, su.SCVI, max_epochs=1)
    model.save(tmp_path / "m", overwrite=True, save_anndata=False)
    shuffled = synth[np.random.default_rng(0).permutation(synth.n_obs)].copy()
    loaded = su.SCVI.load(tmp_path / "m", adata=shuffled)
    assert loaded.train_recipe_ == model.train_recipe_
    assert np.array_equal(loaded.train_obs_names_, model.train_obs_names_)
    # names are identities: found in the re-ordered AnnData
    assert set(loaded.train_obs_names_) <= set(shuffled.obs_names)
    np.testing.assert_allclose(
        loaded.get_latent_representation(shuffled[synth.obs_names]),
        model.get_latent_representation(synth),
        rtol=1e-5,
        atol=1e-5,
    )


def test_checkpoints_load_both_ways(synth, tmp_path):
    a_plain = synth.copy()
    scvi.model.SCVI.setup_anndata(a_plain, batch_key="batch")
    plain = _small(a_plain, scvi.model.SCVI, max_epochs=1)
    plain.save(tmp_path / "plain", save_anndata=True)
    ours = su.SCVI.load(tmp_path / "plain")
    assert type(ours) is su.SCVI and ours.train_recipe_ is None
    with pytest.raises(ValueError, match="no record of the cells"):
        _ = ours.trained_obs_names
    np.testing.assert_allclose(
        ours.get_latent_representation(), plain.get_latent_representation(), atol=1e-6
    )

    a_ours = synth.copy()
    su.SCVI.setup_anndata(a_ours, batch_key="batch")
    mine = _small(a_ours, su.SCVI, max_epochs=1)
    mine.save(tmp_path / "ours", save_anndata=True)
    back = scvi.model.SCVI.load(tmp_path / "ours")
    assert type(back) is scvi.model.SCVI
    np.testing.assert_allclose(
        back.get_latent_representation(), mine.get_latent_representation(), atol=1e-6
    )


def test_accepts_anndata_set_up_with_plain_scvi(synth):
    scvi.model.SCVI.setup_anndata(synth, batch_key="batch")
    model = su.SCVI(synth, n_latent=4)
    assert model.summary_stats.n_batch == 2


def test_differential_expression_and_scarches(synth):
    ref = synth[synth.obs["batch"] == "batch_0"].copy()
    query = synth[synth.obs["batch"] == "batch_1"].copy()
    su.SCVI.setup_anndata(ref, batch_key="batch", labels_key="labels")
    with isolated_seed(0):
        model = su.SCVI(ref, n_latent=4, use_layer_norm="both", use_batch_norm="none")
        model.train(max_epochs=2, enable_progress_bar=False)
    de = model.differential_expression(groupby="labels", group1="label_0")
    assert "bayes_factor" in de.columns and len(de) == ref.n_vars
    su.SCVI.prepare_query_anndata(query, model)
    q = su.SCVI.load_query_data(query, model)
    assert type(q) is su.SCVI
    q.train(max_epochs=1, plan_kwargs={"weight_decay": 0.0}, enable_progress_bar=False)
    assert q.get_latent_representation().shape == (query.n_obs, 4)
    assert set(q.train_obs_names_) <= set(query.obs_names)


def test_minification(synth):
    su.SCVI.setup_anndata(synth, batch_key="batch")
    model = _small(synth, su.SCVI, max_epochs=1)
    qzm, qzv = model.get_latent_representation(give_mean=False, return_dist=True)
    synth.obsm["X_latent_qzm"], synth.obsm["X_latent_qzv"] = qzm, qzv
    model.minify_adata(use_latent_qzm_key="X_latent_qzm", use_latent_qzv_key="X_latent_qzv")
    assert model.minified_data_type is not None
    assert model.get_latent_representation().shape == (synth.n_obs, 5)


def test_view_anndata_setup_works(synth, capsys):
    su.SCVI.setup_anndata(synth, batch_key="batch")
    model = su.SCVI(synth)
    model.view_anndata_setup()
    assert "batch" in capsys.readouterr().out


def test_isolated_seed_restores_global_rng():
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002 - the test checks the global state is kept
    expected_t, expected_n = torch.rand(3), np.random.rand(3)  # noqa: NPY002
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    with isolated_seed(5):
        a = torch.rand(3)
    with isolated_seed(5):
        b = torch.rand(3)
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), expected_t)
    assert np.array_equal(np.random.rand(3), expected_n)  # noqa: NPY002


def test_recipe_resolves_default_epochs(synth):
    su.SCVI.setup_anndata(synth)
    model = su.SCVI(synth, n_latent=3)
    from scvi.model._utils import get_max_epochs_heuristic

    recipe = model._bind_train_arguments((), {})
    assert recipe["max_epochs"] == get_max_epochs_heuristic(synth.n_obs)
    assert recipe["max_epochs_from_heuristic"] is True
