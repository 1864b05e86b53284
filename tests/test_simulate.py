"""su.data.simulate: NB counts calibrated on pbmc68k, reproducible, sparse, scVI-ready."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import scvi_unlearn as su
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.data import _simulate

N_REAL_GENES = 765
RAREST = "CD4+/CD45RA+/CD25- Naive T"


def _dense(adata) -> np.ndarray:
    return adata.layers["counts"].toarray().astype(np.float64)


def _slope(counts: np.ndarray) -> float:
    """Least-squares slope of per-gene log variance on log mean (expressed genes)."""
    mean, var = counts.mean(axis=0), counts.var(axis=0, ddof=1)
    ok = (mean > 0) & (var > 0)
    return float(np.polyfit(np.log(mean[ok]), np.log(var[ok]), 1)[0])


@pytest.fixture(scope="module")
def real():
    return su.data.pbmc68k()


@pytest.fixture(scope="module")
def sim5k():
    """5,000 cells on pbmc68k's own 765 genes, so the statistics compare gene for gene."""
    return su.data.simulate(5000, n_genes=N_REAL_GENES, random_state=0)


def test_shape_dtype_sparse_integer_counts():
    adata = su.data.simulate(300, n_genes=120, random_state=1)
    assert adata.shape == (300, 120)
    for matrix in (adata.X, adata.layers["counts"]):
        assert sp.issparse(matrix) and matrix.format == "csr"
        assert matrix.dtype == np.float32
        assert matrix.has_canonical_format
        assert np.all(matrix.data > 0) and np.array_equal(matrix.data, np.rint(matrix.data))
    # two separate matrices: normalising X in place must not touch the counts
    assert adata.X is not adata.layers["counts"]
    assert not np.shares_memory(adata.X.data, adata.layers["counts"].data)
    assert (adata.X != adata.layers["counts"]).nnz == 0
    assert adata.X.nnz < 0.8 * np.prod(adata.shape)  # sparse, like real droplet data
    assert np.asarray(adata.X.sum(axis=1)).min() > 0
    assert adata.obs["cell_type"].dtype == "category"
    assert adata.obs["batch"].dtype == "category"
    assert adata.obs_names.is_unique and adata.var_names.is_unique
    assert set(adata.obs["cell_type"].cat.categories) == set(
        su.data.pbmc68k().obs["cell_type"].cat.categories
    )


def test_fewer_genes_are_the_most_variable_real_genes(real):
    adata = su.data.simulate(50, n_genes=40, random_state=0)
    logx = np.log1p(1e4 * _dense(real) / _dense(real).sum(axis=1, keepdims=True))
    top = real.var_names[np.argsort(-logx.var(axis=0))[:40]]
    assert set(adata.var_names) == set(top)
    assert not adata.var["simulated"].any()
    # kept in pbmc68k's gene order
    positions = real.var_names.get_indexer(adata.var_names)
    assert np.all(np.diff(positions) > 0)


def test_more_genes_extend_by_rescaled_copies_of_real_profiles():
    adata = su.data.simulate(4000, n_genes=1200, random_state=0)
    simulated = adata.var["simulated"].to_numpy()
    assert simulated.sum() == 1200 - N_REAL_GENES
    assert not simulated[:N_REAL_GENES].any()
    assert adata.var_names.is_unique
    source = adata.var["source_gene"].to_numpy()
    assert np.array_equal(adata.var_names[:N_REAL_GENES], source[:N_REAL_GENES])
    assert set(source[simulated]) <= set(source[:N_REAL_GENES])
    scale = adata.var["scale"].to_numpy()
    assert np.all(scale[~simulated] == 1) and np.std(np.log(scale[simulated])) > 0.3
    # a synthetic gene's mean is its source gene's mean times its scale
    mean = np.asarray(adata.layers["counts"].mean(axis=0)).ravel()
    source_mean = mean[adata.var_names.get_indexer(source[simulated])]
    expected = np.log(source_mean * scale[simulated] + 1e-2)
    assert np.corrcoef(np.log(mean[simulated] + 1e-2), expected)[0, 1] > 0.95


