"""The bad-input table (docs/bad_input.md): a clear error for each bad input, nothing mutated.

Every test checks the error type, a fragment of its message, and that the original model
(``state_dict`` and every saved ``*_`` attribute, its AnnData and manager) and the user's
AnnData objects (X, layers, obs, var, uns, obsm) are bit-identical afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scvi
import torch

import scvi_unlearn as su
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.metrics import heldout_elbo, per_cell_elbo, utility_report

QUIET = {"enable_progress_bar": False}
ATTACK = {"attack": "threshold", "n_draws": 1, "n_bootstrap": 20}

# ------------------------------------------------------------------------------ snapshots


def _equal(a, b) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, pd.DataFrame | pd.Series | pd.Index):
        return type(a) is type(b) and a.equals(b)
    if sp.issparse(a) or sp.issparse(b):
        if not (sp.issparse(a) and sp.issparse(b)) or a.format != b.format:
            return False
        a, b = a.tocsr(), b.tocsr()
        return (
            a.shape == b.shape
            and a.dtype == b.dtype
            and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data, equal_nan=True)
        )
    if isinstance(a, np.ndarray | torch.Tensor) or isinstance(b, np.ndarray | torch.Tensor):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # pragma: no cover - exotic uns values
        return repr(a) == repr(b)


def _adata_state(adata) -> dict:
    return {
        "is_view": adata.is_view,
        "X": copy.deepcopy(adata.X),
        "layers": {k: copy.deepcopy(v) for k, v in adata.layers.items()},
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "uns": copy.deepcopy(dict(adata.uns)),
        "obsm": {k: copy.deepcopy(v) for k, v in adata.obsm.items()},
    }


def _model_state(model) -> dict:
    store = type(model)._per_instance_manager_store.get(model.id, {})
    return {
        "state_dict": {k: v.detach().clone() for k, v in model.module.state_dict().items()},
        "attributes": {
            k: copy.deepcopy(v)
            for k, v in vars(model).items()
            if k.endswith("_") and not k.startswith("_")
        },
        "adata": model.adata,
        "manager": model.adata_manager,
        "managers": sorted(store),
        "training": model.module.training,
    }


@contextlib.contextmanager
def unchanged(model, *adatas):
    """Assert that ``model`` and every AnnData are bit-identical after the block."""
    before_model = None if model is None else _model_state(model)
    before = [_adata_state(a) for a in adatas]
    yield
    for a, state in zip(adatas, before):
        after = _adata_state(a)
        for key in state:
            assert _equal(state[key], after[key]), f"AnnData {key} changed"
    if model is not None:
        after_model = _model_state(model)
        assert after_model["adata"] is before_model["adata"], "model.adata replaced"
        assert after_model["manager"] is before_model["manager"], "model.adata_manager replaced"
        for key in ("state_dict", "attributes", "managers", "training"):
            assert _equal(before_model[key], after_model[key]), f"model {key} changed"


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def heldout_names(pbmc):
    return np.asarray(pbmc.obs_names[pbmc.obs["membership"] == "heldout"], dtype=str)


@pytest.fixture(scope="module")
def nonmembers(heldout_names, forget_names):
    return heldout_names[: len(forget_names)]


@pytest.fixture(scope="module")
def reversed_genes(pbmc):
    """The same cells and genes as ``pbmc``, genes in reverse order (not registered)."""
    return pbmc[:, pbmc.var_names[::-1]].copy()


def _fresh(pbmc, cells=None, **setup):
    """A private registered copy of (some of) ``pbmc``'s training members."""
    adata = pbmc[pbmc.obs["membership"] == "train"]
    adata = (adata if cells is None else adata[:cells]).copy()
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type", **setup)
    return adata


def _tiny(adata, epochs=1, seed=0):
    with isolated_seed(seed):
        model = su.SCVI(adata, n_latent=4, n_hidden=16)
        if epochs:
            model.train(max_epochs=epochs, batch_size=64, **QUIET)
    return model


@pytest.fixture(scope="module")
def untrained(pbmc):
    return _tiny(_fresh(pbmc, cells=120), epochs=0)


