"""``reinit_finetune``: saliency selection, re-initialisation, fine-tuning and its record."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import scvi_unlearn as su
from scvi_unlearn.metrics import per_cell_elbo
from scvi_unlearn.unlearn.approximate import _reinit_finetune as rf
from scvi_unlearn.unlearn.core import _importances

QUIET = {"enable_progress_bar": False, "on_degradation": "warn"}
#: a short run at the default fraction
FAST = {"max_epochs": 3, **QUIET}


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.named_parameters()}


def _unlearn(model, forget, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", su.unlearn.UnlearningWarning)
        return model.unlearn(forget, method="reinit_finetune", **kwargs)


@pytest.fixture(scope="module")
def model(pbmc):
    """A small model of its own, on a freshly registered copy of the training members."""
    from scvi_unlearn._seeding import isolated_seed

    adata = pbmc[pbmc.obs["membership"] == "train"].copy()
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    with isolated_seed(0):
        m = su.SCVI(adata, n_latent=10, n_hidden=64)
        m.train(max_epochs=30, enable_progress_bar=False, train_size=0.9)
    return m


@pytest.fixture(scope="module")
def before(model):
    return _params(model)


@pytest.fixture(scope="module")
def runs(model, before, forget_names):
    """Two runs with seed 1 and one with seed 2 (:data:`FAST`)."""
    return [_unlearn(model, forget_names, seed=s, **FAST) for s in (1, 1, 2)]


# ------------------------------------------------------------------------------ selection


def _saliency(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"a": (7, 13), "b": (5,), "c": (40, 3), "d": (1,)}
    return {k: torch.rand(s, generator=g, dtype=torch.float64) for k, s in shapes.items()}


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.37, 1.0])
def test_global_selection_is_exactly_the_top_fraction(fraction):
    s = _saliency()
    masks = rf.select_salient(s, fraction, scope="global")
    n = sum(v.numel() for v in s.values())
    assert sum(int(m.sum()) for m in masks.values()) == max(1, int(np.floor(fraction * n + 0.5)))
    chosen = torch.cat([s[k][masks[k]] for k in s])
    rest = torch.cat([s[k][~masks[k]] for k in s])
    assert rest.numel() == 0 or chosen.min() > rest.max()
    assert all(masks[k].shape == s[k].shape and masks[k].dtype == torch.bool for k in s)


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_per_tensor_selection(fraction):
    s = _saliency(1)
    masks = rf.select_salient(s, fraction, scope="per_tensor")
    for k, v in s.items():
        k_t = int(np.floor(fraction * v.numel() + 0.5))
        assert int(masks[k].sum()) == k_t
        if 0 < k_t < v.numel():
            assert v[masks[k]].min() > v[~masks[k]].max()


def test_relative_saliency_is_bounded_and_zero_where_unused():
    i_f = {"w": torch.tensor([0.0, 1.0, 2.0, 0.0], dtype=torch.float64)}
    i_r = {"w": torch.tensor([0.0, 1.0, 0.0, 3.0], dtype=torch.float64)}
    i_d = _importances.pooled(i_r, 9, i_f, 1)
    s = rf.saliency_scores(i_f, i_d)["w"]
    assert s.tolist() == pytest.approx([0.0, 1.0, 10.0, 0.0])  # at most n / n_f = 10
    assert torch.equal(rf.saliency_scores(i_f)["w"], i_f["w"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fraction": 0.0}, ValueError, r"fraction must be in \(0, 1\]"),
        ({"fraction": 1.5}, ValueError, "fraction"),
        ({"fraction": -0.1}, ValueError, "fraction"),
        ({"fraction": float("nan")}, ValueError, "fraction"),
        ({"fraction": "0.1"}, TypeError, "fraction"),
        ({"saliency": "gradient"}, ValueError, "saliency"),
        ({"scope": "layer"}, ValueError, "scope"),
        ({"tune": "frozen"}, ValueError, "tune"),
        ({"max_epochs": 0}, ValueError, "max_epochs"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"n_draws": 0}, ValueError, "n_draws"),
    ],
)
def test_bad_hyperparameters(kwargs, error, match, model, before, forget_names):
    with pytest.raises(error, match=match):
        model.unlearn(forget_names, method="reinit_finetune", **kwargs, **QUIET)
    after = _params(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_select_salient_rejects_bad_scope():
    with pytest.raises(ValueError, match="scope"):
        rf.select_salient(_saliency(), 0.1, scope="layer")


# ------------------------------------------------------------------------------ the method


def test_registered():
    assert su.unlearn.METHODS["reinit_finetune"] is su.unlearn.reinit_finetune
    assert "reinit_finetune" in su.benchmark.ALL_METHODS
    assert "reinit_finetune" not in su.unlearn.FROM_SCRATCH
    assert "Parameters" in su.unlearn.reinit_finetune.__doc__


def test_original_untouched_and_reproducible(runs, model, before):
    after = _params(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    a, b, c = (_params(r) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert any(not torch.equal(a[k], before[k]) for k in a)


def test_reinit_changes_exactly_the_selected_entries(model, before, forget_names, monkeypatch):
    """Without the fine-tuning, the new model differs from the original in exactly
    ``round(fraction * n)`` scored entries, each set to a fresh initialisation."""
    monkeypatch.setattr(rf, "train_on_retain", lambda *a, **k: None)
    fraction = 0.03
    new = _unlearn(model, forget_names, fraction=fraction, seed=0, **QUIET)
    entry = new.unlearn_record_["log"][0]
    after = _params(new)
    changed = sum(int((after[k] != before[k]).sum()) for k in before)
    assert changed == entry["n_reinit"] == int(np.floor(fraction * entry["n_scored"] + 0.5))
    assert entry["fraction_reinit"] == pytest.approx(fraction, abs=1 / entry["n_scored"])
    assert entry["reinit_rms"] > 0
    per_tensor = _unlearn(
        model,
        forget_names,
        fraction=fraction,
        scope="per_tensor",
        saliency="relative",
        seed=0,
        **QUIET,
    )
    assert "retain_cells_importance" in per_tensor.unlearn_record_["budget"]
    after = _params(per_tensor)
    counts = {k: int((after[k] != before[k]).sum()) for k in before}
    assert sum(counts.values()) == per_tensor.unlearn_record_["log"][0]["n_reinit"]
    large = [k for k in before if before[k].numel() >= 1000 and counts[k]]
    assert len(large) >= 3
    for k in large:  # every large scored tensor gets its share (unused ones have no Fisher)
        assert counts[k] == int(np.floor(fraction * before[k].numel() + 0.5)), k


def test_tune_selected_moves_only_the_reinitialised_entries(model, before, forget_names):
    new = _unlearn(model, forget_names, tune="selected", seed=0, **{**FAST, "fraction": 0.02})
    n_reinit = new.unlearn_record_["log"][0]["n_reinit"]
    after = _params(new)
    moved = sum(
        int(((after[k] - before[k]).abs() > 1e-4 * (1 + before[k].abs())).sum()) for k in before
    )
    assert 0 < moved <= n_reinit
    assert all(p.requires_grad for p in new.module.parameters())


def test_forget_elbo_moves_toward_worse(runs, model, forget_names, pbmc):
    """The forget cells were fit better than unseen cells: their ELBO falls, and by more than
    the held-out ELBO of the other cell types."""
    new = runs[0]
    heldout = pbmc[(pbmc.obs["membership"] == "heldout").to_numpy()]
    other = heldout[heldout.obs["cell_type"] != "CD56+ NK"].copy()
    cells = pbmc[list(forget_names)].copy()
    forget_drop = (
        per_cell_elbo(model, cells)["elbo"].mean() - per_cell_elbo(new, cells)["elbo"].mean()
    )
    other_drop = (
        per_cell_elbo(model, other)["elbo"].mean() - per_cell_elbo(new, other)["elbo"].mean()
    )
    assert forget_drop > 0
    assert forget_drop > other_drop


def test_record(runs, forget_names):
    record = runs[0].unlearn_record_
    assert record["method"] == "reinit_finetune"
    hyper = record["hyperparameters"]
    assert hyper["fraction"] == 0.05 and hyper["saliency"] == "forget" and hyper["lr"] == 5e-3
    assert hyper["scope"] == "global" and hyper["tune"] == "all" and hyper["max_epochs"] == 3
    assert record["seed"] == 1 and record["n_forget"] == len(forget_names)
    assert su.unlearn.verify_forget_digest(record, forget_names)
    first, *steps = record["log"]
    assert set(first) == {"step", "n_reinit", "n_scored", "fraction_reinit", "reinit_rms"}
    assert steps and all("retain_nelbo" in s for s in steps)
    assert set(record["budget"]) == {"retain_cells_per_epoch"}  # no retain importance
    assert record["checks"]["on_degradation"] == "warn"


@pytest.mark.parametrize("saliency", ["random", "relative"])
def test_other_saliencies_pick_other_entries(saliency, model, forget_names, monkeypatch):
    monkeypatch.setattr(rf, "train_on_retain", lambda *a, **k: None)
    base = _params(_unlearn(model, forget_names, seed=0, **QUIET))
    other = _unlearn(model, forget_names, saliency=saliency, seed=0, **QUIET)
    entry = other.unlearn_record_["log"][0]
    assert entry["n_reinit"] == int(np.floor(0.05 * entry["n_scored"] + 0.5))
    after = _params(other)
    assert any(not torch.equal(base[k], after[k]) for k in base)