def test_chunked_assembly_is_a_valid_csr(monkeypatch):
    monkeypatch.setattr(_simulate, "_CHUNK_ENTRIES", 3 * 30)  # 3 cells per chunk, last partial
    adata = su.data.simulate(10, n_genes=30, random_state=0)
    counts = adata.layers["counts"]
    counts.check_format(full_check=True)
    assert counts.shape == (10, 30) and counts.indptr[-1] == counts.nnz
    assert np.count_nonzero(counts.toarray()) == counts.nnz


def test_reproducible_from_random_state():
    a = su.data.simulate(200, n_genes=100, n_batches=2, random_state=3)
    b = su.data.simulate(200, n_genes=100, n_batches=2, random_state=3)
    c = su.data.simulate(200, n_genes=100, n_batches=2, random_state=4)
    assert (a.X != b.X).nnz == 0
    assert a.obs.equals(b.obs)
    assert (a.X != c.X).nnz > 0
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    d = su.data.simulate(200, n_genes=100, random_state=g1)
    e = su.data.simulate(200, n_genes=100, random_state=g2)
    assert (d.X != e.X).nnz == 0
    # a Generator is consumed, scikit-learn style: the next call differs
    f = su.data.simulate(200, n_genes=100, random_state=g1)
    assert (d.X != f.X).nnz > 0


def test_global_numpy_rng_untouched():
    np.random.seed(123)  # noqa: NPY002 (the global state is what this test checks)
    before = np.random.get_state()  # noqa: NPY002
    su.data.simulate(100, n_genes=50, n_batches=2, random_state=0)
    su.data.simulate(100, n_genes=50, random_state=None)
    after = np.random.get_state()  # noqa: NPY002
    assert before[0] == after[0] and np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]


def test_calibration_is_cached_and_read_only():
    cal = _simulate._calibration()
    assert _simulate._calibration() is cal
    assert cal.profiles.shape == (10, N_REAL_GENES)
    np.testing.assert_allclose(cal.profiles.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="read-only"):
        cal.profiles[0, 0] = 1.0


def test_summary_statistics_match_pbmc68k(real, sim5k):
    real_counts, sim_counts = _dense(real), _dense(sim5k)
    # median library size within 10%
    real_lib, sim_lib = np.median(real_counts.sum(1)), np.median(sim_counts.sum(1))
    assert abs(sim_lib / real_lib - 1) < 0.10
    # fraction of zeros within 0.03
    assert abs(np.mean(sim_counts == 0) - np.mean(real_counts == 0)) < 0.03
    # per-type proportions within 0.02 (3 binomial sd at n=5000 for the largest type)
    real_p = real.obs["cell_type"].value_counts(normalize=True)
    sim_p = sim5k.obs["cell_type"].value_counts(normalize=True)
    assert (sim_p.reindex(real_p.index) - real_p).abs().max() < 0.02
    # mean-variance relation: slope of log var on log mean within 0.1 of pbmc68k's (~1.21)
    assert abs(_slope(sim_counts) - _slope(real_counts)) < 0.1
    # gene by gene: mean expression and fraction of zeros track the real genes
    log_mean = [np.log(c.mean(axis=0) + 1e-3) for c in (real_counts, sim_counts)]
    assert np.corrcoef(*log_mean)[0, 1] > 0.98
    zeros = [np.mean(c == 0, axis=0) for c in (real_counts, sim_counts)]
    assert np.corrcoef(*zeros)[0, 1] > 0.95


def test_overdispersion_matches_pbmc68k(real, sim5k):
    """Within-type variance beyond Poisson, which the slope above barely sees.

    The slope is mostly set by the mixture of types (Poisson counts with the same profiles give
    1.17); the variance-to-mean ratio within a type (1.34 in pbmc68k, 1.08 under Poisson) and
    the per-gene variances are what the NB dispersions calibrate.
    """

    def within_type_vmr(adata):
        counts, labels = _dense(adata), adata.obs["cell_type"].to_numpy()
        ratios = []
        for label in np.unique(labels):
            x = counts[labels == label]
            mean, var = x.mean(axis=0), x.var(axis=0, ddof=1)
            ok = mean > 0.5
            ratios.append(np.median(var[ok] / mean[ok]))
        return float(np.median(ratios))

    assert abs(within_type_vmr(sim5k) - within_type_vmr(real)) < 0.1
    log_var = [np.log(_dense(a).var(axis=0, ddof=1) + 1e-3) for a in (real, sim5k)]
    assert abs(np.median(log_var[1] - log_var[0])) < 0.1


