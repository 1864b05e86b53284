"""``langevin``: noisy fine-tuning on the retain cells (seeded noise, finetune at noise 0)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

import scvi_unlearn as su
from conftest import dense, forget_advantage, module_state, same_state
from scvi_unlearn.unlearn.approximate import _langevin

QUIET = {"enable_progress_bar": False, "on_degradation": "warn"}
#: a short run (the noise is added after each of its steps)
SHORT = {"max_epochs": 3, "lr": 5e-3, "noise": 0.5, **QUIET}


def _unlearn(model, forget, method="langevin", **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", su.unlearn.UnlearningWarning)
        return model.unlearn(forget, method=method, **{**QUIET, **kwargs})


@pytest.fixture(scope="module")
def before(trained_model):
    return module_state(trained_model)


@pytest.fixture(scope="module")
def runs(trained_model, before, forget_names):
    """``langevin`` (:data:`SHORT`) with seeds 1, 1, 2; at noise 0 with seed 1; ``finetune``
    with the same arguments (epochs, lr, finetune's defaults otherwise) and seed 1."""
    noisy = [_unlearn(trained_model, forget_names, seed=s, **SHORT) for s in (1, 1, 2)]
    silent = _unlearn(trained_model, forget_names, seed=1, **{**SHORT, "noise": 0.0})
    finetune = _unlearn(trained_model, forget_names, "finetune", seed=1, max_epochs=3, lr=5e-3)
    return {"noisy": noisy, "silent": silent, "finetune": finetune}


# ------------------------------------------------------------------------------ helpers


def test_noise_generator_is_its_own_stream():
    a = torch.randn(100, generator=_langevin.noise_generator(3))
    b = torch.randn(100, generator=_langevin.noise_generator(3))
    c = torch.randn(100, generator=_langevin.noise_generator(4))
    plain = torch.randn(100, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, plain)  # not the global generator's draws for the same seed


def test_plan_noise(trained_model):
    """The noise has standard deviation ``noise * lr * factor``, reaches every trainable
    parameter and leaves buffers and the global generator alone."""
    module = copy.deepcopy(trained_model.module)
    plan = _langevin.LangevinPlan(
        module, noise=2.0, factors=[1.0, 0.5, 0.0], generator=_langevin.noise_generator(0), lr=1e-2
    )
    assert [plan.noise_std(e) for e in range(4)] == pytest.approx([0.02, 0.01, 0.0, 0.0])
    old = {k: v.clone() for k, v in module.state_dict().items()}
    params = dict(module.named_parameters())
    state = torch.get_rng_state()
    plan.add_noise(0.1)
    assert torch.equal(state, torch.get_rng_state())
    new = module.state_dict()
    trained = [k for k, p in params.items() if p.requires_grad]
    moved = torch.cat([(new[k] - old[k]).reshape(-1) for k in trained])
    assert moved.std().item() == pytest.approx(0.1, rel=0.05)
    assert (moved != 0).float().mean() > 0.99
    buffers = [k for k in old if k not in params]
    assert buffers and all(torch.equal(old[k], new[k]) for k in buffers)


# ------------------------------------------------------------------------------ the method


def test_registered():
    assert su.unlearn.METHODS["langevin"] is su.unlearn.langevin
    assert "langevin" not in su.unlearn.FROM_SCRATCH  # starts from the original's weights
    doc = su.unlearn.langevin.__doc__
    assert "Parameters" in doc and "Chien" in doc and "2401.10371" in doc


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_epochs": 0}, "max_epochs"), ({"max_epochs": 2.5}, "max_epochs"), ({"lr": 0}, "lr")]
    + [({"lr": float("nan")}, "lr"), ({"noise": -0.1}, "noise"), ({"noise": "1"}, "noise")]
    + [({"noise": float("inf")}, "noise"), ({"anneal_fraction": 1.5}, "anneal_fraction")]
    + [({"anneal_fraction": -0.1}, "anneal_fraction"), ({"batch_size": 0}, "batch_size")]
    + [({"weight_decay": -1.0}, "weight_decay"), ({"kl_weight": -1.0}, "kl_weight")]
    + [({"retain_sample": 0}, "retain_sample")],
)
def test_bad_hyperparameters(kwargs, match, trained_model, before, forget_names):
    with pytest.raises(ValueError, match=match):
        trained_model.unlearn(forget_names, method="langevin", **kwargs, **QUIET)
    assert same_state(before, module_state(trained_model))


def test_reproducible_and_original_untouched(runs, trained_model, before):
    assert same_state(before, module_state(trained_model))
    a, b, c = (module_state(r) for r in runs["noisy"])
    assert same_state(a, b)
    assert not same_state(a, c)


def test_noise_zero_is_finetune(runs):
    assert same_state(module_state(runs["silent"]), module_state(runs["finetune"]))


def test_noise_perturbs(runs):
    noisy, silent = module_state(runs["noisy"][0]), module_state(runs["silent"])
    weights = [k for k in noisy if k.endswith("weight") and noisy[k].dim() == 2]
    assert weights and all(not torch.equal(noisy[k], silent[k]) for k in weights)


def test_record(runs, forget_names):
    record = runs["noisy"][0].unlearn_record_
    assert record["method"] == "langevin" and record["seed"] == 1
    hyper = record["hyperparameters"]
    assert hyper["noise"] == 0.5 and hyper["max_epochs"] == 3 and hyper["lr"] == 5e-3
    assert hyper["anneal_fraction"] == 0.5  # default: no noise in the last epoch
    stds = {s["epoch"]: s.get("noise_std", 0.0) for s in record["log"]}
    lr = hyper["lr"]
    assert stds == pytest.approx({0: 0.5 * lr, 1: 0.25 * lr, 2: 0.0})
    assert all("noise_std" not in s for s in runs["silent"].unlearn_record_["log"])
    assert not set(forget_names) & set(runs["noisy"][0].trained_obs_names)


def test_constant_noise(trained_model, forget_names):
    new = _unlearn(trained_model, forget_names, seed=0, max_epochs=2, anneal_fraction=0.0)
    stds = [s["noise_std"] for s in new.unlearn_record_["log"]]
    hyper = new.unlearn_record_["hyperparameters"]
    assert stds and all(v == pytest.approx(hyper["noise"] * hyper["lr"]) for v in stds)


def test_user_adata_untouched(trained_model, forget_names):
    adata = trained_model.adata
    counts = dense(adata.layers["counts"]).copy()
    obs, uns_keys = adata.obs.copy(), set(adata.uns)
    _unlearn(trained_model, forget_names, seed=0, max_epochs=1)
    assert trained_model.adata is adata
    np.testing.assert_array_equal(dense(adata.layers["counts"]), counts)
    assert adata.obs.equals(obs) and set(adata.uns) == uns_keys


def test_forget_cells_lose_their_advantage(trained_model, forget_names, pbmc):
    """The forget cells were fit better than unseen cells of the other types: with the
    defaults, their advantage is smaller than under the original."""
    new = _unlearn(trained_model, forget_names, seed=1)
    gap_old = forget_advantage(trained_model, pbmc, forget_names)
    gap_new = forget_advantage(new, pbmc, forget_names)
    assert gap_old > 0
    assert gap_new < gap_old, (gap_old, gap_new)
