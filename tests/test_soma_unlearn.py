"""Unlearning a model trained out of core on a TileDB-SOMA store (issue #30, item 1).

Real stores in temporary folders (``su.data.simulate_to_soma``), scvi-tools'
``TileDBDataModule``; skipped without the ``atlas`` extra (``pip install "scvi-unlearn[atlas]"``).
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch

soma = pytest.importorskip(
    "tiledbsoma", reason='tiledbsoma is not installed (pip install "scvi-unlearn[atlas]")'
)
pytest.importorskip("tiledbsoma_ml", reason="tiledbsoma-ml is not installed")

import scvi  # noqa: E402
from lightning.pytorch import LightningDataModule  # noqa: E402
from scvi.dataloaders import AnnDataLoader  # noqa: E402

import scvi_unlearn as su  # noqa: E402
from scvi_unlearn._seeding import isolated_seed  # noqa: E402
from scvi_unlearn.unlearn.core import _soma_source  # noqa: E402
from scvi_unlearn.unlearn.core._soma_source import retain_datamodule  # noqa: E402

FORGET_DONOR = "donor_3"
QUIET = {"enable_progress_bar": False, "accelerator": "cpu"}


def _datamodule(exp, train_size: float = 0.95) -> scvi.dataloaders.TileDBDataModule:
    return scvi.dataloaders.TileDBDataModule(
        exp.axis_query("RNA"),
        layer_name="counts",
        batch_size=128,
        shuffle=True,
        seed=0,
        batch_column_names=["donor"],
        train_size=train_size,
        split_seed=0,
    )


def _train(uri: str, max_epochs: int, train_size: float = 0.95):
    with soma.Experiment.open(uri) as exp:
        dm = _datamodule(exp, train_size)
        with isolated_seed(0), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = su.SCVI(adata=None, registry=dm.registry, n_latent=5, n_hidden=32)
            model.train(datamodule=dm, max_epochs=max_epochs, **QUIET)
    return model, dm


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _unlearn(model, forget, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short budgets warn (retain check)
        return model.unlearn(forget, **{**QUIET, **kwargs})


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """The user story's original: a 600-cell store, trained out of core, saved and loaded."""
    root = tmp_path_factory.mktemp("atlas")
    uri = su.data.simulate_to_soma(root / "atlas.soma", 600, 100, n_donors=6, n_batches=2)
    model, dm = _train(uri, max_epochs=10)
    model.save(root / "atlas_model")  # no datamodule needed
    loaded = su.SCVI.load(root / "atlas_model")
    forget = su.data.forget_donor(uri, FORGET_DONOR, members_only=False)  # obs ids
    return {"uri": uri, "model": model, "dm": dm, "loaded": loaded, "forget": forget}


def test_training_records_the_store_and_the_cells(atlas):
    model, dm, loaded = atlas["model"], atlas["dm"], atlas["loaded"]
    source = model.train_recipe_["datamodule"]
    json.dumps(model.train_recipe_)  # the recipe is JSON-serialisable (no arrays)
    assert source["source"] == "tiledbsoma" and source["uri"] == atlas["uri"]
    assert (source["measurement_name"], source["layer_name"]) == ("RNA", "counts")
    assert source["batch_column_names"] == ["donor"] and source["obs_id_column"] == "obs_id"
    assert source["train_size"] == 0.95 and source["split_seed"] == 0
    assert source["dataset_kwargs"] == {"batch_size": 128, "shuffle": True, "seed": 0}
    train, val = model.train_obs_joinids_, model.validation_obs_joinids_
    assert train.dtype == np.int64 and np.all(np.diff(train) > 0)
    assert np.array_equal(train, np.sort(dm.train_dataset.query_ids.obs_joinids))
    assert np.array_equal(val, np.sort(dm.val_dataset.query_ids.obs_joinids))
    assert np.array_equal(np.union1d(train, val), np.arange(600)) and val.size == 30
    assert (source["n_train"], source["n_validation"]) == (570, 30)
    assert model.train_obs_names_ is None
    # save / load without the datamodule keeps the weights and the record
    assert _same(_state(loaded), _state(model))
    assert loaded.train_recipe_ == model.train_recipe_
    assert np.array_equal(loaded.train_obs_joinids_, train)
    assert np.array_equal(loaded.validation_obs_joinids_, val)


