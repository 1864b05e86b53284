"""The retain-sample budget: approximate methods' cost follows the forget set, not the dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scvi_unlearn as su
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.unlearn import RetainForgetDataModule, retain_sample_size

BUDGETED = ["finetune", "gradient_ascent", "scrub", "contrastive", "fisher", "ssd"]


@pytest.mark.parametrize(
    ("n_forget", "n_retain", "expected"),
    [
        (22, 469, 469),  # small data: every retain cell (pbmc68k is unchanged)
        (22, 100_000, 2048),  # floor
        (1_000, 1_000_000, 10_000),  # proportional to the forget set
        (5_000, 1_000_000, 16_384),  # cap
        (5_000, 9_000, 9_000),  # never more than there are
    ],
)
def test_default_rule(n_forget, n_retain, expected):
    assert retain_sample_size(n_forget, n_retain) == expected


def test_default_does_not_grow_with_the_dataset():
    sizes = [retain_sample_size(200, n) for n in (5_000, 20_000, 100_000, 1_000_000)]
    assert len(set(sizes)) == 1
    assert retain_sample_size(1_000, 10**6) > retain_sample_size(200, 10**6)


def test_overrides_and_errors():
    assert retain_sample_size(10, 5_000, "all") == 5_000
    assert retain_sample_size(10, 5_000, 300) == 300
    assert retain_sample_size(10, 200, 300) == 200
    with pytest.raises(ValueError, match="'all'"):
        retain_sample_size(10, 5_000, "everything")
    with pytest.raises(ValueError, match=">= 1"):
        retain_sample_size(10, 5_000, 0)
    with pytest.raises(TypeError, match="retain_sample"):
        retain_sample_size(10, 5_000, 2.5)
    with pytest.raises(TypeError, match="retain_sample"):
        retain_sample_size(10, 5_000, True)
    with pytest.raises(ValueError, match="no retain cells"):
        retain_sample_size(10, 0)


def _epoch_cells(dm: RetainForgetDataModule, manager) -> np.ndarray:
    """Positions (in the manager's AnnData) of the retain cells one epoch passes over."""
    ids = []
    x = manager.adata.layers["counts"]
    lookup = {row.tobytes(): i for i, row in enumerate(np.asarray(x.todense(), dtype=np.float32))}
    for item in dm.train_dataloader():
        batch = item[0] if isinstance(item, tuple) else item  # CombinedLoader: (batch, idx, dl)
        for row in batch["retain"]["X"].numpy():
            ids.append(lookup[row.astype(np.float32).tobytes()])
    return np.asarray(ids)


def test_datamodule_epochs_are_fresh_samples(trained_model):
    manager = trained_model.adata_manager
    n = manager.adata.n_obs
    train = np.arange(0, n, 2)  # every other cell
    dm = RetainForgetDataModule(
        manager, train, np.arange(1, n, 2), batch_size=32, retain_sample=50
    )
    assert dm.cells_per_epoch == 50
    with isolated_seed(0):
        first, second = _epoch_cells(dm, manager), _epoch_cells(dm, manager)
    with isolated_seed(0):
        again = _epoch_cells(dm, manager)
    for cells in (first, second):
        assert cells.size == 50 and np.unique(cells).size == 50  # without replacement
        assert np.isin(cells, train).all()  # only retain training cells
    assert set(first) != set(second)  # a new sample every epoch
    np.testing.assert_array_equal(first, again)  # seeded: reproducible


def test_sample_covering_all_cells_is_the_plain_loader(trained_model):
    manager = trained_model.adata_manager
    train = np.arange(manager.adata.n_obs)
    dm = RetainForgetDataModule(manager, train, np.array([], int), retain_sample=10**6)
    assert dm.retain_sample is None and dm.cells_per_epoch == train.size
    with pytest.raises(ValueError, match="retain_sample"):
        RetainForgetDataModule(manager, train, np.array([], int), retain_sample=0)


@pytest.mark.parametrize("method", BUDGETED)
def test_every_approximate_method_takes_a_retain_sample(trained_model, forget_names, method):
    kwargs = {"enable_progress_bar": False} if method != "ssd" else {}
    kwargs["on_degradation"] = "warn"  # a 64-cell budget on a small model may lose > 2%
    if method == "fisher":
        kwargs["ascent_epochs"] = 1
    new = trained_model.unlearn(forget_names, method=method, retain_sample=64, seed=0, **kwargs)
    budget = new.unlearn_record_["budget"]
    assert new.unlearn_record_["hyperparameters"]["retain_sample"] == 64
    if method in ("ssd", "fisher"):
        assert budget["retain_cells_importance"] == 64
    if method != "ssd":
        assert budget["retain_cells_per_epoch"] == 64
        # one step per minibatch of the sample (batch 128 > 64: one step per epoch)
        first_epoch = [e for e in new.unlearn_record_["log"] if e.get("epoch") == 0]
        assert 1 <= len(first_epoch) <= 2


def test_default_budget_on_small_data_is_every_cell(trained_model, forget_names):
    new = trained_model.unlearn(
        forget_names, method="finetune", max_epochs=1, enable_progress_bar=False, seed=0
    )
    assert new.unlearn_record_["budget"] == {"retain_cells_per_epoch": int(new.train_indices.size)}


def test_smaller_sample_gives_a_different_reproducible_importance(trained_model, forget_names):
    a = trained_model.unlearn(forget_names, method="ssd", alpha=5.0, retain_sample=100, seed=1)
    b = trained_model.unlearn(forget_names, method="ssd", alpha=5.0, retain_sample=100, seed=1)
    full = trained_model.unlearn(forget_names, method="ssd", alpha=5.0, seed=1)
    pa, pb, pf = (dict(m.module.named_parameters()) for m in (a, b, full))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pf[k]) for k in pa)
    assert su.unlearn.RETAIN_FLOOR > full.adata.n_obs  # the full run used every retain cell
