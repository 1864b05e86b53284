"""``dp_sgd``: a DP-SGD retrain on the retain cells (Opacus, ghost clipping).

Small settings throughout (a few epochs of the 30-epoch session model's retain cells); the
utility and speed numbers live in ``python -m benchmarks run dp`` (configs ``speed``,
``utility``, ``grid``) and ``docs/dp_sgd.md``.
"""

from __future__ import annotations

import copy
import re
import warnings

import numpy as np
import pytest
import torch

import scvi_unlearn as su
from conftest import module_state
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.metrics import per_cell_elbo
from scvi_unlearn.unlearn.private import _dp_training
from scvi_unlearn.unlearn.private._dp_sgd import LAYER_NORM, train_private
from scvi_unlearn.unlearn.private._dp_training import PerCellELBO

#: a few epochs at a high learning rate: enough to move the ELBO far from its initial value
FAST = {"max_epochs": 4, "batch_size": 128, "lr": 1e-2, "enable_progress_bar": False}


def _unlearn(model, forget, **kwargs):
    with warnings.catch_warnings():
        # a 4-epoch private model is worse than the original: the retain check warns
        warnings.simplefilter("ignore", su.unlearn.UnlearningWarning)
        return model.unlearn(forget, method="dp_sgd", **{**FAST, **kwargs})


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def original_params(trained_model):
    return module_state(trained_model)


@pytest.fixture(scope="module")
def fetched():
    """obs_names of every cell read during training, per run (see ``runs``)."""
    return []


@pytest.fixture(scope="module")
def runs(trained_model, forget_names, original_params, fetched):
    """Two runs with seed 1 and one with seed 2; every cell fetched for training recorded."""
    original = _dp_training._fetch_batch

    def spy(dataset, positions, keys, device):
        fetched.append(np.asarray(dataset.adata_manager.adata.obs_names[positions], dtype=str))
        return original(dataset, positions, keys, device)

    mp = pytest.MonkeyPatch()
    mp.setattr(_dp_training, "_fetch_batch", spy)
    try:
        a = _unlearn(trained_model, forget_names, seed=1)
        b = _unlearn(trained_model, forget_names, seed=1)
        c = _unlearn(trained_model, forget_names, seed=2, accountant="rdp")
    finally:
        mp.undo()
    return a, b, c


def test_registered_and_documented():
    assert su.unlearn.METHODS["dp_sgd"] is su.unlearn.dp_sgd
    doc = su.unlearn.dp_sgd.__doc__
    assert "Parameters" in doc and "Abadi" in doc and "Yousefpour" in doc


def test_original_untouched(runs, trained_model, original_params, forget_names):
    new = runs[0]
    assert isinstance(new, su.SCVI) and new is not trained_model
    assert new.module is not trained_model.module
    after = module_state(trained_model)
    assert all(torch.equal(original_params[k], after[k]) for k in original_params)
    assert trained_model.adata.n_obs == len(trained_model.trained_obs_names)
    assert not hasattr(trained_model, "dp_epsilon_")
    assert not set(forget_names) & set(new.adata.obs_names)


def test_layer_norm_model_of_the_original_class(runs, trained_model):
    new = runs[0]
    assert type(new) is type(trained_model) and new.adata is not trained_model.adata
    kwargs = new.init_params_["kwargs"]["kwargs"]
    assert {k: kwargs[k] for k in LAYER_NORM} == LAYER_NORM
    for key, value in trained_model.init_params_["non_kwargs"].items():
        assert new.init_params_["non_kwargs"][key] == value
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in new.module.modules())
    assert any(isinstance(m, torch.nn.LayerNorm) for m in new.module.modules())
    # a plain scVI module: no Opacus hooks or attributes left behind
    assert not new.module.training
    for p in new.module.parameters():
        assert p.requires_grad
        assert not any(hasattr(p, a) for a in ("grad_sample", "_norm_sample", "summed_grad"))
    assert all(not m._forward_hooks and not m._backward_hooks for m in new.module.modules())


def test_reproducible_with_a_seed(runs):
    a, b, c = runs
    pa, pb, pc = module_state(a), module_state(b), module_state(c)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert a.dp_epsilon_ == b.dp_epsilon_
    assert any(not torch.equal(pa[k], pc[k]) for k in pa if pa[k].is_floating_point())