def test_user_story(atlas, tmp_path):
    """Load, unlearn a donor by obs ids (fast_retrain, fit-matched), certify, save, load."""
    model, loaded, forget = atlas["model"], atlas["loaded"], atlas["forget"]
    before, recipe = _state(loaded), json.dumps(loaded.train_recipe_)
    new = _unlearn(loaded, forget)
    assert _same(_state(loaded), before) and json.dumps(loaded.train_recipe_) == recipe
    assert np.array_equal(loaded.train_obs_joinids_, model.train_obs_joinids_)

    with soma.Experiment.open(atlas["uri"]) as exp:
        obs = exp.obs.read(column_names=["soma_joinid", "obs_id"]).concat().to_pandas()
    forget_ids = np.sort(obs.loc[obs["obs_id"].isin(forget), "soma_joinid"].to_numpy())
    assert forget_ids.size == len(forget) > 50
    # retain cells keep their roles; no forget cell is recorded
    retain_train = np.setdiff1d(model.train_obs_joinids_, forget_ids)
    assert np.array_equal(new.train_obs_joinids_, retain_train)
    assert np.array_equal(
        new.validation_obs_joinids_, np.setdiff1d(model.validation_obs_joinids_, forget_ids)
    )
    record = new.unlearn_record_
    assert record["method"] == "fast_retrain" and record["n_forget"] == forget_ids.size
    assert record["forget_digest"]["identifiers"] == "obs['obs_id']"
    # the fit matching stopped the fast schedule before its budget (30 epochs)
    assert 0 < record["budget"]["epochs"] < 30
    checks = record["checks"]
    assert checks["retain_cells"].startswith("retain validation cells") and checks["independent"]
    # it fits the retain validation cells (unseen by both) at least about as well as the original
    assert checks["passed"] and checks["relative_drop"] < 0.02
    assert checks["retain_elbo_new"] >= 1.02 * checks["retain_elbo_original"]
    digest = record["retain_digest"]
    assert digest["counts_sha256"] is None and "not hashed" in digest["counts_not_hashed"]
    assert digest["store"]["uri"] == atlas["uri"]
    assert digest["n_cells"] == 600 - forget_ids.size
    registry = new.registry_["field_registries"]
    assert registry["X"]["summary_stats"]["n_cells"] == 600 - forget_ids.size
    assert registry["batch"]["summary_stats"]["n_batch"] == 6  # the donor's batch stays encoded

    certificate = json.loads(json.dumps(new.deletion_certificate()))
    assert certificate["retain_digest"]["counts_sha256"] is None
    checked = su.verify_certificate(new, certificate, forget=forget)
    assert checked["verified"] and checked["retain_digest"] and checked["forget_absent"]
    assert checked["retain_counts"] is None
    assert not su.verify_certificate(new, certificate, forget=forget[:-1])["verified"]

    new.save(tmp_path / "unlearned")
    back = su.SCVI.load(tmp_path / "unlearned")
    assert _same(_state(back), _state(new))
    assert su.verify_certificate(back, certificate, forget=forget)["verified"]
    assert back.train_recipe_["datamodule"]["n_train"] == new.train_obs_joinids_.size
    # the result can be unlearned again (a chain of two requests)
    again = _unlearn(back, new.train_obs_joinids_[:5].tolist(), match_fit=False, max_epochs=1)
    assert again.deletion_certificate()["chain"][0]["method"] == "fast_retrain"


def test_forget_by_joinids_or_obs_ids_is_the_same_request(atlas):
    model, forget = atlas["model"], atlas["forget"]
    with soma.Experiment.open(atlas["uri"]) as exp:
        joinids = su.data.forget_donor(exp, FORGET_DONOR, ids="soma_joinid", members_only=False)
    kw = {"match_fit": False, "max_epochs": 2}
    by_ids, by_joinids = _unlearn(model, forget, **kw), _unlearn(model, joinids, **kw)
    assert _same(_state(by_ids), _state(by_joinids))
    # the record counts the cells forgotten and digests their obs ids either way: the
    # requester verifies either certificate with the names
    assert by_ids.unlearn_record_["n_forget"] == by_joinids.unlearn_record_["n_forget"]
    assert by_joinids.unlearn_record_["n_forget"] == len(joinids)
    for new in (by_ids, by_joinids):
        certificate = new.deletion_certificate()
        assert su.verify_certificate(new, certificate, forget=forget)["forget_digest"]