@pytest.fixture(scope="module")
def loaded_without_adata(trained_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model"
    trained_model.save(str(path), save_anndata=False)
    with pytest.warns(UserWarning, match="without anndata"):
        return su.SCVI.load(str(path))


@pytest.fixture(scope="module")
def references(trained_model, forget_names):
    """Three cheap retrains without the forget cells (for the equivalence test)."""
    return [
        trained_model.unlearn(forget_names, method="retrain", seed=s, max_epochs=2, **QUIET)
        for s in range(3)
    ]


def _with_counts(pbmc, cells, kind):
    """A copy of ``pbmc`` whose counts of the first of ``cells`` hold a bad value."""
    adata = pbmc.copy()
    x = adata.layers["counts"].toarray().astype(np.float32)
    x[adata.obs_names.get_indexer(cells[:1]), :3] = {
        "NaN": np.nan,
        "infinite": np.inf,
        "negative": -1.0,
        "non-integer": 0.5,
    }[kind]
    adata.layers["counts"] = sp.csr_matrix(x)
    return adata


# ------------------------------------------------------------------------------ forget cells


@pytest.mark.parametrize("api", ["unlearn", "membership_attack", "fisher_overlap"])
def test_forget_cells_not_in_the_training_set(api, trained_model, pbmc, heldout_names):
    outside = list(heldout_names[:3])
    call, error, match = {
        "unlearn": (
            lambda: trained_model.unlearn(outside, method="ssd"),
            ValueError,
            "3 of the 3 cells to forget were not used to train this model",
        ),
        "membership_attack": (
            lambda: trained_model.membership_attack(
                ["no-such-cell"], outside, adata=pbmc, **ATTACK
            ),
            KeyError,
            r"not in (adata|the AnnData given)",
        ),
        "fisher_overlap": (
            lambda: trained_model.fisher_overlap(["no-such-cell"], control=None),
            KeyError,
            "not in the model's AnnData",
        ),
    }[api]
    with unchanged(trained_model, pbmc), pytest.raises(error, match=match):
        call()


def test_forget_cells_not_trained_can_be_skipped_but_not_all(trained_model, pbmc, heldout_names):
    with unchanged(trained_model, pbmc), pytest.raises(ValueError, match="None of the cells"):
        trained_model.unlearn(list(heldout_names[:3]), method="ssd", ignore_untrained=True)


@pytest.mark.parametrize(
    ("api", "match"),
    [
        ("unlearn", "The forget set is empty"),
        ("unlearn_anndata", "The forget set is empty"),
        ("membership_attack", "members is empty"),
        ("fisher_overlap", "adata_forget is empty"),
        ("equivalence_test", "forget is empty"),
    ],
)
def test_empty_forget_set(api, match, trained_model, references, pbmc, nonmembers):
    call = {
        "unlearn": lambda: trained_model.unlearn([], method="ssd"),
        "unlearn_anndata": lambda: trained_model.unlearn(pbmc[:0], method="ssd"),
        "membership_attack": lambda: trained_model.membership_attack(
            [], nonmembers, adata=pbmc, **ATTACK
        ),
        "fisher_overlap": lambda: trained_model.fisher_overlap([], control=None),
        "equivalence_test": lambda: su.attack.equivalence_test(
            trained_model, references, [], adata=pbmc
        ),
    }[api]
    with unchanged(trained_model, pbmc), pytest.raises(ValueError, match=match):
        call()


def test_forget_all_training_cells(trained_model, pbmc_train):
    with (
        unchanged(trained_model, pbmc_train),
        pytest.raises(ValueError, match="every cell the model was trained on"),
    ):
        trained_model.unlearn(pbmc_train, method="ssd")


# ------------------------------------------------------------------------------ duplicates


def test_duplicated_forget_names_are_one_set_for_unlearn(trained_model, pbmc, forget_names):
    """Forgetting is a set operation: a name listed twice is forgotten once (not an error)."""
    twice = list(forget_names) + list(forget_names[:3])
    with unchanged(trained_model, pbmc):
        new = trained_model.unlearn(twice, method="ssd")
    assert new.unlearn_record_["n_forget"] == len(forget_names)


@pytest.mark.parametrize("api", ["membership_attack", "fisher_overlap", "equivalence_test"])
def test_duplicated_names_in_evaluated_cells(
    api, trained_model, references, pbmc, forget_names, nonmembers
):
    twice = list(forget_names) + list(forget_names[:1])
    call = {
        "membership_attack": lambda: trained_model.membership_attack(
            twice, nonmembers, adata=pbmc, **ATTACK
        ),
        "fisher_overlap": lambda: trained_model.fisher_overlap(twice, control=None),
        "equivalence_test": lambda: su.attack.equivalence_test(
            trained_model, references, twice, adata=pbmc
        ),
    }[api]
    with unchanged(trained_model, pbmc), pytest.raises(ValueError, match="duplicated obs_names"):
        call()


def test_duplicated_obs_names_in_the_model_anndata(pbmc):
    adata = pbmc[pbmc.obs["membership"] == "train"][:120].copy()
    names = adata.obs_names.tolist()
    names[1] = names[0]
    adata.obs_names = names
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    model = _tiny(adata)
    with (
        unchanged(model, adata),
        pytest.raises(ValueError, match="duplicated obs_names.*obs_names_make_unique"),
    ):
        model.unlearn([names[5]], method="ssd")


def test_duplicated_obs_names_are_read_by_position_in_the_metrics(trained_model, pbmc, nonmembers):
    adata = pbmc[nonmembers].copy()
    names = adata.obs_names.tolist()
    names[1] = names[0]
    adata.obs_names = names
    with unchanged(trained_model, adata):
        got = per_cell_elbo(trained_model, adata, n_draws=1)
    expected = per_cell_elbo(trained_model, pbmc[nonmembers], n_draws=1)
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())
    assert list(got.index) == names


