"""Per-sample diagonal Fisher of scVI's negative ELBO: the fast estimator against a loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scvi_unlearn as su
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.fisher import diagonal_fisher, draw_noise, fisher_of_cells, vae_cell_loss


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """Many small ops: on a busy 2-core machine two OpenMP threads oversubscribe (30x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def reference_loop_fisher(model, adata, indices, n_draws, seed):
    """One ordinary backward per cell through ``model.module`` (the slow, obvious way)."""
    from scvi import REGISTRY_KEYS

    module = model.module
    was_training = module.training
    module.eval()
    noise = draw_noise(len(indices), module.n_latent, n_draws, seed)
    loader = model._make_data_loader(adata=adata, indices=indices, batch_size=1, shuffle=False)
    params = dict(module.named_parameters())
    sums = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in params.items()}
    received = set()
    try:
        for i, tensors in enumerate(loader):
            inputs = {
                k: tensors[k]
                for k in (REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.LABELS_KEY)
            }
            inputs["_eps_z"] = noise["_eps_z"][i : i + 1]
            inputs["_eps_l"] = noise["_eps_l"][i : i + 1]
            loss = vae_cell_loss(module, inputs).sum()
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (k, _), g in zip(params.items(), grads):
                if g is not None:
                    received.add(k)
                    sums[k] += g.double() ** 2
    finally:
        module.train(was_training)
    return {k: sums[k] / len(indices) for k in received}


def _small_model(adata, seed=0, **kwargs):
    with isolated_seed(seed):
        model = su.SCVI(adata, n_latent=5, n_hidden=32, **kwargs)
        model.train(max_epochs=2, enable_progress_bar=False, batch_size=64)
    return model


@pytest.fixture(scope="module")
def small_adata(pbmc):
    # from the unregistered fixture: a copy of a registered AnnData shares its scvi uuid
    adata = pbmc[pbmc.obs["membership"] == "train"][:120].copy()
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    return adata


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # default: BatchNorm, zinb, dispersion="gene"
        {"use_batch_norm": "none", "use_layer_norm": "both", "gene_likelihood": "nb"},
        {"use_observed_lib_size": False, "dispersion": "gene-label", "n_layers": 2},
    ],
    ids=["batchnorm-zinb", "layernorm-nb", "libenc-genelabel-2layers"],
)
def test_fast_matches_per_cell_loop(small_adata, kwargs):
    model = _small_model(small_adata, **kwargs)
    idx = np.arange(0, 120, 4)
    fast = fisher_of_cells(model, small_adata, idx, n_draws=2, seed=3, batch_size=8)
    ref = reference_loop_fisher(model, small_adata, idx, n_draws=2, seed=3)
    assert set(fast.values) == set(ref)
    assert set(fast.excluded) == {k for k, _ in model.module.named_parameters()} - set(ref)
    for k, v in ref.items():
        assert fast.values[k].shape == v.shape
        assert fast.values[k].dtype == torch.float64
        rel = (fast.values[k] - v).abs().max() / v.abs().max().clamp_min(1e-30)
        assert rel < 1e-4, (k, float(rel))
    assert fast.n_examples == len(idx)
    if "dispersion" not in kwargs:  # every parameter by the taps: no vmap pass at all
        assert fast.meta["vmap_parameters"] == ()
    else:  # gene-label dispersion goes through one_hot: px_r by the vmap route
        assert fast.meta["vmap_parameters"] == ("px_r",)


def test_vmap_route_matches_taps(small_adata):
    from scvi_unlearn.fisher import squared_gradient_mean
    from scvi_unlearn.fisher._vae_fisher import _batches

    model = _small_model(small_adata)
    idx = np.arange(20)
    noise = draw_noise(len(idx), model.module.n_latent, 2, 0)
    taps = fisher_of_cells(model, small_adata, idx, n_draws=2, seed=0, batch_size=8)
    vm = squared_gradient_mean(
        model.module, vae_cell_loss, _batches(model, small_adata, idx, 8, noise), route="vmap"
    )
    assert set(vm.meta["vmap_parameters"]) == set(vm.values) == set(taps.values)
    for k, v in vm.values.items():
        assert float((taps.values[k] - v).abs().max() / v.abs().max()) < 1e-4, k


def test_excluded_parameters_reported(small_adata):
    model = _small_model(small_adata)  # dispersion="gene", observed library size
    fisher = fisher_of_cells(model, small_adata, np.arange(10))
    assert any(k.startswith("decoder.px_r_decoder") for k in fisher.excluded)
    assert any(k.startswith("l_encoder") for k in fisher.excluded)
    assert "px_r" in fisher.values
    assert not set(fisher.excluded) & set(fisher.values)
    assert all(torch.all(v >= 0) for v in fisher.values.values())


def test_reproducible_model_unchanged_rng_untouched(small_adata):
    model = _small_model(small_adata)
    module = model.module
    module.train()  # a caller's module in train mode must come back in train mode
    module.decoder.px_decoder.requires_grad_(False)  # and frozen flags must survive
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    flags = {k: p.requires_grad for k, p in module.named_parameters()}
    grads = {k: None if p.grad is None else p.grad.clone() for k, p in module.named_parameters()}
    x_before = small_adata.layers["counts"].copy()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = diagonal_fisher(model, small_adata, np.arange(30), n_draws=2, seed=7, batch_size=16)
    assert torch.equal(torch.rand(3), expected_next)  # global RNG untouched
    b = diagonal_fisher(model, small_adata, np.arange(30), n_draws=2, seed=7, batch_size=7)
    c = diagonal_fisher(model, small_adata, np.arange(30), n_draws=2, seed=8)
    for k in a:
        # batch size is irrelevant (up to float32 summation order)
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6 * float(a[k].abs().max()))
    assert any(not torch.allclose(a[k], c[k]) for k in a)  # another seed, other draws
    assert module.training
    assert {k: p.requires_grad for k, p in module.named_parameters()} == flags
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, p in module.named_parameters():  # .grad neither written nor cleared
        assert (p.grad is None) == (grads[k] is None) and (
            p.grad is None or torch.equal(p.grad, grads[k])
        ), k
    assert (small_adata.layers["counts"] != x_before).nnz == 0


def test_fisher_is_larger_where_the_model_fits_worse(trained_model, pbmc_train):
    """Direction check: cells the model fits badly (scrambled genes) have larger gradients."""
    trained = trained_model
    idx = np.arange(40)
    f_trained = diagonal_fisher(trained, pbmc_train, idx)
    bad = pbmc_train[idx].copy()
    idx = np.arange(40)
    rng = np.random.default_rng(0)
    counts = (
        bad.layers["counts"].toarray()
        if hasattr(bad.layers["counts"], "toarray")
        else (np.asarray(bad.layers["counts"]).copy())
    )
    bad.layers["counts"] = rng.permuted(counts, axis=1)
    f_bad = diagonal_fisher(trained, bad, idx)
    total = lambda f: sum(float(v.sum()) for v in f.values())  # noqa: E731
    assert total(f_bad) > 3 * total(f_trained)  # measured: ~6x


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"n_draws": 0}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"indices": []}, ValueError),
        ({"indices": [10_000]}, IndexError),
        ({"indices": [0.5]}, TypeError),
    ],
)
def test_bad_input(small_adata, kwargs, error):
    model = _small_model(small_adata)
    kwargs = {"indices": np.arange(4), **kwargs}
    with pytest.raises(error):
        diagonal_fisher(model, small_adata, **kwargs)