@pytest.mark.parametrize(
    ("forget", "kwargs", "error", "match"),
    [
        (["cell_1", "no_such_cell"], {}, ValueError, r"not in the store's obs\['obs_id'\]"),
        ([5, 100_000], {}, ValueError, "were not used to train this model"),
        ([], {}, ValueError, "empty"),
        ("cell_1", {}, TypeError, "not one string"),
        ([1, "cell_2"], {}, TypeError, "integers"),
        ([1.5], {}, TypeError, "float"),
        (list(range(600)), {}, ValueError, "every training cell"),
        ([1, 2], {"method": "finetune"}, ValueError, "'fast_retrain' or 'retrain'"),
        ([1, 2], {"check_cells": "x"}, ValueError, "check_cells is not supported"),
    ],
)
def test_bad_input_is_refused_and_the_model_unchanged(atlas, forget, kwargs, error, match):
    model = atlas["model"]
    before, recipe = _state(model), json.dumps(model.train_recipe_)
    with pytest.raises(error, match=match):
        model.unlearn(forget, **kwargs)
    assert _same(_state(model), before) and json.dumps(model.train_recipe_) == recipe
    assert model.unlearn_record_ is None


def test_untrained_ids_can_be_skipped(atlas):
    kw = {"ignore_untrained": True, "match_fit": False, "max_epochs": 1}
    new = _unlearn(atlas["model"], [0, 100_000], **kw)
    assert new.unlearn_record_["n_forget"] == 1


def test_untrained_obs_ids_of_a_filtered_query_can_be_skipped(atlas):
    """A model trained on part of the store (a filtered query): obs ids of cells it never read
    are refused, or skipped with ``ignore_untrained``; the record counts and digests only the
    cells forgotten, so the requester verifies the certificate with those."""
    untrained_donor = "donor_5"
    with soma.Experiment.open(atlas["uri"]) as exp:
        query = exp.axis_query(
            "RNA", obs_query=soma.AxisQuery(value_filter=f"donor != '{untrained_donor}'")
        )
        dm = scvi.dataloaders.TileDBDataModule(
            query, layer_name="counts", batch_size=128, shuffle=True, seed=0,
            batch_column_names=["donor"], train_size=0.95, split_seed=0,
        )  # fmt: skip
        with isolated_seed(0), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = su.SCVI(adata=None, registry=dm.registry, n_latent=5, n_hidden=32)
            model.train(datamodule=dm, max_epochs=2, **QUIET)
    untrained = su.data.forget_donor(atlas["uri"], untrained_donor, members_only=False)
    forget = list(atlas["forget"])
    request = [*forget, *untrained[:3]]
    kw = {"match_fit": False, "max_epochs": 1}
    with pytest.raises(ValueError, match="were not used to train this model"):
        _unlearn(model, request, **kw)
    new = _unlearn(model, request, ignore_untrained=True, **kw)
    assert new.unlearn_record_["n_forget"] == len(forget)
    certificate = new.deletion_certificate()
    assert su.verify_certificate(new, certificate, forget=forget)["forget_digest"]
    assert not su.verify_certificate(new, certificate, forget=request)["forget_digest"]


def test_a_single_cell_last_minibatch_is_left_out(atlas):
    """Retain training cells that leave one cell over a minibatch (513 = 4 x 128 + 1): the
    stream stops after the full minibatches (BatchNorm cannot train on one cell)."""
    model = atlas["model"]
    forget = model.train_obs_joinids_[:57]  # 570 - 57 = 513 retain training cells
    new = _unlearn(model, forget.tolist(), match_fit=False, max_epochs=1)  # used to raise
    assert new.train_obs_joinids_.size == 513
    with soma.Experiment.open(atlas["uri"]) as exp:
        dm = retain_datamodule(
            exp, model.train_recipe_["datamodule"], model.registry_,
            new.train_obs_joinids_, new.validation_obs_joinids_, batch_size=128,
        )  # fmt: skip
        dm.setup()
        loader = dm.train_dataloader()
        sizes = [batch[0].shape[0] for batch in loader]  # (X, obs) before the transfer
    assert len(loader) == 4 and sizes == [128] * 4