def test_duplicated_obs_names_in_the_evaluated_anndata(trained_model, pbmc, forget_names):
    adata = pbmc.copy()
    names = adata.obs_names.tolist()
    names[-1] = names[-2]
    adata.obs_names = names
    with unchanged(trained_model, adata), pytest.raises(ValueError, match="duplicated"):
        trained_model.membership_attack(forget_names, [names[-1]], adata=adata, **ATTACK)


# ------------------------------------------------------------------------------ genes


def test_genes_in_another_order_are_aligned_in_the_audit(
    trained_model, pbmc, reversed_genes, forget_names, nonmembers
):
    """Was accepted silently with misaligned genes (another AUC); now aligned by var_names."""
    expected = trained_model.membership_attack(forget_names, nonmembers, adata=pbmc, **ATTACK)
    with unchanged(trained_model, reversed_genes):
        got = trained_model.membership_attack(
            forget_names, nonmembers, adata=reversed_genes, **ATTACK
        )
    assert got.auc == expected.auc
    assert reversed_genes.var_names[0] == pbmc.var_names[-1]  # the user's order is kept


def test_genes_in_another_order_are_aligned_in_the_metrics_and_fisher(
    trained_model, pbmc, reversed_genes, heldout_names
):
    cells = heldout_names[:40]
    with unchanged(trained_model, pbmc, reversed_genes):
        expected = per_cell_elbo(trained_model, pbmc[cells], n_draws=1)
        got = per_cell_elbo(trained_model, reversed_genes[cells], n_draws=1)
        pd.testing.assert_frame_equal(got, expected)
        assert heldout_elbo(trained_model, reversed_genes[cells], n_draws=1).equals(
            heldout_elbo(trained_model, pbmc[cells], n_draws=1)
        )
        a = trained_model.fisher_overlap(pbmc[cells[:10]], pbmc[cells[10:]], control=None)
        b = trained_model.fisher_overlap(
            reversed_genes[cells[:10]], reversed_genes[cells[10:]], control=None
        )
    assert a.global_cosine == b.global_cosine


