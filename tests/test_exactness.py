"""Exactness as a tested property of every method that trains a fresh model on the retain cells
only (``su.unlearn.FROM_SCRATCH``: ``retrain``, ``fast_retrain``, ``dp_sgd``).

1. Two originals trained on data that differ **only in the forget cells' counts** (replaced by
   Poisson noise; same names, same seed) give bit-identical unlearned weights under a fixed stop.
   With fit matching (``fast_retrain``'s default) the new model reads one number from the
   original, its retain validation fit, so the only difference allowed is the stop step: each
   result is bit-identical to the other data's run with its stop as a fixed budget.
2. The data path is instrumented: every cell any scvi-tools dataset serves during ``unlearn`` is
   recorded, and no exact method's request ever reads a forget cell (training, fit matching, the
   retain check and the record included).

Both tests fail if an exact method ever reads a forget cell's values.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scvi.data import AnnTorchDataset
from scvi.data._constants import _SCVI_UUID_KEY

import scvi_unlearn as su
from conftest import module_state, same_state, small_model

#: a fixed, short stop for each exact method (the second test uses each method's defaults but a
#: short budget too)
FIXED = {
    "retrain": {},  # replays the original's recipe (5 epochs below)
    "fast_retrain": {"match_fit": False, "max_epochs": 4},
    "dp_sgd": {"max_epochs": 2, "batch_size": 64},
}


def test_the_exact_methods_are_the_from_scratch_ones():
    assert set(FIXED) == su.unlearn.FROM_SCRATCH


def _unlearn(model, forget, method, **kwargs):
    with warnings.catch_warnings():
        # a few-epoch fresh model fits the retain cells worse than the original: it warns
        warnings.simplefilter("ignore", su.unlearn.UnlearningWarning)
        return model.unlearn(
            forget, method=method, seed=0, enable_progress_bar=False, **{**FIXED[method], **kwargs}
        )


@pytest.fixture(scope="module")
def twins(pbmc_train, forget_names):
    """Two originals (same seed) on data that differ only in the forget cells' counts."""
    copies = []
    for noise in (False, True):
        adata = pbmc_train.copy()
        adata.uns.pop(_SCVI_UUID_KEY, None)
        if noise:
            counts = adata.layers["counts"]
            dense = counts.toarray() if sp.issparse(counts) else np.array(counts)
            rows = adata.obs_names.get_indexer(forget_names)
            rng = np.random.default_rng(1)
            dense[rows] = rng.poisson(dense[rows].mean() + 0.5, size=dense[rows].shape)
            adata.layers["counts"] = sp.csr_matrix(dense) if sp.issparse(counts) else dense
        su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
        copies.append(adata)
    a, b = copies
    changed = a[list(forget_names)].layers["counts"] != b[list(forget_names)].layers["counts"]
    assert (changed.sum() if sp.issparse(changed) else changed.sum()) > 0
    retain = a.obs_names.difference(forget_names)
    same = a[retain].layers["counts"] != b[retain].layers["counts"]
    assert (same.nnz if sp.issparse(same) else same.sum()) == 0
    return small_model(a, max_epochs=5), small_model(b, max_epochs=5)


def test_twin_originals_differ(twins):
    """The forget cells' counts change the original's weights: the twins are a real test."""
    a, b = twins
    assert not same_state(module_state(a), module_state(b))
    assert np.array_equal(a.train_indices, b.train_indices)


@pytest.mark.parametrize("method", sorted(FIXED))
def test_fixed_stop_gives_bit_identical_weights(twins, forget_names, method):
    a, b = (_unlearn(m, forget_names, method) for m in twins)
    assert same_state(module_state(a), module_state(b)), f"{method} depends on the forget cells"
    assert list(a.train_obs_names_) == list(b.train_obs_names_)