def test_read_cells_reads_a_few_hundred_cells_at_a_time(atlas, monkeypatch):
    """The scored cells are read in slices (one read of 2,048 cells scattered over a 1M-cell
    store peaked at 4 GB): the same matrix whatever the slice."""
    model = atlas["model"]
    source, cells = model.train_recipe_["datamodule"], model.train_obs_joinids_[::9]
    with soma.Experiment.open(atlas["uri"]) as exp:
        whole = _soma_source.read_cells(exp, source, model.registry_, cells)
        monkeypatch.setattr(_soma_source, "READ_CELLS", 7)
        sliced = _soma_source.read_cells(exp, source, model.registry_, cells)
    assert whole.n_obs == cells.size > 7 and (whole.X != sliced.X).nnz == 0
    assert whole.X.nnz > 0 and whole.obs.equals(sliced.obs)


def test_fast_retrain_reads_at_most_retain_io_cells_a_read(atlas, monkeypatch):
    """A fast retrain's retain stream buffers at most RETAIN_IO_CELLS cells a read (the
    original's io_batch_size when smaller); a replaying retrain keeps the original's."""
    from scvi_unlearn.unlearn.core import _stream

    made = []

    def spy(*args, **kwargs):
        made.append(kwargs)
        return retain_datamodule(*args, **kwargs)

    monkeypatch.setattr(_stream, "retain_datamodule", spy)
    monkeypatch.setattr(_stream, "RETAIN_IO_CELLS", 64)
    model = atlas["model"]
    recorded = model.train_recipe_["datamodule"]["dataset_kwargs"].get("io_batch_size")
    _unlearn(model, atlas["forget"], match_fit=False, max_epochs=1)
    assert made[-1]["io_batch_size"] == 64
    _unlearn(model, atlas["forget"], method="retrain", max_epochs=1)
    assert "io_batch_size" not in made[-1] and recorded != 64


def test_retrain_replays_the_recipe_on_the_retain_stream(atlas):
    model = atlas["model"]
    new = _unlearn(model, atlas["forget"], method="retrain", max_epochs=2)
    assert len(new.history_["elbo_train"]) == 2
    assert new.train_recipe_["datamodule"]["source"] == "tiledbsoma"
    assert new.unlearn_record_["guarantee"]["exact"]


def _overwrite_counts(uri: str, rows: np.ndarray) -> None:
    """Change the stored counts of ``rows`` (every stored entry +1..+5) in place."""
    with soma.Experiment.open(uri) as exp:
        layer_uri = exp.ms["RNA"].X["counts"].uri
        table = exp.ms["RNA"].X["counts"].read(coords=(rows,)).tables().concat()
    rng = np.random.default_rng(1)
    data = table["soma_data"].to_numpy() + rng.integers(1, 6, table.num_rows).astype(np.float32)
    with soma.SparseNDArray.open(layer_uri, "w") as layer:
        layer.write(table.set_column(2, "soma_data", pa.array(data, type=pa.float32())))


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Two stores that differ only in the forget donor's counts, and an original on each."""
    root = tmp_path_factory.mktemp("twins")
    a = su.data.simulate_to_soma(root / "a.soma", 300, 60, n_donors=4, n_batches=2)
    b = str(root / "b.soma")
    shutil.copytree(a, b)
    with soma.Experiment.open(a) as exp:
        forget = su.data.forget_donor(exp, "donor_1", ids="soma_joinid", members_only=False)
    _overwrite_counts(b, forget)
    with soma.Experiment.open(a) as ea, soma.Experiment.open(b) as eb:
        xa, xb = (
            e.ms["RNA"].X["counts"].read().coos().concat().to_scipy().tocsr() for e in (ea, eb)
        )
    retain = np.setdiff1d(np.arange(300), forget)
    assert (xa[forget] != xb[forget]).nnz > 0 and (xa[retain] != xb[retain]).nnz == 0
    models = [_train(uri, max_epochs=3, train_size=0.8)[0] for uri in (a, b)]
    return models, forget