def test_genes_in_another_order_are_aligned_in_the_equivalence_test(
    trained_model, references, pbmc, reversed_genes, forget_names
):
    kw = {"n_draws": 1, "max_heldout": 40}
    expected = su.attack.equivalence_test(
        trained_model, references, forget_names, adata=pbmc, **kw
    )
    with unchanged(trained_model, reversed_genes):
        got = su.attack.equivalence_test(
            trained_model, references, forget_names, adata=reversed_genes, **kw
        )
    assert got.statistic == expected.statistic
    pd.testing.assert_frame_equal(got.per_cell, expected.per_cell)


@pytest.mark.parametrize(
    ("genes", "match"),
    [
        ("missing", r"3 of the model's 765 genes are missing \('HES4'"),
        ("extra", r"1 genes are not among the model's \('EXTRA'\)"),
        # same number of genes, other names (e.g. Ensembl IDs for symbols): scvi-tools only
        # compares the number of genes, so this was accepted silently
        ("renamed", r"765 of the model's 765 genes are missing.*765 genes are not among"),
    ],
)
@pytest.mark.parametrize("api", ["membership_attack", "heldout_elbo", "fisher_overlap"])
def test_missing_or_foreign_genes(
    genes, match, api, trained_model, pbmc, forget_names, nonmembers
):
    if genes == "missing":
        adata = pbmc[:, pbmc.var_names[3:]].copy()
    elif genes == "renamed":
        adata = pbmc.copy()
        adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    else:
        counts = sp.hstack([pbmc.layers["counts"], pbmc.layers["counts"][:, :1]]).tocsr()
        var = pd.DataFrame(index=[*pbmc.var_names, "EXTRA"])
        adata = ad.AnnData(counts.copy(), obs=pbmc.obs.copy(), var=var, layers={"counts": counts})
    call = {
        "membership_attack": lambda: trained_model.membership_attack(
            forget_names, nonmembers, adata=adata, **ATTACK
        ),
        "heldout_elbo": lambda: heldout_elbo(trained_model, adata[nonmembers]),
        "fisher_overlap": lambda: trained_model.fisher_overlap(
            adata[nonmembers[:10]], adata[nonmembers[10:]], control=None
        ),
    }[api]
    with unchanged(trained_model, adata), pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------ counts


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("NaN", "3 NaN or infinite values"),
        ("infinite", "3 NaN or infinite values"),
        ("negative", "3 negative values"),
    ],
)
@pytest.mark.parametrize("api", ["membership_attack", "heldout_elbo", "equivalence_test"])
def test_invalid_counts_in_evaluated_cells(
    kind, match, api, trained_model, references, pbmc, forget_names, nonmembers
):
    adata = _with_counts(pbmc, forget_names if api != "heldout_elbo" else nonmembers, kind)
    call = {
        "membership_attack": lambda: trained_model.membership_attack(
            forget_names, nonmembers, adata=adata, **ATTACK
        ),
        "heldout_elbo": lambda: heldout_elbo(trained_model, adata[nonmembers]),
        "equivalence_test": lambda: su.attack.equivalence_test(
            trained_model, references, forget_names, adata=adata, n_draws=1, max_heldout=40
        ),
    }[api]
    cell = forget_names[0] if api != "heldout_elbo" else nonmembers[0]
    with (
        unchanged(trained_model, adata),
        pytest.raises(ValueError, match=rf"adata.layers\['counts'\] contains {match}.*'{cell}'"),
    ):
        call()


def test_matched_nonmembers_refuse_invalid_counts(trained_model, pbmc, forget_names):
    """Without explicit non-members the audit matches them on the counts: same check."""
    adata = _with_counts(pbmc, forget_names, "NaN")
    with unchanged(trained_model, adata), pytest.raises(ValueError, match="NaN or infinite"):
        trained_model.membership_attack(forget_names, adata=adata, **ATTACK)


def test_non_integer_counts_warn_in_evaluation(trained_model, pbmc, nonmembers):
    adata = _with_counts(pbmc, nonmembers, "non-integer")
    with unchanged(trained_model, adata), pytest.warns(UserWarning, match="3 non-integer values"):
        heldout_elbo(trained_model, adata[nonmembers], n_draws=1)


