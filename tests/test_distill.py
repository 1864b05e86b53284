"""``distill``: the student, the guards against transferred memory, the record."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from scvi.dataloaders import AnnDataLoader

import scvi_unlearn as su
from conftest import dense, forget_advantage, module_state, same_state
from scvi_unlearn.unlearn.approximate import _distill

QUIET = {"enable_progress_bar": False, "on_degradation": "warn"}
#: a short run with both guards
GUARDED = {"max_epochs": 4, "guard_neighbors": 5, "anneal_fraction": 0.5, **QUIET}


def _unlearn(model, forget, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", su.unlearn.UnlearningWarning)
        return model.unlearn(forget, method="distill", **{**QUIET, **kwargs})


@pytest.fixture(scope="module")
def before(trained_model):
    return module_state(trained_model)


@pytest.fixture(scope="module")
def runs(trained_model, before, forget_names):
    """Two guarded runs with seed 1 and one with seed 2 (:data:`GUARDED`)."""
    return [_unlearn(trained_model, forget_names, seed=s, **GUARDED) for s in (1, 1, 2)]


# ------------------------------------------------------------------------------ helpers


def test_anneal_factors():
    assert _distill.anneal_factors(4, 0.0) == [1.0] * 4
    assert _distill.anneal_factors(6, 0.5) == pytest.approx([1, 1, 1, 2 / 3, 1 / 3, 0])
    assert _distill.anneal_factors(5, 1.0) == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0])
    assert _distill.anneal_factors(10, 0.04) == [1.0] * 10  # rounds to no ramp


def test_neighbour_radii_and_keep(trained_model):
    g = torch.Generator().manual_seed(0)
    retain, forget = torch.randn(50, 3, generator=g), torch.randn(4, 3, generator=g)
    radii = _distill.neighbour_radii(forget, retain, 3)
    dist = torch.cdist(forget, retain, compute_mode="donot_use_mm_for_euclid_dist")
    assert torch.allclose(radii, dist.sort(dim=1).values[:, 2])
    assert torch.allclose(_distill.neighbour_radii(forget, retain, 80), dist.max(dim=1).values)
    plan = _distill.DistillPlan(
        copy.deepcopy(trained_model.module),
        trained_model.module,
        distill_weight=1.0,
        decoder_weight=1.0,
        factors=[1.0],
        forget_latent=forget,
        radii=radii,
    )
    keep = plan.keep(retain)
    nearest = torch.zeros(50, dtype=torch.bool)
    nearest[dist.topk(3, dim=1, largest=False).indices.reshape(-1)] = True
    assert torch.equal(keep == 0, nearest)  # exactly the 3 nearest of each forget point


# ------------------------------------------------------------------------------ the method


def test_registered():
    assert su.unlearn.METHODS["distill"] is su.unlearn.distill
    assert "distill" not in su.unlearn.FROM_SCRATCH  # the teacher saw the forget cells
    assert "Parameters" in su.unlearn.distill.__doc__ and "Hinton" in su.unlearn.distill.__doc__


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_epochs": 0}, "max_epochs"), ({"max_epochs": 2.5}, "max_epochs"), ({"lr": 0}, "lr")]
    + [({"distill_weight": -1}, "distill_weight"), ({"decoder_weight": -0.1}, "decoder_weight")]
    + [({"anneal_fraction": 1.5}, "anneal_fraction"), ({"anneal_fraction": -0.1}, "anneal")]
    + [({"guard_neighbors": -1}, "guard_neighbors"), ({"guard_neighbors": 2.0}, "guard_")]
    + [({"lr": float("nan")}, "lr"), ({"batch_size": 0}, "batch_size")]
    + [({"retain_sample": 0}, "retain_sample")],
)
def test_bad_hyperparameters(kwargs, match, trained_model, before, forget_names):
    with pytest.raises(ValueError, match=match):
        trained_model.unlearn(forget_names, method="distill", **kwargs, **QUIET)
    assert same_state(before, module_state(trained_model))


def test_original_untouched_and_reproducible(runs, trained_model, before):
    assert same_state(before, module_state(trained_model))
    a, b, c = (module_state(r) for r in runs)
    assert same_state(a, b)
    assert not same_state(a, c)


def test_student_is_a_fresh_initialisation(trained_model, forget_names, monkeypatch):
    """Without training, the student is ``new_model(copy_weights=False)``: not the original."""
    monkeypatch.setattr(su.unlearn.UnlearningTask, "fit", lambda *a, **k: None)
    new = _unlearn(trained_model, forget_names, seed=0)
    fresh = _unlearn(trained_model, forget_names, seed=0, distill_weight=0.0)
    ours, orig = module_state(new), module_state(trained_model)
    assert same_state(ours, module_state(fresh))
    # the trained layers (the unused l_encoder keeps the seed-0 initialisation of both)
    linear = [k for k in orig if k.startswith("z_encoder") and orig[k].dim() == 2]
    assert linear and not any(torch.equal(ours[k], orig[k]) for k in linear)


def test_user_adata_untouched(trained_model, forget_names):
    adata = trained_model.adata
    counts = dense(adata.layers["counts"]).copy()
    obs, uns_keys = adata.obs.copy(), set(adata.uns)
    _unlearn(trained_model, forget_names, seed=0, max_epochs=1, guard_neighbors=3)
    assert trained_model.adata is adata
    np.testing.assert_array_equal(dense(adata.layers["counts"]), counts)
    assert adata.obs.equals(obs) and set(adata.uns) == uns_keys


def test_record(runs, forget_names, trained_model):
    record = runs[0].unlearn_record_
    assert record["method"] == "distill" and record["seed"] == 1
    hyper = record["hyperparameters"]
    assert hyper["max_epochs"] == 4 and hyper["guard_neighbors"] == 5
    assert hyper["anneal_fraction"] == 0.5 and hyper["distill_weight"] == 3.0
    first, *steps = record["log"]
    assert first["step"] == 0 and first["guard_neighbors"] == 5.0
    n_sample = record["budget"]["retain_cells_guard"]
    assert first["guard_sample"] == n_sample > 0 and first["guard_radius"] > 0
    # at least the 5 nearest of one forget cell, at most 5 per forget cell
    assert 5 / n_sample <= first["guarded_in_sample"] <= 5 * len(forget_names) / n_sample
    weights = {s["epoch"]: s["distill_weight"] for s in steps}
    assert weights == pytest.approx({0: 3.0, 1: 3.0, 2: 1.5, 3: 0.0})  # default weight 3
    assert all("distill_divergence" not in s for s in steps if s["epoch"] == 3)
    assert any(s.get("guarded_fraction", 0) > 0 for s in steps)
    assert runs[0].train_recipe_ == {
        **trained_model.train_recipe_,
        "datasplitter_kwargs": runs[0].train_recipe_["datasplitter_kwargs"],
    }
    assert not set(forget_names) & set(runs[0].trained_obs_names)


def test_guarded_cells_get_no_distillation_term(trained_model, pbmc_train):
    """A guarded cell contributes the ELBO only: with every cell guarded the loss is the retain
    ELBO, with none guarded the divergence term is the mean divergence."""
    student = copy.deepcopy(trained_model.module)
    with torch.no_grad():  # a student different from the teacher
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student.eval()  # deterministic forward passes (no dropout)
    batch = next(iter(AnnDataLoader(trained_model.adata_manager, batch_size=64, shuffle=False)))
    loc = _distill.teacher_latent(trained_model.module, trained_model.adata_manager, np.arange(64))

    def plan(radius):
        return _distill.DistillPlan(
            student, trained_model.module, distill_weight=2.0, decoder_weight=1.0,
            factors=[1.0], forget_latent=loc[:3], radii=torch.full((3,), radius),
        )  # fmt: skip

    all_out, none_out = plan(1e6), plan(-1.0)
    loss_all, terms_all, _ = all_out.unlearning_loss(batch, None)
    loss_none, terms_none, _ = none_out.unlearning_loss(batch, None)
    assert terms_all["guarded_fraction"] == 1.0 and terms_all["distill_divergence"] == 0.0
    assert float(loss_all.detach()) == pytest.approx(terms_all["retain_nelbo"], rel=1e-6)
    d, _ = none_out.divergence(batch)
    assert terms_none["guarded_fraction"] == 0.0
    assert terms_none["distill_divergence"] == pytest.approx(float(d.detach().mean()), rel=1e-5)
    assert float(loss_none.detach()) == pytest.approx(
        terms_none["retain_nelbo"] + 2.0 * float(d.detach().mean()), rel=1e-5
    )
    # the teacher latent of the first 3 cells: each is within a tiny radius of itself only
    keep = plan(1e-3).keep(loc)
    assert keep[:3].sum() == 0 and keep[3:].sum() >= 58


def test_forget_cells_lose_their_advantage(trained_model, forget_names, pbmc):
    """The forget cells were fit better than unseen cells of the other types: the guarded
    student's advantage on them is smaller than the original's."""
    new = _unlearn(
        trained_model, forget_names, seed=1, max_epochs=20, guard_neighbors=15, anneal_fraction=0.5
    )
    gap_old = forget_advantage(trained_model, pbmc, forget_names)
    gap_new = forget_advantage(new, pbmc, forget_names)
    assert gap_old > 0
    assert gap_new < gap_old, (gap_old, gap_new)