def test_fit_matching_differs_at_most_by_the_stop_step(twins, forget_names):
    """fast_retrain's default reads the original's validation fit (one number); each twin's
    result equals the other data's fixed-budget run stopped at the same step."""
    kw = {"match_fit": True, "max_epochs": 20}
    results = [_unlearn(m, forget_names, "fast_retrain", **kw) for m in twins]
    steps = [r.unlearn_record_["budget"]["steps"] for r in results]
    for result, other, stop in zip(results, reversed(twins), steps):
        fixed = _unlearn(other, forget_names, "fast_retrain", match_fit=False, max_steps=stop)
        assert same_state(module_state(result), module_state(fixed)), steps


def test_strict_mode_reads_nothing_of_the_original(twins, forget_names):
    """``strict=True`` stops at the new model's own validation plateau: the twins' results are
    bit-identical with no fixed stop, and the stop is recorded."""
    kw = {"strict": True, "max_epochs": 30, "patience": 2}
    a, b = (_unlearn(m, forget_names, "fast_retrain", **kw) for m in twins)
    assert same_state(module_state(a), module_state(b))
    budget = a.unlearn_record_["budget"]
    assert budget["steps"] == b.unlearn_record_["budget"]["steps"]
    assert 0 < budget["epochs"] <= 30 and a.unlearn_record_["hyperparameters"]["strict"] is True
    for bad, match in (({"patience": 0}, "patience"), ({"min_delta": -1.0}, "min_delta")):
        with pytest.raises(ValueError, match=match):
            _unlearn(twins[0], forget_names, "fast_retrain", strict=True, **bad)
    with pytest.raises(ValueError, match="strict"):
        _unlearn(twins[0], forget_names, "fast_retrain", strict="yes")


@pytest.fixture
def served(monkeypatch):
    """obs_names of every cell an scvi-tools dataset serves while the fixture is active."""
    names: list[np.ndarray] = []
    getitem = AnnTorchDataset.__getitem__

    def spy(self, indexes):
        positions = [indexes] if isinstance(indexes, int) else indexes
        names.append(np.asarray(self.adata_manager.adata.obs_names[positions], dtype=str))
        return getitem(self, indexes)

    monkeypatch.setattr(AnnTorchDataset, "__getitem__", spy)
    return names


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("retrain", {"max_epochs": 3}),
        ("fast_retrain", {"max_epochs": 6}),  # fit matching on: reads the original's validation
        ("dp_sgd", {}),
    ],
)
def test_no_forget_cell_is_ever_read(trained_model, forget_names, served, method, kwargs):
    kwargs = {**FIXED[method], **kwargs}
    if method == "fast_retrain":
        kwargs["match_fit"] = True
    new = _unlearn(trained_model, forget_names, method, **kwargs)
    read = np.concatenate(served) if served else np.array([], dtype=str)
    assert read.size > 0, "the spy saw the data path"
    leaked = sorted(set(read) & set(forget_names))
    assert not leaked, f"{method} read forget cells {leaked[:5]}"
    assert set(read) <= set(trained_model.adata.obs_names)
    assert not set(forget_names) & set(new.adata.obs_names)


def test_the_spy_sees_a_method_that_reads_forget_cells(trained_model, forget_names, served):
    """The instrument can fail: NegGrad+ (approximate) ascends on the forget cells: caught."""
    trained_model.unlearn(
        forget_names,
        method="gradient_ascent",
        seed=0,
        max_epochs=1,
        enable_progress_bar=False,
        on_degradation="warn",
    )
    assert set(np.concatenate(served)) & set(forget_names)


def test_an_approximate_method_depends_on_the_forget_cells(twins, forget_names):
    """The twin test can fail: a fine-tune of each original inherits what it learnt of the
    forget cells' counts, so the twins' results differ."""
    a, b = (
        m.unlearn(
            forget_names,
            method="finetune",
            seed=0,
            max_epochs=2,
            enable_progress_bar=False,
            on_degradation="warn",
        )
        for m in twins
    )
    assert not same_state(module_state(a), module_state(b))
