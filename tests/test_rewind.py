"""``train(rewind_epoch=...)``'s checkpoint and the ``rewind`` unlearning method."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import scvi_unlearn as su
from conftest import dense, forget_advantage, module_state, same_state
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.unlearn.approximate import _rewind

QUIET = {"enable_progress_bar": False, "on_degradation": "warn"}
MODEL = {"n_latent": 10, "n_hidden": 64}
TRAIN = {"enable_progress_bar": False, "train_size": 0.9}
#: checkpoint epoch of the 30-epoch original
K = 5


def _train(adata, max_epochs, **kwargs):
    with isolated_seed(0):
        model = su.SCVI(adata, **MODEL)
        model.train(max_epochs=max_epochs, **TRAIN, **kwargs)
    return model


def _unlearn(model, forget, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", su.unlearn.UnlearningWarning)
        return model.unlearn(forget, **{**QUIET, **kwargs})


@pytest.fixture(scope="module")
def adata(pbmc):
    """A freshly registered copy of the training members (models of this module only)."""
    a = pbmc[pbmc.obs["membership"] == "train"].copy()
    su.SCVI.setup_anndata(a, layer="counts", labels_key="cell_type")
    return a


@pytest.fixture(scope="module")
def original(adata):
    """30 epochs (seed 0) with a checkpoint after :data:`K` epochs."""
    return _train(adata, 30, rewind_epoch=K)


@pytest.fixture(scope="module")
def before(original):
    return module_state(original)


@pytest.fixture(scope="module")
def short(adata):
    """The first :data:`K` epochs of :func:`original`'s run, with a checkpoint at epoch 0."""
    return _train(adata, K, rewind_epoch=0)


@pytest.fixture(scope="module")
def runs(original, forget_names):
    """``rewind`` with 4 epochs: two runs with seed 1, one with seed 2."""
    return [
        _unlearn(original, forget_names, method="rewind", seed=s, max_epochs=4) for s in (1, 1, 2)
    ]


# ------------------------------------------------------------------------------ the checkpoint


def test_checkpoint_does_not_change_training(adata, original):
    plain = _train(adata, 30)
    assert plain.rewind_checkpoint_ is None and plain.train_recipe_["rewind_epoch"] is None
    assert same_state(module_state(plain), module_state(original))


def test_checkpoint_is_the_weights_after_k_epochs(original, short):
    ckpt = original.rewind_checkpoint_
    assert ckpt["epoch"] == K and original.train_recipe_["rewind_epoch"] == K
    assert all(v.device.type == "cpu" for v in ckpt["state_dict"].values())
    assert same_state(ckpt["state_dict"], module_state(short))
    assert not same_state(ckpt["state_dict"], module_state(original))


def test_checkpoint_zero_is_the_initialisation(adata, short):
    with isolated_seed(0):
        fresh = su.SCVI(adata, **MODEL)
    assert short.rewind_checkpoint_["epoch"] == 0
    assert same_state(short.rewind_checkpoint_["state_dict"], module_state(fresh))


def test_checkpoint_saved_and_loaded(original, adata, tmp_path):
    original.save(tmp_path / "m", save_anndata=False)
    loaded = su.SCVI.load(tmp_path / "m", adata=adata)
    assert loaded.rewind_checkpoint_["epoch"] == K
    assert same_state(
        loaded.rewind_checkpoint_["state_dict"], original.rewind_checkpoint_["state_dict"]
    )
    assert loaded.train_recipe_ == original.train_recipe_


@pytest.mark.parametrize(
    ("value", "match"),
    [(-1, ">= 0"), (3, "< max_epochs"), (4, "< max_epochs"), (1.0, "an int"), ("1", "an int")]
    + [(True, "an int")],
)
def test_bad_rewind_epoch(value, match, fresh_train):
    model = su.SCVI(fresh_train, **MODEL)
    init = module_state(model)
    with pytest.raises(ValueError, match=f"rewind_epoch must be {match}"):
        model.train(max_epochs=3, rewind_epoch=value, **TRAIN)
    assert not model.is_trained_ and model.train_recipe_ is None
    assert same_state(init, module_state(model))


def test_retraining_drops_the_checkpoint(fresh_train):
    model = su.SCVI(fresh_train, **MODEL)
    model.train(max_epochs=2, rewind_epoch=1, **TRAIN)
    assert model.rewind_checkpoint_["epoch"] == 1
    model.train(max_epochs=1, **TRAIN)
    assert model.rewind_checkpoint_ is None


# ------------------------------------------------------------------------------ the method


def test_registered():
    assert su.unlearn.METHODS["rewind"] is su.unlearn.rewind
    assert "rewind" not in su.unlearn.FROM_SCRATCH
    assert "Parameters" in su.unlearn.rewind.__doc__


