"""Utility metrics: ranges, direction (trained beats untrained), model dependence, invariants."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import scvi_unlearn as su
from conftest import module_state, same_state
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.metrics import (
    UTILITY_FIELDS,
    ari_from_latent,
    heldout_elbo,
    knn_jaccard,
    latent_ari,
    latent_means,
    latent_silhouette,
    marker_correlation,
    marker_gene_correlations,
    neighborhood_preservation,
    per_cell_elbo,
    select_marker_genes,
    silhouette_from_latent,
    utility_report,
)

#: posterior draws in the tests (the default, 8, is for real evaluations; 2 keeps tests fast)
N_DRAWS = 2


def _model_like(trained, adata, state=None, cls=su.SCVI):
    """A model of ``trained``'s architecture on its own registered copy of ``adata``.

    With ``state``, its weights are loaded from it; without, they stay at initialization.  The
    model is flagged as trained so that scvi-tools lets us query it.
    """
    ad = adata.copy()
    cls.setup_anndata(ad, layer="counts", labels_key="cell_type")
    with isolated_seed(1):
        model = cls(ad, n_latent=10, n_hidden=64)
    if state is not None:
        model.module.load_state_dict(state)
    model.module.eval()
    model.is_trained_ = True
    return model


@pytest.fixture(scope="module")
def heldout(pbmc):
    """The held-out cells (never trained on), as an AnnData not registered with any model."""
    return pbmc[pbmc.obs["membership"] == "heldout"].copy()


@pytest.fixture(scope="module")
def markers(pbmc):
    return select_marker_genes(pbmc, "cell_type", layer="counts")


@pytest.fixture(scope="module")
def untrained(pbmc_train, trained_model):
    return _model_like(trained_model, pbmc_train)


@pytest.fixture(scope="module")
def report_trained(trained_model, heldout, markers, untrained):
    return utility_report(
        trained_model, heldout, reference=untrained, markers=markers, n_draws=N_DRAWS
    )


@pytest.fixture(scope="module")
def report_untrained(untrained, heldout, markers, trained_model):
    return utility_report(
        untrained, heldout, reference=trained_model, markers=markers, n_draws=N_DRAWS
    )


def _snapshot(adata) -> dict:
    return {
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "uns": sorted(adata.uns.keys()),
        "layers": {k: sp.csr_matrix(v).copy() for k, v in adata.layers.items()},
        "X": sp.csr_matrix(adata.X).copy(),
        "obsm": sorted(adata.obsm.keys()),
        "is_view": adata.is_view,
    }


def _assert_unchanged(adata, snap) -> None:
    pd.testing.assert_frame_equal(adata.obs, snap["obs"])
    pd.testing.assert_frame_equal(adata.var, snap["var"])
    assert sorted(adata.uns.keys()) == snap["uns"]
    assert sorted(adata.obsm.keys()) == snap["obsm"]
    assert adata.is_view == snap["is_view"]
    assert (sp.csr_matrix(adata.X) != snap["X"]).nnz == 0
    for key, value in snap["layers"].items():
        assert (sp.csr_matrix(adata.layers[key]) != value).nnz == 0


# --------------------------------------------------------------------------------------------
# ranges and direction


def test_report_has_every_field_in_valid_ranges(report_trained, heldout):
    r = report_trained
    assert list(r.index) == list(UTILITY_FIELDS)
    assert r["n_cells"] == heldout.n_obs
    # NB probabilities are <= 1 and KLs >= 0, so the ELBO is negative, the NLL positive
    assert r["elbo_mean"] < 0 < r["reconstruction_nll_mean"]
    assert r["elbo_se"] > 0 and r["reconstruction_nll_se"] > 0
    assert r["kl_z_mean"] > 0 and r["kl_l_mean"] == 0  # observed library size: no library KL
    np.testing.assert_allclose(
        r["elbo_mean"], -(r["reconstruction_nll_mean"] + r["kl_z_mean"] + r["kl_l_mean"])
    )
    assert -1 <= r["silhouette"] <= 1
    assert -0.5 <= r["ari"] <= 1
    assert -1 <= r["marker_correlation"] <= 1
    assert r["n_marker_genes"] >= 20
    assert 0 <= r["neighborhood_jaccard"] <= 1


def test_trained_model_beats_untrained_on_every_utility(report_trained, report_untrained):
    t, u = report_trained, report_untrained
    assert t["elbo_mean"] - u["elbo_mean"] > 3 * (t["elbo_se"] + u["elbo_se"])
    assert t["reconstruction_nll_mean"] < u["reconstruction_nll_mean"]
    assert t["silhouette"] > u["silhouette"] + 0.05
    assert t["ari"] > u["ari"] + 0.1
    assert t["marker_correlation"] > u["marker_correlation"] + 0.1


def test_no_reference_gives_nan_neighbourhood(trained_model, heldout, markers):
    r = utility_report(trained_model, heldout, markers=markers, n_draws=2)
    assert np.isnan(r["neighborhood_jaccard"])
    assert np.isfinite(r.drop("neighborhood_jaccard")).all()


# --------------------------------------------------------------------------------------------
# held-out ELBO


def test_heldout_elbo_is_the_mean_of_per_cell_elbo(trained_model):
    table = per_cell_elbo(trained_model, n_draws=1, seed=4)
    summary = heldout_elbo(trained_model, n_draws=1, seed=4)
    assert summary["n_cells"] == len(table)
    np.testing.assert_allclose(summary["elbo_mean"], table["elbo"].mean())
    np.testing.assert_allclose(summary["elbo_se"], table["elbo"].std(ddof=1) / np.sqrt(len(table)))
    np.testing.assert_allclose(summary["reconstruction_nll_mean"], table["reconstruction"].mean())


def test_training_cells_fit_better_than_heldout_cells(trained_model, pbmc_train, heldout):
    train = heldout_elbo(trained_model, pbmc_train, n_draws=1)
    held = heldout_elbo(trained_model, heldout, n_draws=1)
    # a generalisation gap may be small but not negative for a model trained 30 epochs
    assert train["elbo_mean"] > held["elbo_mean"] - 3 * held["elbo_se"]


# --------------------------------------------------------------------------------------------
# marker correlation


def test_select_marker_genes_finds_known_pbmc_markers(pbmc):
    markers = select_marker_genes(pbmc, "cell_type", layer="counts", n_markers=5)
    assert set(markers) == set(pbmc.obs["cell_type"].cat.categories)
    assert all(len(genes) == 5 for genes in markers.values())
    assert {"NKG7", "GNLY"} & set(markers["CD56+ NK"])
    assert {"CD79A", "CD79B", "MS4A1"} & set(markers["CD19+ B"])
    few = select_marker_genes(pbmc, "cell_type", layer="counts", min_cells=20)
    assert "CD34+" not in few  # 13 cells
    negative = pbmc[:100].copy()
    negative.layers["neg"] = -sp.csr_matrix(negative.layers["counts"])
    with pytest.raises(ValueError, match="non-negative"):
        select_marker_genes(negative, "cell_type", layer="neg")
    with pytest.raises(KeyError, match="layer 'nope'"):
        select_marker_genes(pbmc, "cell_type", layer="nope")


def test_expected_counts_carry_the_library_size(trained_model, heldout, markers):
    table = marker_gene_correlations(trained_model, heldout, markers=markers, n_draws=4)
    assert set(table.index) == {g for genes in markers.values() for g in genes}
    # expected counts are on the count scale (library size included), not frequencies
    ratio = table["expected_mean"] / table["observed_mean"]
    assert 0.5 < np.median(ratio) < 2.0
    for cell_type, genes in markers.items():
        assert all(cell_type in table.loc[g, "cell_types"].split(",") for g in genes)


def test_marker_correlation_depends_on_the_model(trained_model, pbmc_train, heldout, markers):
    """The study's bug (decoding without library size) made this model-independent."""
    state = module_state(trained_model)
    perturbed = {k: v.clone() for k, v in state.items()}
    gen = torch.Generator().manual_seed(0)
    for key, value in perturbed.items():
        if key.startswith("decoder.") and value.is_floating_point() and value.ndim == 2:
            value.add_(0.3 * value.std() * torch.randn(value.shape, generator=gen))
    other = _model_like(trained_model, pbmc_train, state=perturbed)
    r_trained = marker_correlation(trained_model, heldout, markers=markers, n_draws=4)
    r_other = marker_correlation(other, heldout, markers=markers, n_draws=4)
    assert abs(r_trained - r_other) > 0.01
    assert same_state(state, module_state(trained_model))