def test_accounting_in_attributes_and_record(runs):
    from opacus.accountants import create_accountant

    for new, accountant in zip(runs, ("prv", "prv", "rdp")):
        acc = new.dp_accounting_
        n = len(new.train_indices)
        assert acc["n_train"] == n and acc["accountant"] == accountant
        assert new.dp_delta_ == acc["delta"] == pytest.approx(1 / n**2)
        assert 0 < new.dp_epsilon_ <= new.unlearn_record_["hyperparameters"]["target_epsilon"]
        assert acc["grad_sample_mode"] == "ghost" and acc["poisson_sampling"]
        assert acc["likelihood_passes"] == 1  # the likelihood is cut out of the second pass
        # the reported epsilon is the accountant's for the steps taken
        assert acc["steps"] == FAST["max_epochs"] * round(1 / acc["sample_rate"])
        fresh = create_accountant(accountant)
        fresh.history = [(acc["noise_multiplier"], acc["sample_rate"], acc["steps"])]
        assert fresh.get_epsilon(acc["delta"]) == pytest.approx(new.dp_epsilon_, rel=1e-9)
        # the record's log ends with the same numbers; no training loss recorded by default
        log = new.unlearn_record_["log"]
        assert len(log) == FAST["max_epochs"]
        assert log[-1]["epsilon"] == new.dp_epsilon_ and log[-1]["delta"] == new.dp_delta_
        assert not any("loss" in entry for entry in log)
        # the frozen parameters: l_encoder (observed library size) and the unused px_r head
        assert any(name.startswith("l_encoder.") for name in acc["frozen"])


def test_custom_delta_and_loss_log(trained_model, forget_names):
    new = _unlearn(
        trained_model,
        forget_names,
        seed=0,
        max_epochs=1,
        target_epsilon=2.0,
        target_delta=1e-4,
        log_loss=True,
        accountant="rdp",
    )
    assert new.dp_delta_ == 1e-4 and new.dp_epsilon_ <= 2.0
    assert np.isfinite(new.unlearn_record_["log"][0]["loss"])


def test_the_model_trains(runs):
    """The retain ELBO of the trained model beats that of its own initialisation."""
    new = runs[0]
    init_kwargs = {**new.init_params_["non_kwargs"], **new.init_params_["kwargs"]["kwargs"]}
    with isolated_seed(1):  # dp_sgd builds the model first thing under the request's seed
        init = su.SCVI(new.adata, **init_kwargs)
    init.module.eval()
    init.is_trained_ = True
    p_new, p_init = module_state(new), module_state(init)
    assert any(not torch.equal(p_new[k], p_init[k]) for k in p_new)
    cells = new.train_indices[:128]
    trained = per_cell_elbo(new, indices=cells, n_draws=2)["elbo"].mean()
    untrained = per_cell_elbo(init, indices=cells, n_draws=2)["elbo"].mean()
    assert np.isfinite(trained) and trained > untrained + 100  # nats per cell


def test_forget_cells_never_enter_training(runs, fetched, forget_names):
    new = runs[0]
    seen = np.concatenate(fetched)
    assert seen.size > 0
    assert not set(seen) & set(forget_names)
    # only retain *training* cells are read (validation cells are not trained on either)
    assert set(seen) <= set(new.train_obs_names_)
    assert not set(seen) & set(new.validation_obs_names_)


