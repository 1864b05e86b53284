"""ConditionalSCVI (per-label decoder offsets), conditional_reset and the offsets' Fisher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scvi_unlearn as su
from conftest import FORGET_LABEL, module_state
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.model._conditional_module import LABEL_OFFSET_PARAMETER

#: a label whose cells are all put in the validation split: no training cell at all
UNTRAINED_LABEL = "CD34+"
FAST = {"enable_progress_bar": False}


def _registered(pbmc, **setup):
    members = pbmc[pbmc.obs["membership"] == "train"].copy()
    adata = members.copy()
    su.ConditionalSCVI.setup_anndata(adata, layer="counts", **setup)
    return adata


@pytest.fixture(scope="module")
def cond_model(pbmc):
    """A small ConditionalSCVI, 25 epochs; the UNTRAINED_LABEL cells are validation-only."""
    adata = _registered(pbmc, labels_key="cell_type")
    rng = np.random.default_rng(0)
    untrained = np.flatnonzero((adata.obs["cell_type"] == UNTRAINED_LABEL).to_numpy())
    others = rng.permutation(np.setdiff1d(np.arange(adata.n_obs), untrained))
    n_val = len(others) // 10
    split = [np.sort(others[n_val:]), np.sort(np.r_[others[:n_val], untrained]), np.array([])]
    with isolated_seed(0):
        model = su.ConditionalSCVI(adata, n_latent=8, n_hidden=32)
        model.train(
            max_epochs=25,
            datasplitter_kwargs={"external_indexing": [s.astype(int) for s in split]},
            **FAST,
        )
    return model


def _code(model, label):
    return int(np.flatnonzero(model.label_categories == label)[0])


# ---------------------------------------------------------------------- construction


def test_requires_labels_key(pbmc):
    adata = _registered(pbmc)
    with pytest.raises(ValueError, match="labels_key"):
        su.ConditionalSCVI(adata)
    with pytest.raises(ValueError, match="labels_key"):
        su.ConditionalSCVI()


def test_offsets_start_at_zero_and_module_is_conditional(pbmc):
    adata = _registered(pbmc, labels_key="cell_type")
    with isolated_seed(0):
        model = su.ConditionalSCVI(adata, n_latent=8, n_hidden=32)
    with isolated_seed(0):
        su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
        plain = su.SCVI(adata, n_latent=8, n_hidden=32)
    assert isinstance(model.module, su.model.ConditionalVAE)
    offsets = model.get_label_offsets()
    assert offsets.shape == (10, adata.n_vars)
    assert (offsets.to_numpy() == 0).all()
    assert list(offsets.index) == list(adata.obs["cell_type"].cat.categories)
    # the offsets draw nothing from the RNG: every shared parameter equals a plain scVI's
    for name, value in plain.module.state_dict().items():
        assert torch.equal(value, model.module.state_dict()[name]), name


# ---------------------------------------------------------------------- training


def test_training_decreases_loss_and_untrained_label_stays_zero(cond_model):
    loss = np.asarray(cond_model.history_["elbo_train"]).ravel()
    assert loss[-1] < loss[0]
    offsets = cond_model.get_label_offsets()
    assert (offsets.loc[UNTRAINED_LABEL].to_numpy() == 0).all()
    trained = offsets.drop(index=UNTRAINED_LABEL)
    assert (trained.abs().sum(axis=1) > 0).all()


def test_untrained_label_cells_are_encodable(cond_model):
    adata = cond_model.adata
    cells = adata[adata.obs["cell_type"] == UNTRAINED_LABEL]
    latent = cond_model.get_latent_representation(cells)
    assert latent.shape == (cells.n_obs, 8) and np.isfinite(latent).all()
    assert np.isfinite(cond_model.get_elbo(cells))


def test_save_load_round_trip(cond_model, forget_names, tmp_path):
    cond_model.save(str(tmp_path / "m"), save_anndata=True)
    loaded = su.ConditionalSCVI.load(str(tmp_path / "m"))
    assert type(loaded) is su.ConditionalSCVI
    assert loaded.init_params_ == cond_model.init_params_
    for name, value in cond_model.module.state_dict().items():
        assert torch.equal(value, loaded.module.state_dict()[name]), name
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), cond_model.get_latent_representation()
    )
    reset = cond_model.unlearn(forget_names, method="conditional_reset")
    reset.save(str(tmp_path / "reset"), save_anndata=True)
    loaded = su.ConditionalSCVI.load(str(tmp_path / "reset"))
    assert list(loaded.reset_labels_) == [FORGET_LABEL]
    assert loaded.unlearn_record_["method"] == "conditional_reset"


# ---------------------------------------------------------------------- Fisher (Proposition 1)


def test_retain_fisher_on_forgotten_offsets_is_exactly_zero(cond_model, forget_names):
    ov = cond_model.fisher_overlap(forget_names, control=None)
    info = ov.label_offsets
    assert info["labels"] == [FORGET_LABEL]
    assert info["retain_mass"] == 0.0 and info["retain_max"] == 0.0
    assert info["forget_share"] > 0
    assert info["forget_share"] + info["other_offsets_share"] + info["shared_share"] == (
        pytest.approx(1.0)
    )
    assert "label offsets" in ov.by_category.index
    assert ov.by_category.loc["label offsets", "cosine"] == 0.0
    retain = ov.retain_fisher.values[LABEL_OFFSET_PARAMETER]
    code = _code(cond_model, FORGET_LABEL)
    assert (retain[:, code] == 0).all() and (retain.sum(0) > 0).sum() >= 8
    assert (ov.forget_fisher.values[LABEL_OFFSET_PARAMETER][:, code] > 0).any()


def test_fisher_overlap_of_plain_scvi_has_no_label_offsets(trained_model, forget_names):
    assert trained_model.fisher_overlap(forget_names, control=None).label_offsets is None


# ---------------------------------------------------------------------- conditional_reset


def test_conditional_reset_resets_exactly_the_forgotten_labels(cond_model, forget_names):
    before = module_state(cond_model)
    new = cond_model.unlearn(forget_names, method="conditional_reset")
    for name, value in before.items():  # the original is untouched
        assert torch.equal(value, cond_model.module.state_dict()[name]), name
    code = _code(cond_model, FORGET_LABEL)
    offsets, before_off = new.module.label_offsets, cond_model.module.label_offsets
    assert (offsets[code] == 0).all()
    assert before_off[code].abs().sum() > 0
    keep = [i for i in range(offsets.shape[0]) if i != code]
    assert torch.equal(offsets[keep], before_off[keep])
    for name, value in new.module.state_dict().items():  # max_epochs=0: nothing else moves
        if name != LABEL_OFFSET_PARAMETER:
            assert torch.equal(value, before[name]), name
    assert list(new.reset_labels_) == [FORGET_LABEL]
    assert new.unlearn_record_["log"][0]["n_labels_reset"] == 1.0
    assert type(new) is su.ConditionalSCVI


def test_conditional_reset_finetune_is_seeded_and_keeps_reset_offsets_zero(
    cond_model, forget_names
):
    runs = [
        cond_model.unlearn(forget_names, method="conditional_reset", max_epochs=2, seed=3, **FAST)
        for _ in range(2)
    ]
    a, b = (module_state(r) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    code = _code(cond_model, FORGET_LABEL)
    assert (runs[0].module.label_offsets[code] == 0).all()
    moved = "decoder.px_scale_decoder.0.weight"
    assert not torch.equal(a[moved], cond_model.module.state_dict()[moved])
    assert len(runs[0].unlearn_record_["log"]) > 1  # the reset entry, then the steps


def test_conditional_reset_partial_labels(cond_model, pbmc):
    subset = su.data.forget_label_subset(pbmc, FORGET_LABEL, 10, seed=0)
    with pytest.raises(su.unlearn.UnlearningError, match="partially forgotten"):
        cond_model.unlearn(subset, method="conditional_reset")
    with pytest.raises(su.unlearn.UnlearningError, match="No label"):
        cond_model.unlearn(subset, method="conditional_reset", partial_labels="skip")
    whole = su.data.forget_by_label(pbmc, FORGET_LABEL)
    mono = su.data.forget_label_subset(pbmc, "CD14+ Monocyte", 5, seed=0)
    new = cond_model.unlearn(np.r_[whole, mono], method="conditional_reset", partial_labels="skip")
    assert list(new.reset_labels_) == [FORGET_LABEL]
    mono_code = _code(cond_model, "CD14+ Monocyte")
    assert torch.equal(
        new.module.label_offsets[mono_code], cond_model.module.label_offsets[mono_code]
    )
    reset = cond_model.unlearn(subset, method="conditional_reset", partial_labels="reset")
    assert list(reset.reset_labels_) == [FORGET_LABEL]


def test_conditional_reset_argument_errors(trained_model, cond_model, forget_names):
    with pytest.raises(TypeError, match="ConditionalSCVI"):
        trained_model.unlearn(forget_names, method="conditional_reset")
    with pytest.raises(ValueError, match="partial_labels"):
        cond_model.unlearn(forget_names, method="conditional_reset", partial_labels="maybe")
    with pytest.raises(ValueError, match="max_epochs"):
        cond_model.unlearn(forget_names, method="conditional_reset", max_epochs=-1)


# ---------------------------------------------------------------------- other methods


@pytest.mark.parametrize("method", ["finetune", "fast_retrain"])
def test_other_methods_keep_the_conditional_model(cond_model, forget_names, method):
    # 2 epochs: a smoke test, not a usable model (the retain-ELBO check would flag it)
    new = cond_model.unlearn(
        forget_names, method=method, max_epochs=2, seed=0, retain_tolerance=1.0, **FAST
    )
    assert type(new) is su.ConditionalSCVI
    assert new.init_params_ == cond_model.init_params_
    assert isinstance(new.module, su.model.ConditionalVAE)
    if method == "fast_retrain":  # a model trained without the label never moves its offsets
        code = _code(cond_model, FORGET_LABEL)
        assert (new.module.label_offsets[code] == 0).all()
    assert new.get_label_offsets().shape[0] == 10


def test_membership_attack_runs(cond_model, pbmc, forget_names):
    heldout = pbmc.obs_names[(pbmc.obs["membership"] == "heldout").to_numpy()]
    report = cond_model.membership_attack(
        forget_names, heldout[:40], adata=pbmc, attack="threshold", n_bootstrap=50, seed=0
    )
    assert 0.0 <= report.metrics["auc"] <= 1.0


def test_rewind_checkpoint_and_method_keep_the_conditional_model(pbmc, forget_names, tmp_path):
    adata = _registered(pbmc, labels_key="cell_type")
    with isolated_seed(0):
        model = su.ConditionalSCVI(adata, n_latent=8, n_hidden=32)
        model.train(max_epochs=6, rewind_epoch=3, **FAST)
    ckpt = model.rewind_checkpoint_
    assert ckpt["epoch"] == 3
    key = next(k for k in ckpt["state_dict"] if k.endswith(LABEL_OFFSET_PARAMETER))
    # the checkpoint is the conditional module's: its offsets moved from zero in 3 epochs, and
    # differ from the final ones
    assert ckpt["state_dict"][key].abs().sum() > 0
    assert not torch.equal(ckpt["state_dict"][key], model.module.state_dict()[key])
    model.save(str(tmp_path / "m"), overwrite=True)
    loaded = su.ConditionalSCVI.load(str(tmp_path / "m"), adata=adata)
    assert loaded.rewind_checkpoint_["epoch"] == 3
    assert torch.equal(loaded.rewind_checkpoint_["state_dict"][key], ckpt["state_dict"][key])

    new = model.unlearn(
        forget_names, method="rewind", max_epochs=2, seed=0, retain_tolerance=1.0, **FAST
    )
    assert type(new) is su.ConditionalSCVI and isinstance(new.module, su.model.ConditionalVAE)
    assert new.unlearn_record_["log"][0]["rewind_epoch"] == 3
    # rewind restarts from the checkpoint: the forgotten label's offsets are not reset (the
    # checkpoint saw its cells), unlike conditional_reset and fast_retrain
    code = _code(model, FORGET_LABEL)
    assert new.module.label_offsets[code].abs().sum() > 0
    # a retrain replays the checkpoint epoch, and its forgotten label's offsets stay zero
    exact = model.unlearn(
        forget_names, method="retrain", max_epochs=4, seed=0, retain_tolerance=1.0, **FAST
    )
    assert exact.rewind_checkpoint_["epoch"] == 3
    assert (exact.module.label_offsets[code] == 0).all()
