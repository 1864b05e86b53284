"""Overlap statistics, the classifier control and model.fisher_overlap()."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from scvi_unlearn.fisher import (
    cosine,
    cosine_by_category,
    cosine_by_tensor,
    effective_rank,
    log_correlation,
    normalized_cosine,
    proposition1,
    topk_overlap,
)


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """Many small ops: on a busy 2-core machine two OpenMP threads oversubscribe (30x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _random_fisher(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "z_encoder.encoder.fc_layers.Layer 0.0.weight": torch.rand(8, 20, generator=g) ** 3,
        "decoder.px_scale_decoder.0.weight": torch.rand(20, 8, generator=g) ** 3,
        "px_r": torch.rand(20, generator=g),
    }


def test_self_overlap_is_one():
    f = _random_fisher()
    assert cosine(f, f) == pytest.approx(1.0)
    assert normalized_cosine(f, f) == pytest.approx(1.0)
    assert np.allclose(cosine_by_tensor(f, f)["cosine"], 1.0)
    assert np.allclose(cosine_by_category(f, f)["cosine"], 1.0)
    assert np.allclose(topk_overlap(f, f)["overlap"], 1.0)
    assert log_correlation(f, f)[0] == pytest.approx(1.0)
    p = proposition1(
        f["decoder.px_scale_decoder.0.weight"], f["decoder.px_scale_decoder.0.weight"]
    )
    assert p["measured"] == pytest.approx(1.0) and p["predicted"] == pytest.approx(1.0)


def test_disjoint_supports_give_zero():
    f = _random_fisher()
    a = {k: v.clone() for k, v in f.items()}
    b = {k: v.clone() for k, v in f.items()}
    for k in f:  # a lives on even entries, b on odd ones
        mask = (torch.arange(f[k].numel()) % 2 == 0).reshape(f[k].shape)
        a[k][~mask] = 0
        b[k][mask] = 0
    assert cosine(a, b) == 0.0
    assert normalized_cosine(a, b) == 0.0
    assert (cosine_by_tensor(a, b)["cosine"] == 0).all()
    assert topk_overlap(a, b, fractions=(0.01, 0.1))["overlap"].eq(0).all()
    corr, n_excluded = log_correlation(a, b)  # no entry positive in both: undefined, not 0
    assert math.isnan(corr) and n_excluded == sum(v.numel() for v in f.values())


def test_cosine_has_no_damping_and_is_scale_free():
    a, b = _random_fisher(0), _random_fisher(1)
    base = cosine(a, b)
    assert cosine({k: 1e-9 * v for k, v in a.items()}, b) == pytest.approx(base)
    # a tensor that is zero in one Fisher contributes nothing (a damping constant would)
    a0 = dict(a, px_r=torch.zeros(20))
    expected = cosine(a, b, [k for k in a if k != "px_r"]) * math.sqrt(
        sum(float((b[k] ** 2).sum()) for k in b if k != "px_r")
        / sum(float((b[k] ** 2).sum()) for k in b)
    )
    assert cosine(a0, b) == pytest.approx(expected)
    with pytest.raises(KeyError):
        cosine(a, b, ["not a parameter"])


def test_effective_rank_bounds():
    n = 50
    assert effective_rank({"w": torch.ones(n)}) == pytest.approx(n)
    one = torch.zeros(n)
    one[3] = 2.0
    assert effective_rank({"w": one}) == pytest.approx(1.0)
    assert 1 < effective_rank(_random_fisher()) < 8 * 20 * 2 + 20


def test_proposition1_exact_for_product_fishers():
    g = torch.Generator().manual_seed(0)
    s1, s2 = (torch.rand(30, generator=g, dtype=torch.float64) for _ in range(2))
    v1, v2 = (torch.rand(6, generator=g, dtype=torch.float64) for _ in range(2))
    a, b = torch.outer(s1, v1), torch.outer(s2, v2)
    p = proposition1(a, b)
    assert p["predicted"] == pytest.approx(p["measured"], rel=1e-10)
    assert p["rank_one_a"] == pytest.approx(1.0) and p["rank_one_b"] == pytest.approx(1.0)
    # a Fisher that is not a product: the prediction is only an approximation
    noisy = a + torch.rand(30, 6, generator=g, dtype=torch.float64)
    q = proposition1(noisy, b)
    assert q["rank_one_a"] < 1.0
    with pytest.raises(ValueError):
        proposition1(a, b[:, :3])


# --------------------------------------------------------------------------- model level


@pytest.fixture(scope="module")
def overlap(trained_model, forget_names):
    return trained_model.fisher_overlap(forget_names, seed=0, classifier_epochs=60)


def test_fisher_overlap_end_to_end(overlap, trained_model, forget_names):
    ov = overlap
    n_forget = int(np.isin(forget_names, trained_model.trained_obs_names).sum())
    assert ov.n_forget == len(forget_names) == n_forget
    assert ov.n_retain == len(trained_model.trained_obs_names) - n_forget
    assert 0 < ov.global_cosine < 1
    assert set(ov.by_category.index) == {
        "encoder",
        "latent heads",
        "decoder hidden",
        "decoder output",
        "dispersion",
    }
    assert ov.by_tensor["cosine"].between(0, 1).all()
    assert not set(ov.excluded) & set(ov.by_tensor.index)
    assert any(k.startswith("decoder.px_r_decoder") for k in ov.excluded)
    assert ov.effective_rank["n_parameters"] == ov.forget_fisher.n_parameters
    assert ov.proposition1["layer"] == "decoder.px_scale_decoder.0.weight"
    assert 0 < ov.proposition1["predicted"] < 1 and 0 < ov.proposition1["measured"] < 1
    table = ov.summary()
    assert {"vae_cosine", "classifier_cosine", "vae_over_classifier"} <= set(table.columns)
    assert table.loc["global", "vae_cosine"] == pytest.approx(ov.global_cosine)
    frame = ov.to_frame()
    assert list(frame.columns) == ["model", "level", "name", "statistic", "value"]
    assert {"vae", "classifier", "ratio"} <= set(frame["model"])
    assert set(ov.ratios.index) >= {"global", "decoder output vs classifier output"}
    import matplotlib

    matplotlib.use("Agg")
    fig = ov.plot()
    assert len(fig.axes) == 2
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_classifier_output_layer_overlaps_less_than_shared_layers(overlap):
    """Class-specific output weights separate a rare cell type from the rest; shared ones not."""
    clf = overlap.control
    assert clf["record"]["train_accuracy"] > 0.8
    cats = clf["by_category"]["cosine"]
    assert cats["output"] < 0.5 * cats["encoder"]
    # and the VAE's shared decoder output overlaps more than the classifier's output layer
    assert overlap.ratios.loc["decoder output vs classifier output", "ratio"] > 1


def test_fisher_overlap_reproducible_inputs_equivalent_model_unchanged(
    overlap, trained_model, forget_names
):
    module = trained_model.module
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    obs_before = trained_model.adata.obs.copy()
    forget_adata = trained_model.adata[trained_model.adata.obs_names.isin(forget_names)]
    again = trained_model.fisher_overlap(forget_adata, seed=0, classifier_epochs=60)
    assert again.global_cosine == pytest.approx(overlap.global_cosine, rel=1e-9)
    pd.testing.assert_frame_equal(again.by_tensor, overlap.by_tensor)
    assert again.control["global_cosine"] == pytest.approx(overlap.control["global_cosine"])
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k
    pd.testing.assert_frame_equal(trained_model.adata.obs, obs_before)


def test_fisher_overlap_bad_input(trained_model, forget_names):
    retain = trained_model.trained_obs_names[:20]
    with pytest.raises(ValueError, match="share"):
        trained_model.fisher_overlap(forget_names, np.concatenate([retain, forget_names[:1]]))
    with pytest.raises(KeyError, match="not in the model"):
        trained_model.fisher_overlap(["no-such-cell"], retain, control=None)
    with pytest.raises(TypeError):
        trained_model.fisher_overlap(3, control=None)
    with pytest.raises(ValueError, match="control"):
        trained_model.fisher_overlap(forget_names, control="svm")
    with pytest.raises(ValueError, match="empty"):
        trained_model.fisher_overlap([], retain, control=None)


def test_fisher_overlap_cells_outside_the_model_and_labels_key(trained_model, pbmc):
    """Held-out cells given as an AnnData are evaluated on a copy; the user's is untouched."""
    heldout = pbmc[
        (pbmc.obs["membership"] != "train") & (pbmc.obs["cell_type"] == "CD56+ NK")
    ].copy()
    uns_before, obs_before = set(heldout.uns), heldout.obs.copy()
    retain = trained_model.trained_obs_names[:100]
    ov = trained_model.fisher_overlap(
        heldout, retain, labels_key="cell_type", seed=0, classifier_epochs=20
    )
    assert ov.n_forget == heldout.n_obs > 0 and ov.n_retain == 100
    assert 0 < ov.global_cosine < 1 and 0 <= ov.control["global_cosine"] < 1
    assert set(heldout.uns) == uns_before
    pd.testing.assert_frame_equal(heldout.obs, obs_before)
    with pytest.raises(KeyError, match="labels_key"):
        trained_model.fisher_overlap(heldout, retain, labels_key="no_such_column")