def test_stores_differing_in_the_forget_cells_give_identical_weights(twins, monkeypatch):
    """Exact: fixed stop, bit-identical weights; the request never reads a forget cell's
    counts (every X read of the real store is recorded)."""
    (a, b), forget = twins
    assert not _same(_state(a), _state(b))  # the forget cells' counts changed the originals
    read_rows: list[np.ndarray | None] = []
    original_read = soma.SparseNDArray.read

    def recording_read(self, coords=(), *args, **kwargs):
        read_rows.append(np.asarray(coords[0], dtype=np.int64) if len(coords) else None)
        return original_read(self, coords, *args, **kwargs)

    monkeypatch.setattr(soma.SparseNDArray, "read", recording_read)
    kw = {"match_fit": False, "max_epochs": 3, "seed": 0}
    new_a, new_b = _unlearn(a, forget, **kw), _unlearn(b, forget, **kw)
    assert _same(_state(new_a), _state(new_b))
    assert read_rows and all(rows is not None for rows in read_rows)  # never the whole layer
    touched = np.unique(np.concatenate(read_rows))
    assert not np.isin(forget, touched).any()
    assert np.isin(np.setdiff1d(np.arange(300), forget), touched).all()  # the retain stream
    # fit matching reads one number of the original: it may change only the stop step
    matched = _unlearn(a, forget, match_fit=True, max_epochs=10, seed=0)
    assert not np.isin(forget, np.concatenate(read_rows)).any()
    assert matched.unlearn_record_["checks"]["independent"]


class _AnnDataModule(LightningDataModule):
    """A custom (non-SOMA) datamodule, as AnnCollection / annbatch / lamin loaders are."""

    def __init__(self, manager, indices=None):
        super().__init__()
        self.manager = manager
        self.indices = np.arange(manager.adata.n_obs) if indices is None else indices

    n_obs = property(lambda self: int(self.indices.size))
    n_vars = property(lambda self: self.manager.summary_stats.n_vars)
    n_batch = property(lambda self: self.manager.summary_stats.n_batch)
    n_labels = property(lambda self: self.manager.summary_stats.n_labels)
    registry = property(lambda self: self.manager.registry)

    def train_dataloader(self):
        return AnnDataLoader(self.manager, indices=self.indices, shuffle=True, batch_size=64)


def test_a_custom_datamodule_model_is_unlearned_on_the_users_retain_stream():
    with isolated_seed(0):
        adata = scvi.data.synthetic_iid(batch_size=100, n_genes=40, n_batches=2)
    su.SCVI.setup_anndata(adata, batch_key="batch")
    manager = su.SCVI._get_most_recent_anndata_manager(adata, required=True)
    with isolated_seed(0):
        model = su.SCVI(adata=None, registry=manager.registry, n_latent=5, n_hidden=32)
        model.train(datamodule=_AnnDataModule(manager), max_epochs=2, **QUIET)
    forget = list(adata.obs_names[:20])
    with pytest.raises(ValueError, match=r"datamodule=retain_datamodule"):
        model.unlearn(forget)
    before = _state(model)
    retain = _AnnDataModule(manager, np.arange(20, adata.n_obs))
    with pytest.warns(UserWarning, match="no unseen fit to match"):
        new = model.unlearn(forget, datamodule=retain, max_epochs=2, **QUIET)
    assert _same(_state(model), before)
    record = new.unlearn_record_
    assert record["n_forget"] == 20 and record["checks"]["passed"] is None
    assert "not checked" in record["checks"]["skipped"]
    assert record["retain_digest"]["sha256"] is None and record["retain_digest"]["n_cells"] == 180
    checked = su.verify_certificate(new, new.deletion_certificate(), forget=forget)
    assert checked["verified"] and checked["forget_digest"] and checked["forget_absent"] is None
    with pytest.raises(ValueError, match="fast_retrain"):
        model.unlearn(forget, method="ssd", datamodule=retain)
    wrong = su.SCVI(adata=None, registry=manager.registry, n_latent=5)
    with pytest.raises(ValueError, match="not trained"):
        wrong.unlearn(forget, datamodule=retain)