def test_usable_by_the_package(runs, tmp_path):
    new = runs[0]
    elbo = per_cell_elbo(new, n_draws=1)
    assert len(elbo) == new.adata.n_obs and np.isfinite(elbo["elbo"]).all()
    new.save(tmp_path / "dp", save_anndata=False)
    loaded = su.SCVI.load(tmp_path / "dp", adata=new.adata)
    assert loaded.dp_epsilon_ == new.dp_epsilon_ and loaded.dp_delta_ == new.dp_delta_
    assert loaded.dp_accounting_["steps"] == new.dp_accounting_["steps"]
    p_new, p_loaded = module_state(new), module_state(loaded)
    assert all(torch.equal(p_new[k], p_loaded[k]) for k in p_new)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_epsilon": 0.0}, "target_epsilon must be a finite number > 0"),
        ({"target_epsilon": -1.0}, "target_epsilon must be a finite number > 0"),
        ({"target_epsilon": float("inf")}, "target_epsilon must be a finite number > 0"),
        ({"target_delta": 1.0}, re.escape("target_delta must be in (0, 1)")),
        ({"target_delta": 2.0}, re.escape("target_delta must be in (0, 1)")),
        ({"target_delta": 0.0}, re.escape("target_delta must be in (0, 1)")),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be a finite number > 0"),
        ({"max_grad_norm": -1.0}, "max_grad_norm must be a finite number > 0"),
        ({"max_epochs": 0}, "max_epochs must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"accountant": "moments"}, "accountant must be one of"),
    ],
)
def test_bad_hyperparameters(kwargs, match, trained_model, forget_names, original_params):
    with pytest.raises(ValueError, match=match):
        trained_model.unlearn(forget_names, method="dp_sgd", **kwargs)
    after = module_state(trained_model)
    assert all(torch.equal(original_params[k], after[k]) for k in original_params)


def test_unknown_hyperparameter(trained_model, forget_names):
    with pytest.raises(TypeError, match=r"Did you mean \[.*'target_epsilon'"):
        trained_model.unlearn(forget_names, method="dp_sgd", target_epsilom=1.0)


@pytest.fixture(scope="module")
def two_batches():
    """A small simulated AnnData with two batches (for ``dispersion="gene-batch"``)."""
    adata = su.data.simulate(40, 60, n_batches=2, random_state=0)
    su.SCVI.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="cell_type")
    return adata