def test_marker_gene_order_is_respected(trained_model, heldout):
    """scvi-tools returns gene_list in var order; our table must follow the requested order."""
    genes = ["LST1", "NKG7", "CD79A", "FTL"]
    table = marker_gene_correlations(trained_model, heldout, markers=genes, n_draws=2)
    assert list(table.index) == genes
    observed = np.asarray(heldout[:, genes].layers["counts"].mean(axis=0)).ravel()
    np.testing.assert_allclose(table["observed_mean"].to_numpy(), observed, rtol=1e-6)
    # each gene's expected mean is closest to its own observed mean (abundances differ a lot)
    expected = table["expected_mean"].to_numpy()
    assert (np.abs(np.log(expected[:, None] / observed[None, :])).argmin(axis=1) == range(4)).all()


# --------------------------------------------------------------------------------------------
# latent structure and neighbourhoods


def test_silhouette_and_ari_functions_agree_with_report(trained_model, heldout, report_trained):
    assert latent_silhouette(trained_model, heldout) == pytest.approx(report_trained["silhouette"])
    assert latent_ari(trained_model, heldout) == pytest.approx(report_trained["ari"])


def test_leiden_ari_is_reproducible_and_in_range(trained_model, heldout):
    a = latent_ari(trained_model, heldout, clustering="leiden", seed=3)
    b = latent_ari(trained_model, heldout, clustering="leiden", seed=3)
    assert a == b and -0.5 <= a <= 1 and a > 0.1