def test_cell_type_profiles_match_pbmc68k(real, sim5k):
    """Each simulated type's mean profile is closest to the same real type's."""
    types = real.obs["cell_type"].cat.categories

    def profiles(adata):
        x = _dense(adata)
        x = x / x.sum(axis=1, keepdims=True)
        labels = adata.obs["cell_type"].to_numpy()
        return np.stack([np.log(x[labels == t].mean(axis=0) + 1e-5) for t in types])

    corr = np.corrcoef(profiles(real), profiles(sim5k))[: types.size, types.size :]
    assert np.array_equal(corr.argmax(axis=1), np.arange(types.size))


def test_rare_fraction_overrides_the_rarest_type(real):
    adata = su.data.simulate(5000, n_genes=50, rare_fraction=0.1, random_state=0)
    sim_p = adata.obs["cell_type"].value_counts(normalize=True)
    assert abs(sim_p[RAREST] - 0.1) < 0.015
    real_p = real.obs["cell_type"].value_counts(normalize=True)
    assert real_p.idxmin() == RAREST
    # the other types keep their relative proportions
    others = real_p.drop(RAREST) / real_p.drop(RAREST).sum() * 0.9
    assert (sim_p.reindex(others.index) - others).abs().max() < 0.02


def test_batches():
    single = su.data.simulate(100, n_genes=30, random_state=0)
    assert list(single.obs["batch"].cat.categories) == ["batch_0"]
    adata = su.data.simulate(6000, n_genes=300, n_batches=3, batch_effect=0.5, random_state=0)
    assert list(adata.obs["batch"].cat.categories) == ["batch_0", "batch_1", "batch_2"]
    share = adata.obs["batch"].value_counts(normalize=True)
    assert (share - 1 / 3).abs().max() < 0.03
    flat = su.data.simulate(6000, n_genes=300, n_batches=3, batch_effect=0.0, random_state=0)

    def log_ratio_sd(a):
        x = a.layers["counts"]
        b = a.obs["batch"].to_numpy()
        m0 = np.asarray(x[b == "batch_0"].mean(axis=0)).ravel()
        m1 = np.asarray(x[b == "batch_1"].mean(axis=0)).ravel()
        high = (m0 > 1) & (m1 > 1)  # well-measured genes
        return np.std(np.log(m1[high] / m0[high]))

    # the per-batch gene effect: log fold-changes of sd ~ sqrt(2) * 0.5 vs sampling noise only
    assert log_ratio_sd(adata) > 0.5
    assert log_ratio_sd(flat) < 0.15


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cells": 0}, "n_cells must be >= 1"),
        ({"n_cells": 10.5}, "n_cells must be an integer"),
        ({"n_cells": True}, "n_cells must be an integer"),
        ({"n_cells": 10, "n_genes": 0}, "n_genes must be >= 1"),
        ({"n_cells": 10, "n_batches": 0}, "n_batches must be >= 1"),
        ({"n_cells": 10, "rare_fraction": 0.0}, r"rare_fraction must be in \(0, 1\)"),
        ({"n_cells": 10, "rare_fraction": 1.5}, r"rare_fraction must be in \(0, 1\)"),
        ({"n_cells": 10, "rare_fraction": "0.1"}, "rare_fraction must be a number"),
        ({"n_cells": 10, "random_state": -1}, "random_state must be >= 0"),
        ({"n_cells": 10, "random_state": 1.5}, "random_state must be an int"),
        ({"n_cells": 10, "batch_effect": -0.1}, "batch_effect must be a finite number"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        su.data.simulate(**kwargs)


def test_scvi_trains_on_simulated_cells():
    adata = su.data.simulate(1000, n_genes=200, n_batches=2, random_state=0)
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    with isolated_seed(0):  # seeds scvi.settings.seed and restores every global state
        model = su.SCVI(adata, n_latent=5, n_hidden=32)
        model.train(max_epochs=2, enable_progress_bar=False)
    assert model.is_trained_
    elbo = model.history["elbo_train"].to_numpy(dtype=float).ravel()
    assert elbo.size == 2 and np.all(np.isfinite(elbo))
    assert model.train_recipe_["max_epochs"] == 2
    assert model.get_latent_representation().shape == (1000, 5)