@pytest.mark.parametrize(
    ("kind", "match"),
    [("NaN", "NaN or infinite"), ("infinite", "NaN or infinite"), ("negative", "negative")],
)
def test_invalid_counts_refused_before_training(kind, match, pbmc):
    """Was a torch 'Expected parameter loc ... found invalid values' error mid-training."""
    bad = _with_counts(pbmc, pbmc.obs_names[pbmc.obs["membership"] == "train"], kind)
    adata = _fresh(bad, cells=120)
    model = _tiny(adata, epochs=0)
    with unchanged(model, adata), pytest.raises(ValueError, match=match):
        model.train(max_epochs=1, **QUIET)
    assert not model.is_trained_


def test_normal_likelihood_accepts_negative_values(pbmc):
    """Negative values are data, not an error, for gene_likelihood='normal' (the toy VAE)."""
    bad = _with_counts(pbmc, pbmc.obs_names[pbmc.obs["membership"] == "train"], "negative")
    adata = _fresh(bad, cells=120)
    kw = {"gene_likelihood": "normal", "log_variational": False}  # log1p(-1) is -inf
    with isolated_seed(0):
        model = su.SCVI(adata, n_latent=4, n_hidden=16, **kw)
        model.train(max_epochs=1, batch_size=64, **QUIET)
    assert model.is_trained_


# ------------------------------------------------------------------------------ views and copies


def test_setup_anndata_on_a_view(pbmc):
    view = pbmc[pbmc.obs["membership"] == "train"]
    with unchanged(None, view), pytest.raises(ValueError, match=r"adata = adata.copy\(\)"):
        su.SCVI.setup_anndata(view, layer="counts")
    assert view.is_view


def test_model_on_an_unregistered_copy_of_a_registered_anndata(pbmc_train):
    copy_ = pbmc_train.copy()
    with (
        unchanged(None, copy_, pbmc_train),
        pytest.raises(ValueError, match="Did you make a copy"),
    ):
        su.SCVI(copy_)


def test_views_are_evaluated_like_copies(trained_model, pbmc, forget_names, nonmembers):
    """per_cell_elbo turned a view into an actual AnnData and registered it in place."""
    view = pbmc[np.concatenate([forget_names, nonmembers])]
    with unchanged(trained_model, view, pbmc):
        got = per_cell_elbo(trained_model, view, n_draws=1)
        report = trained_model.membership_attack(forget_names, nonmembers, adata=view, **ATTACK)
    assert view.is_view
    pd.testing.assert_frame_equal(got, per_cell_elbo(trained_model, view.copy(), n_draws=1))
    expected = trained_model.membership_attack(forget_names, nonmembers, adata=pbmc, **ATTACK)
    assert report.auc == expected.auc


def test_a_view_as_the_forget_set(trained_model, pbmc, forget_names):
    view = pbmc[forget_names]
    with unchanged(trained_model, view, pbmc):
        new = trained_model.unlearn(view, method="ssd")
    assert view.is_view and new.unlearn_record_["n_forget"] == len(forget_names)


# ------------------------------------------------------------------------------ other setups


def test_model_on_an_anndata_set_up_for_another_model(pbmc):
    adata = pbmc[pbmc.obs["membership"] == "train"].copy()
    scvi.model.SCANVI.setup_anndata(
        adata, layer="counts", labels_key="cell_type", unlabeled_category="unknown"
    )
    with unchanged(None, adata), pytest.raises(ValueError, match="setup with a different model"):
        su.SCVI(adata)


def test_evaluating_an_anndata_without_a_column_of_the_model_setup(
    trained_model, pbmc, nonmembers
):
    adata = pbmc[nonmembers].copy()
    del adata.obs["cell_type"]
    with (
        unchanged(trained_model, adata),
        pytest.raises(ValueError, match="cannot be set up for this model.*cell_type"),
    ):
        heldout_elbo(trained_model, adata, n_draws=1)