@pytest.mark.parametrize("dispersion", ["gene", "gene-label", "gene-batch", "gene-cell"])
def test_ghost_norms_match_a_per_cell_loop(fresh_train, two_batches, dispersion):
    """Opacus' per-cell gradient norms of the wrapper (px_r included) are the true ones."""
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from scvi.data import AnnTorchDataset

    adata = two_batches if dispersion == "gene-batch" else fresh_train
    with isolated_seed(0):
        model = su.SCVI(adata, n_hidden=32, dispersion=dispersion, **LAYER_NORM)
    keys = _dp_training._keys(model.adata_manager)
    dataset = AnnTorchDataset(model.adata_manager)
    module = model.module
    module.train()
    wrapper = PerCellELBO(module, keys)
    _dp_training._freeze_unused(wrapper, _dp_training._probe_inputs(dataset, keys, "cpu"))
    params = [p for p in wrapper.parameters() if p.requires_grad]
    if dispersion != "gene-cell":
        assert any(p is wrapper.dispersion.weight for p in params)
        assert not module.px_r.requires_grad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsm = GradSampleModuleFastGradientClipping(
            wrapper, loss_reduction="sum", max_grad_norm=1.0, use_ghost_clipping=True
        )
        inputs = _dp_training._fetch_batch(dataset, np.arange(6), keys, "cpu")
        with isolated_seed(0):
            per_cell = gsm(*inputs)
        per_cell.sum().backward(retain_graph=True)
        ghost = gsm.get_norm_sample()
        gsm.disable_hooks()
        loop = []
        for i in range(per_cell.shape[0]):  # same forward pass (same z and dropout draws)
            grads = torch.autograd.grad(per_cell[i], params, retain_graph=True)
            loop.append(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        gsm._close()
    assert torch.allclose(ghost.double(), torch.stack(loop), rtol=1e-4)


def test_train_private_original(fresh_train):
    with isolated_seed(0):
        model = su.SCVI(fresh_train, n_hidden=32, **LAYER_NORM)
    train_private(
        model, max_epochs=1, target_epsilon=4.0, accountant="rdp", enable_progress_bar=False
    )
    assert model.is_trained_ and model.dp_epsilon_ <= 4.0
    n = len(model.train_indices)
    assert n == int(np.ceil(0.9 * fresh_train.n_obs)) and model.dp_delta_ == 1 / n**2
    assert set(model.trained_obs_names) == set(fresh_train.obs_names)
    assert np.isfinite(per_cell_elbo(model, n_draws=1)["elbo"]).all()


def test_train_private_refuses_batch_norm(fresh_train):
    model = su.SCVI(fresh_train, n_hidden=32)
    with pytest.raises(ValueError, match="use_batch_norm='none', use_layer_norm='both'"):
        train_private(model, max_epochs=1)


def test_empty_poisson_sample_is_a_noise_step(fresh_train):
    """With 2 cells sampled at rate 1/2, some steps draw no cell: they still count."""
    from scvi_unlearn.unlearn.private._dp_training import train_dp_module

    with isolated_seed(0):
        model = su.SCVI(fresh_train, n_hidden=16, **LAYER_NORM)
    before = module_state(model)
    calls = []
    original = _dp_training._fetch_batch

    def spy(*args):
        calls.append(len(args[1]))
        return original(*args)

    mp = pytest.MonkeyPatch()
    mp.setattr(_dp_training, "_fetch_batch", spy)
    try:
        with isolated_seed(0):
            acc = train_dp_module(
                model.module,
                model.adata_manager,
                np.array([0, 1]),
                max_epochs=5,
                batch_size=1,
                accountant="rdp",
                accelerator="cpu",
            )
    finally:
        mp.undo()
    assert acc["steps"] == 10 and acc["sample_rate"] == 0.5
    assert len(calls) < acc["steps"]  # at least one empty sample (seed 0)
    after = module_state(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("dispersion", "likelihood"),
    [("gene", "zinb"), ("gene-cell", "nb"), ("gene-label", "zinb"), ("gene", "poisson")],
)
def test_one_likelihood_pass_gives_opacus_clipped_sum(fresh_train, dispersion, likelihood):
    """The cut graph (``_dp_split``) gives the same clipped gradient sum as Opacus' own two
    backward passes, on a batch where clipping binds."""
    from opacus import PrivacyEngine
    from scvi.data import AnnTorchDataset

    from scvi_unlearn.unlearn.private._dp_split import clipped_backward

    with isolated_seed(0):
        model = su.SCVI(
            fresh_train, n_hidden=32, dispersion=dispersion, gene_likelihood=likelihood,
            **LAYER_NORM,
        )  # fmt: skip
    keys = _dp_training._keys(model.adata_manager)
    dataset = AnnTorchDataset(model.adata_manager)
    batch = _dp_training._fetch_batch(dataset, np.arange(16), keys, "cpu")
    grads, coefficients = {}, {}
    for split in (False, True):
        module = copy.deepcopy(model.module)
        module.train()
        wrapper = PerCellELBO(module, keys)
        probe = _dp_training._probe_inputs(dataset, keys, "cpu")
        _dp_training._freeze_unused(wrapper, probe)
        params = [p for p in wrapper.parameters() if p.requires_grad]
        assert _dp_training._can_split(wrapper, probe, params)
        assert wrapper.pairs is None and not wrapper.split_likelihood  # the probe is undone
        wrapper.split_likelihood = split
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.arange(64)), batch_size=16
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dp_module, optimizer, criterion, _ = PrivacyEngine().make_private(
                module=wrapper,
                optimizer=torch.optim.SGD(params, lr=0.1),
                criterion=_dp_training.PerCellCriterion("mean"),
                data_loader=loader,
                noise_multiplier=0.0,
                max_grad_norm=0.5,
                grad_sample_mode="ghost",
            )
            with isolated_seed(1):
                per_cell = dp_module(*batch)
            optimizer.zero_grad()
            if split:
                assert wrapper.pairs and all(o.shape[0] == 16 for o, _ in wrapper.pairs)
                clipped_backward(
                    dp_module, optimizer, per_cell, wrapper.pairs, criterion.loss_reduction
                )
            else:
                assert wrapper.pairs is None
                criterion(per_cell).backward()
            coefficients[split] = dp_module.get_clipping_coef()
            grads[split] = [p.grad.detach().clone() for p in params]
            dp_module._close()
    assert (coefficients[True] < 1).any()  # clipping binds on this batch
    assert torch.allclose(coefficients[True], coefficients[False], rtol=1e-5)
    for a, b in zip(grads[True], grads[False], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))