def test_latent_metrics_on_synthetic_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(["a", "b", "c"], dtype=object), 40)
    centers = {"a": (0, 0), "b": (10, 0), "c": (0, 10)}
    latent = np.array([centers[lab] for lab in labels]) + rng.normal(size=(120, 2))
    assert silhouette_from_latent(latent, labels) > 0.7
    assert ari_from_latent(latent, labels) == pytest.approx(1.0)
    shuffled = rng.permutation(labels)
    assert abs(silhouette_from_latent(latent, shuffled)) < 0.1
    assert abs(ari_from_latent(latent, shuffled)) < 0.1
    # missing labels are ignored
    partial = labels.copy()
    partial[:5] = None
    assert silhouette_from_latent(latent, partial) == pytest.approx(
        silhouette_from_latent(latent[5:], labels[5:])
    )


def test_knn_jaccard_invariants():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 5))
    rotation = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    assert knn_jaccard(x, x, 10) == 1.0
    assert knn_jaccard(x, 3.0 * x @ rotation + 1.0, 10) == pytest.approx(1.0)  # isometry
    independent = knn_jaccard(x, rng.normal(size=(150, 5)), 10)
    assert independent < 0.2
    partly = knn_jaccard(x, x + 0.3 * rng.normal(size=x.shape), 10)
    assert independent < partly < 1.0
    # hand-computed: 1-d points, k = 1
    a = np.array([[0.0], [1.0], [3.0], [7.0]])  # nearest: 1, 0, 1, 2
    b = np.array([[0.0], [2.0], [3.0], [7.0]])  # nearest: 1, 2, 1, 2
    assert knn_jaccard(a, b, 1) == pytest.approx((1 + 0 + 1 + 1) / 4)


def test_neighbourhood_preservation_self_is_one_other_is_less(
    trained_model, untrained, heldout, report_trained
):
    assert neighborhood_preservation(trained_model, trained_model, heldout) == 1.0
    other = neighborhood_preservation(trained_model, untrained, heldout)
    assert 0 <= other < 0.9
    assert report_trained["neighborhood_jaccard"] == pytest.approx(other)


def test_plain_scvi_model_gives_the_same_numbers(trained_model, pbmc_train, heldout, markers):
    import scvi

    state = module_state(trained_model)
    plain = _model_like(trained_model, pbmc_train, state=state, cls=scvi.model.SCVI)
    assert type(plain) is scvi.model.SCVI
    a = utility_report(plain, heldout, markers=markers, reference=trained_model, n_draws=2)
    b = utility_report(trained_model, heldout, markers=markers, reference=plain, n_draws=2)
    pd.testing.assert_series_equal(a, b)
    assert a["neighborhood_jaccard"] == 1.0


def test_superset_of_training_cells(trained_model, pbmc, markers):
    r = utility_report(trained_model, pbmc, markers=markers, n_draws=1)
    assert r["n_cells"] == pbmc.n_obs
    z = latent_means(trained_model, pbmc)
    assert z.shape == (pbmc.n_obs, 10)


# --------------------------------------------------------------------------------------------
# reproducibility, no mutation