@pytest.mark.parametrize("setup", ["SCANVI", "SCVI with other keys"])
def test_evaluating_an_anndata_set_up_for_another_model(
    setup, trained_model, pbmc, forget_names, nonmembers
):
    """Evaluated with the model's own registry on a copy; the other setup stays as it was."""
    adata = pbmc.copy()
    if setup == "SCANVI":
        scvi.model.SCANVI.setup_anndata(
            adata, layer="counts", labels_key="cell_type", unlabeled_category="unknown"
        )
    else:
        adata.obs["donor"] = pd.Categorical(["a"] * adata.n_obs)
        su.SCVI.setup_anndata(adata, layer=None, batch_key="donor")
    expected = trained_model.membership_attack(forget_names, nonmembers, adata=pbmc, **ATTACK)
    with unchanged(trained_model, adata):
        got = trained_model.membership_attack(forget_names, nonmembers, adata=adata, **ATTACK)
        elbo = heldout_elbo(trained_model, adata[nonmembers], n_draws=1)
    assert got.auc == expected.auc
    assert elbo.equals(heldout_elbo(trained_model, pbmc[nonmembers], n_draws=1))


# ------------------------------------------------------------------------------ methods


def test_unknown_method(trained_model, forget_names):
    with (
        unchanged(trained_model),
        pytest.raises(ValueError, match="Unknown unlearning method 'nope'. Available.*finetune"),
    ):
        trained_model.unlearn(forget_names, method="nope")


#: the built-in methods: the first five take **trainer_kwargs
BUILT_IN = ["finetune", "gradient_ascent", "scrub", "contrastive", "fisher"]
BUILT_IN += ["ssd", "retrain", "fast_retrain", "dp_sgd", "extragradient", "mi_regularized"]


@pytest.mark.parametrize("method", BUILT_IN)
def test_unknown_hyperparameter(method, trained_model, forget_names):
    """finetune(lr_typo=1) was Lightning's 'Trainer.__init__() got an unexpected keyword'."""
    params = list(inspect.signature(su.unlearn.METHODS[method]).parameters.values())[1:]
    named = sorted(p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD)
    with (
        unchanged(trained_model),
        pytest.raises(
            TypeError,
            match=re.escape(
                f"Unknown hyper-parameter(s) ['lr_typo'] for unlearning method {method!r}."
            )
            + ".*"
            + re.escape(f"It accepts: {named}"),
        ),
    ):
        trained_model.unlearn(forget_names, method=method, lr_typo=1)


def test_misspelt_hyperparameter_suggests_the_name(trained_model, forget_names):
    with (
        unchanged(trained_model),
        pytest.raises(TypeError, match=r"Did you mean \['max_epochs'\]"),
    ):
        trained_model.unlearn(forget_names, method="finetune", max_epoch=1)


def test_real_trainer_arguments_still_work(trained_model, forget_names):
    with unchanged(trained_model):
        new = trained_model.unlearn(
            forget_names,
            method="finetune",
            max_epochs=1,
            gradient_clip_val=1.0,  # lightning.pytorch.Trainer
            log_every_n_steps=1,  # scvi.train.Trainer
            **QUIET,
        )
    assert new.unlearn_record_["hyperparameters"]["gradient_clip_val"] == 1.0


# ------------------------------------------------------------------------------ model state