def test_needs_a_checkpoint(trained_model, forget_names):
    before = module_state(trained_model)
    with pytest.raises(ValueError, match=r"train\(\.\.\., rewind_epoch=k\)"):
        trained_model.unlearn(forget_names, method="rewind", **QUIET)
    assert same_state(before, module_state(trained_model))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"schedule": "linear"}, "schedule"), ({"lr": 0}, "lr"), ({"epoch_fraction": 0}, "epoch")]
    + [({"max_epochs": 0}, "max_epochs")],
)
def test_bad_hyperparameters(kwargs, match, original, before, forget_names):
    with pytest.raises(ValueError, match=match):
        original.unlearn(forget_names, method="rewind", **kwargs, **QUIET)
    assert same_state(before, module_state(original))


def test_starts_from_the_checkpoint(original, forget_names, monkeypatch):
    monkeypatch.setattr(_rewind, "train_fast", lambda *a, **k: None)
    new = _unlearn(original, forget_names, method="rewind", seed=0)
    assert same_state(module_state(new), original.rewind_checkpoint_["state_dict"])


def test_original_and_adata_untouched_and_reproducible(runs, original, before):
    assert same_state(before, module_state(original))
    assert original.rewind_checkpoint_["epoch"] == K
    a, b, c = (module_state(r) for r in runs)
    assert same_state(a, b)
    assert not same_state(a, c)
    assert runs[0].rewind_checkpoint_ is None  # the checkpoint saw the forget cells


def test_user_adata_untouched(original, forget_names):
    adata = original.adata
    counts = dense(adata.layers["counts"]).copy()
    obs, uns_keys = adata.obs.copy(), set(adata.uns)
    _unlearn(original, forget_names, method="rewind", seed=0, max_epochs=1)
    assert original.adata is adata
    np.testing.assert_array_equal(dense(adata.layers["counts"]), counts)
    assert adata.obs.equals(obs) and set(adata.uns) == uns_keys


def test_record(runs, forget_names, original):
    record = runs[0].unlearn_record_
    assert record["method"] == "rewind" and record["seed"] == 1
    assert record["hyperparameters"]["max_epochs"] == 4 and record["hyperparameters"]["lr"] == 5e-3
    first, *epochs = record["log"]
    assert first == {"step": 0, "rewind_epoch": float(K)}
    assert len(epochs) == 4 and all("loss" in e for e in epochs)
    assert len(runs[0].history_["elbo_train"]) == 4
    assert runs[0].train_recipe_ == {
        **original.train_recipe_,
        "datasplitter_kwargs": runs[0].train_recipe_["datasplitter_kwargs"],
    }
    assert not set(forget_names) & set(runs[0].trained_obs_names)


def test_forget_cells_lose_their_advantage(original, forget_names, pbmc):
    """The forget cells were fit better than unseen cells of the other types: after rewinding
    and 20 fast epochs that advantage is gone (their ELBO falls relative to the held-out
    cells').  As for fast_retrain, the absolute ELBOs are not compared: the fast schedule (KL
    weight 1) can be better everywhere than this 30-epoch original (KL warm-up at 0.075)."""
    new = _unlearn(original, forget_names, method="rewind", seed=1, max_epochs=20)
    gap_old = forget_advantage(original, pbmc, forget_names)
    gap_new = forget_advantage(new, pbmc, forget_names)
    assert gap_old > 0
    assert gap_new < gap_old, (gap_old, gap_new)


def test_from_epoch_zero_is_fast_retrain(short, forget_names):
    """With the checkpoint at epoch 0 (the original's initialisation, which a fresh model with
    the original's seed redraws), rewind is fast_retrain with its full budget and without weight
    averaging (rewind neither stops at the original's fit nor averages): the same parameters."""
    kwargs = {"seed": 0, "max_epochs": 3, "lr": 1.2e-2}  # the same schedule
    rewound = _unlearn(short, forget_names, method="rewind", **kwargs)
    fast = _unlearn(
        short, forget_names, method="fast_retrain", match_fit=False, average_epochs=None, **kwargs
    )
    assert same_state(module_state(rewound), module_state(fast))
    assert rewound.unlearn_record_["log"][1:] == fast.unlearn_record_["log"]


def test_retrain_replays_the_checkpoint(original, forget_names):
    """An exact retrain keeps a checkpoint of its own (retain cells only) when it reaches the
    recorded epoch, and none when a shorter run never does."""
    longer = _unlearn(original, forget_names, method="retrain", max_epochs=K + 1)
    assert longer.rewind_checkpoint_["epoch"] == K
    assert not same_state(
        longer.rewind_checkpoint_["state_dict"], original.rewind_checkpoint_["state_dict"]
    )
    shorter = _unlearn(original, forget_names, method="retrain", max_epochs=K - 1)
    assert shorter.rewind_checkpoint_ is None