def test_reproducible_with_seed_and_global_rng_untouched(
    trained_model, heldout, markers, report_trained, untrained
):
    np.random.seed(123)  # noqa: NPY002 - the global state is what we check
    random.seed(123)
    torch.manual_seed(123)
    np_before = np.random.get_state()[1].copy()  # noqa: NPY002
    py_before, torch_before = random.getstate(), torch.get_rng_state().clone()
    again = utility_report(
        trained_model, heldout, reference=untrained, markers=markers, n_draws=N_DRAWS
    )
    pd.testing.assert_series_equal(again, report_trained)
    other_seed = utility_report(trained_model, heldout, markers=markers, n_draws=N_DRAWS, seed=1)
    assert other_seed["elbo_mean"] != report_trained["elbo_mean"]  # different posterior draws
    assert other_seed["silhouette"] == report_trained["silhouette"]  # exact latent means
    assert np.array_equal(np_before, np.random.get_state()[1])  # noqa: NPY002
    assert random.getstate() == py_before
    assert torch.equal(torch.get_rng_state(), torch_before)


def test_anndata_and_models_not_mutated(trained_model, untrained, pbmc, pbmc_train, markers):
    heldout = pbmc[pbmc.obs["membership"] == "heldout"]  # a view of an unregistered object
    store = type(trained_model)._per_instance_manager_store
    n_managers = {m.id: len(store[m.id]) for m in (trained_model, untrained)}
    snaps = {id(a): _snapshot(a) for a in (pbmc, heldout, pbmc_train)}
    states = {id(m): module_state(m) for m in (trained_model, untrained)}
    untrained.module.train()  # a model left in training mode must stay in it
    try:
        for cells in (heldout, pbmc_train):
            utility_report(trained_model, cells, reference=untrained, markers=markers, n_draws=1)
        latent_means(trained_model)
        latent_ari(untrained, heldout, clustering="leiden")
    finally:
        assert untrained.module.training and all(m.training for m in untrained.module.modules())
        untrained.module.eval()
    for a in (pbmc, heldout, pbmc_train):
        _assert_unchanged(a, snaps[id(a)])
    for m in (trained_model, untrained):
        assert same_state(states[id(m)], module_state(m))
        assert len(store[m.id]) == n_managers[m.id]  # evaluation copies deregistered


def test_model_loaded_without_anndata(trained_model, heldout, tmp_path):
    trained_model.save(tmp_path / "m", save_anndata=False)
    loaded = su.SCVI.load(str(tmp_path / "m"))
    assert loaded.adata is None
    z = latent_means(loaded, heldout)
    np.testing.assert_allclose(z, latent_means(trained_model, heldout), rtol=1e-5, atol=1e-6)
    assert loaded.adata is None  # the evaluated copy was not adopted
    with pytest.raises(ValueError, match="holds no AnnData"):
        latent_means(loaded)


# --------------------------------------------------------------------------------------------
# errors


def test_clear_errors(trained_model, heldout, markers):
    with pytest.raises(KeyError, match="'no_such_column' is not a column"):
        utility_report(trained_model, heldout, labels_key="no_such_column")
    with pytest.raises(KeyError, match="no_such_column"):
        latent_silhouette(trained_model, heldout, labels_key="no_such_column")
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        marker_correlation(trained_model, heldout, markers=["NOT_A_GENE", "FTL"])
    with pytest.raises(ValueError, match="markers"):
        utility_report(trained_model, heldout, labels_key=None)
    with pytest.raises(ValueError, match="cannot be set up for this model"):
        latent_means(trained_model, heldout[:, :100].copy())
    with pytest.raises(ValueError, match="n_draws"):
        heldout_elbo(trained_model, heldout, n_draws=0)
    with pytest.raises(ValueError, match="clustering"):
        latent_ari(trained_model, heldout, clustering="louvain")
    with pytest.raises(TypeError, match="reference"):
        utility_report(trained_model, heldout, reference="retrained", markers=markers)
    with pytest.raises(TypeError, match="AnnData"):
        latent_means(trained_model, heldout.X)
    with pytest.raises(ValueError, match="n_neighbors"):
        knn_jaccard(np.zeros((5, 2)), np.zeros((5, 2)), n_neighbors=5)
    with pytest.raises(ValueError, match="same cells"):
        knn_jaccard(np.zeros((5, 2)), np.zeros((6, 2)))
    one_type = heldout[heldout.obs["cell_type"] == "CD14+ Monocyte"].copy()
    with pytest.raises(ValueError, match="2 <= number of labels"):
        latent_silhouette(trained_model, one_type)