@pytest.mark.parametrize(
    ("api", "error", "match"),
    [
        ("unlearn", ValueError, "The model is not trained"),
        ("membership_attack", RuntimeError, "The model is not trained"),
        ("heldout_elbo", RuntimeError, "The model is not trained"),
        ("per_cell_elbo", RuntimeError, "The model is not trained"),
        ("utility_report", RuntimeError, "The model is not trained"),
        ("fisher_overlap", RuntimeError, "The model is not trained"),
        ("equivalence_test", RuntimeError, "The model is not trained"),
    ],
)
def test_untrained_model(api, error, match, untrained, references, pbmc, forget_names, nonmembers):
    """The audit and the metrics scored an untrained model (an audit 'passed' by it)."""
    own = untrained.adata.obs_names
    call = {
        "unlearn": lambda: untrained.unlearn(own[:5], method="ssd"),
        "membership_attack": lambda: untrained.membership_attack(
            forget_names, nonmembers, adata=pbmc, **ATTACK
        ),
        "heldout_elbo": lambda: heldout_elbo(untrained, pbmc[nonmembers]),
        "per_cell_elbo": lambda: per_cell_elbo(untrained),
        "utility_report": lambda: utility_report(untrained, pbmc[nonmembers]),
        "fisher_overlap": lambda: untrained.fisher_overlap(own[:10], own[10:40], control=None),
        "equivalence_test": lambda: su.attack.equivalence_test(
            untrained, references, forget_names, adata=pbmc, n_draws=1, max_heldout=40
        ),
    }[api]
    with unchanged(untrained, pbmc, untrained.adata), pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    ("api", "error", "match"),
    [
        ("unlearn", ValueError, r"no AnnData.*SCVI.load\(path, adata=adata\)"),
        ("per_cell_elbo", ValueError, "holds no AnnData.*pass the cells to evaluate"),
        ("membership_attack", ValueError, "no AnnData manager"),
    ],
)
def test_model_loaded_without_anndata(
    api, error, match, loaded_without_adata, pbmc, forget_names, nonmembers
):
    model = loaded_without_adata
    call = {
        "unlearn": lambda: model.unlearn(forget_names, method="ssd"),
        "per_cell_elbo": lambda: per_cell_elbo(model),
        "membership_attack": lambda: model.membership_attack(
            forget_names, nonmembers, adata=pbmc, **ATTACK
        ),
    }[api]
    with unchanged(model, pbmc), pytest.raises(error, match=match):
        call()


def test_model_loaded_without_anndata_evaluates_given_cells(
    loaded_without_adata, trained_model, pbmc, forget_names, nonmembers
):
    """fisher_overlap made such a model adopt the evaluated copy as its AnnData."""
    model = loaded_without_adata
    with unchanged(model, pbmc):
        elbo = heldout_elbo(model, pbmc[nonmembers], n_draws=1)
        ov = model.fisher_overlap(pbmc[forget_names[:10]], pbmc[nonmembers], control=None)
    assert model.adata is None
    assert elbo.equals(heldout_elbo(trained_model, pbmc[nonmembers], n_draws=1))
    assert np.isfinite(ov.global_cosine)


@pytest.fixture(scope="module")
def minified(pbmc):
    adata = _fresh(pbmc, cells=120)
    model = _tiny(adata)
    qzm, qzv = model.get_latent_representation(give_mean=False, return_dist=True)
    adata.obsm["X_latent_qzm"], adata.obsm["X_latent_qzv"] = qzm, qzv
    model.minify_adata(use_latent_qzm_key="X_latent_qzm", use_latent_qzv_key="X_latent_qzv")
    return model


@pytest.mark.parametrize(
    ("api", "match"),
    [
        ("unlearn", "minified.*unlearning needs the full counts"),
        ("retrain", "minified.*unlearning needs the full counts"),
        ("heldout_elbo", "minified.*cannot score other cells"),
        ("membership_attack", "minified.*cannot score other cells"),
    ],
)
def test_minified_model(api, match, minified, pbmc, forget_names, nonmembers):
    """unlearn() raised KeyError: '_scvi_adata_minify_type not found in adata.uns.'"""
    own = minified.adata.obs_names[:5]
    call = {
        "unlearn": lambda: minified.unlearn(own, method="ssd"),
        "retrain": lambda: minified.unlearn(own, method="retrain"),
        "heldout_elbo": lambda: heldout_elbo(minified, pbmc[nonmembers]),
        "membership_attack": lambda: minified.membership_attack(
            forget_names, nonmembers, adata=pbmc, **ATTACK
        ),
    }[api]
    with unchanged(minified, pbmc, minified.adata), pytest.raises(ValueError, match=match):
        call()


def test_equivalence_test_forget_cells_not_in_adata(trained_model, references, pbmc):
    with (
        unchanged(trained_model, pbmc),
        pytest.raises((KeyError, ValueError), match="no-such-cell.*not in|not in.*no-such-cell"),
    ):
        su.attack.equivalence_test(
            trained_model, references, ["no-such-cell"], adata=pbmc, n_draws=1, max_heldout=40
        )
