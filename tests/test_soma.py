"""su.data.simulate_to_soma / forget_donor: real TileDB-SOMA stores in temporary folders.

Skipped without the ``atlas`` extra (``pip install "scvi-unlearn[atlas]"``).
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

soma = pytest.importorskip(
    "tiledbsoma", reason='tiledbsoma is not installed (pip install "scvi-unlearn[atlas]")'
)

import scvi_unlearn as su  # noqa: E402
from scvi_unlearn._seeding import isolated_seed  # noqa: E402

SIM = dict(n_batches=3, random_state=4)
N_CELLS, N_GENES = 600, 150


def _read(uri: str, measurement: str = "RNA", layer: str = "counts"):
    """(counts CSR, obs DataFrame, var DataFrame, metadata dict) of a store."""
    with soma.Experiment.open(uri) as exp:
        ms = exp.ms[measurement]
        shape = (exp.obs.count, ms.var.count)
        table = ms.X[layer].read().tables().concat()
        counts = sp.csr_matrix(
            (
                table["soma_data"].to_numpy(),
                (table["soma_dim_0"].to_numpy(), table["soma_dim_1"].to_numpy()),
            ),
            shape=shape,
        )
        obs = exp.obs.read().concat().to_pandas().sort_values("soma_joinid")
        var = ms.var.read().concat().to_pandas().sort_values("soma_joinid")
        meta = json.loads(exp.metadata[su.data.SIMULATION_METADATA_KEY])
    return counts, obs.reset_index(drop=True), var.reset_index(drop=True), meta


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same simulation written with chunks of 7 and of 1,000 cells, and ``simulate``'s."""
    root = tmp_path_factory.mktemp("soma")
    kw = dict(n_donors=6, stratify="cell_type", **SIM)
    small = su.data.simulate_to_soma(root / "chunk7.soma", N_CELLS, N_GENES, chunk_size=7, **kw)
    large = su.data.simulate_to_soma(str(root / "chunk1000.soma"), N_CELLS, N_GENES, **kw)
    reference = su.data.simulate(N_CELLS, N_GENES, **SIM)
    return _read(small), _read(large), reference


def test_counts_obs_var_are_simulates(stores):
    (counts, obs, var, meta), _, adata = stores
    expected = adata.layers["counts"]
    assert counts.shape == expected.shape
    assert (counts != expected).nnz == 0
    assert counts.dtype == np.float32 and np.array_equal(counts.data, np.rint(counts.data))
    assert np.array_equal(obs["soma_joinid"], np.arange(N_CELLS))
    assert np.array_equal(obs["obs_id"], adata.obs_names)
    for column in ("cell_type", "batch"):
        assert obs[column].dtype == "category"
        assert np.array_equal(obs[column].astype(str), adata.obs[column].astype(str))
    assert np.array_equal(var["var_id"], adata.var_names)
    for column in ("source_gene", "scale", "simulated"):
        assert np.array_equal(var[column].to_numpy(), adata.var[column].to_numpy())
    assert meta["n_cells"] == N_CELLS and meta["n_donors"] == 6 and meta["random_state"] == 4


def test_chunk_size_does_not_change_the_store(stores):
    (c7, obs7, var7, meta7), (c1000, obs1000, var1000, meta1000), _ = stores
    assert (c7 != c1000).nnz == 0
    pd.testing.assert_frame_equal(obs7, obs1000)
    pd.testing.assert_frame_equal(var7, var1000)
    assert meta7 == meta1000


def test_donors_nested_in_batches_and_span_types(stores):
    (_, obs, _, _), _, _ = stores
    donors = obs["donor"]
    assert list(donors.cat.categories) == [f"donor_{d}" for d in range(6)]
    code = donors.cat.codes.to_numpy()
    batch = obs["batch"].cat.codes.to_numpy()
    assert np.array_equal(code % 3, batch)  # donor d is sequenced in batch d % n_batches
    sizes = np.bincount(code, minlength=6)
    assert sizes.min() >= 0.5 * N_CELLS / 6
    types_per_donor = obs.groupby("donor", observed=True)["cell_type"].nunique()
    assert types_per_donor.min() >= 5


def test_split_is_membership_splits(stores, tmp_path):
    (_, obs, _, _), _, adata = stores
    adata = adata.copy()
    adata.obs["donor"] = obs["donor"].to_numpy()
    expected = su.data.membership_split(
        adata, holdout=0.15, stratify="cell_type", seed=0, copy=True
    )
    assert list(obs["membership"].cat.categories) == [su.data.TRAIN, su.data.HOLDOUT]
    assert np.array_equal(obs["membership"].astype(str), expected.obs["membership"].astype(str))
    # by donor, unstratified with another seed, and none at all
    # by donor (12 donors: "donor_10" sorts before "donor_2"), and unstratified
    for stratify, seed in (("donor", 3), (None, 1)):
        uri = su.data.simulate_to_soma(
            tmp_path / f"{stratify}.soma",
            N_CELLS,
            N_GENES,
            n_donors=12,
            holdout=0.3,
            stratify=stratify,
            split_seed=seed,
            **SIM,
        )
        written = _read(uri)[1]
        adata.obs["donor"] = written["donor"].to_numpy()
        want = su.data.membership_split(adata, 0.3, stratify=stratify, seed=seed, copy=True)
        want = want.obs["membership"].astype(str)
        assert np.array_equal(written["membership"].astype(str), want)
    uri = su.data.simulate_to_soma(tmp_path / "nosplit.soma", 50, 20, holdout=None)
    assert "membership" not in _read(uri)[1]


def test_donors_do_not_change_the_counts_and_generator_input(tmp_path):
    a = su.data.simulate_to_soma(tmp_path / "a.soma", 300, 40, n_donors=2, random_state=9)
    b = su.data.simulate_to_soma(
        tmp_path / "b.soma", 300, 40, n_donors=9, random_state=np.random.default_rng(9)
    )
    assert (_read(a)[0] != _read(b)[0]).nnz == 0
    assert _read(a)[1]["donor"].cat.categories.size == 2
    many = _read(su.data.simulate_to_soma(tmp_path / "c.soma", 300, 40, n_donors=200))[1]
    assert list(many["donor"].cat.categories) == [f"donor_{d}" for d in range(200)]
    assert many["donor"].nunique() > 100  # int32 category codes past 127 donors


def test_more_genes_than_one_tile(tmp_path):
    """Over 2,048 genes the writer orders each chunk by column tile itself."""
    uri = su.data.simulate_to_soma(
        tmp_path / "wide.soma", 40, 2100, chunk_size=7, measurement_name="genes", layer_name="X0"
    )
    counts = _read(uri, measurement="genes", layer="X0")[0]
    assert (counts != su.data.simulate(40, 2100).layers["counts"]).nnz == 0


def test_forget_donor(stores, tmp_path):
    _, _, adata = stores
    uri = su.data.simulate_to_soma(tmp_path / "f.soma", N_CELLS, N_GENES, n_donors=6, **SIM)
    obs = _read(uri)[1]
    members = obs["membership"].astype(str) == su.data.TRAIN
    of_donor = obs["donor"].astype(str) == "donor_4"
    ids = su.data.forget_donor(uri, "donor_4")
    assert ids.dtype.kind == "U"
    assert np.array_equal(ids, obs.loc[of_donor & members, "obs_id"])
    with soma.Experiment.open(str(uri)) as exp:
        joinids = su.data.forget_donor(exp, ["donor_4", "donor_1"], ids="soma_joinid")
    wanted = obs["donor"].astype(str).isin(["donor_4", "donor_1"]) & members
    assert joinids.dtype == np.int64 and np.array_equal(joinids, np.flatnonzero(wanted))
    everyone = su.data.forget_donor(uri, "donor_4", members_only=False)
    assert np.array_equal(everyone, obs.loc[of_donor, "obs_id"])
    # the same on an AnnData carrying the columns
    adata = adata.copy()
    adata.obs["donor"] = obs["donor"].to_numpy()
    adata.obs["membership"] = obs["membership"].to_numpy()
    assert np.array_equal(su.data.forget_donor(adata, "donor_4"), ids)


def test_forget_donor_errors(stores, tmp_path):
    _, _, adata = stores
    uri = su.data.simulate_to_soma(tmp_path / "e.soma", 60, 20, n_donors=3)
    with pytest.raises(ValueError, match="Unknown donor"):
        su.data.forget_donor(uri, "donor_9")
    with pytest.raises(ValueError, match="No donor given"):
        su.data.forget_donor(uri, [])
    with pytest.raises(KeyError, match="not in the experiment's obs"):
        su.data.forget_donor(uri, "donor_0", key="patient")
    with pytest.raises(ValueError, match="ids must be one of"):
        su.data.forget_donor(uri, "donor_0", ids="index")
    with pytest.raises(ValueError, match="needs a SOMA experiment"):
        su.data.forget_donor(adata, "donor_0", ids="soma_joinid")
    with pytest.raises(ValueError, match="data must be a SOMA experiment"):
        su.data.forget_donor(42, "donor_0")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(n_cells=0), ValueError, "n_cells must be >= 1"),
        (dict(n_genes=-3), ValueError, "n_genes must be >= 1"),
        (dict(n_cells=2.5), ValueError, "n_cells must be an integer"),
        (dict(chunk_size=0), ValueError, "chunk_size must be >= 1"),
        (dict(n_donors=0), ValueError, "n_donors must be >= 1"),
        (dict(n_batches=4, n_donors=3), ValueError, r"n_donors \(3\) must be >= n_batches"),
        (dict(holdout=1.5), ValueError, "holdout must be a fraction"),
        (dict(holdout="0.2"), ValueError, "holdout must be a fraction"),
        (dict(split_seed=-1), ValueError, "split_seed must be >= 0"),
        (dict(stratify="membership"), ValueError, "stratify must be"),
        (dict(measurement_name="a/b"), ValueError, "measurement_name must be"),
        (dict(layer_name=""), ValueError, "layer_name must be"),
        (dict(random_state=-1), ValueError, "random_state must be >= 0"),
        (dict(uri=3), ValueError, "uri must be a path"),
    ],
)
def test_bad_input(tmp_path, kwargs, error, match):
    args = dict(uri=tmp_path / "bad.soma", n_cells=50, n_genes=20) | kwargs
    with pytest.raises(error, match=match):
        su.data.simulate_to_soma(**args)
    assert not (tmp_path / "bad.soma").exists()  # nothing left behind


def test_existing_uri_is_refused_and_left_alone(tmp_path):
    uri = su.data.simulate_to_soma(tmp_path / "x.soma", 30, 10)
    before = _read(uri)
    with pytest.raises(FileExistsError, match="already exists"):
        su.data.simulate_to_soma(uri, 50, 10, random_state=1)
    after = _read(uri)
    assert (before[0] != after[0]).nnz == 0 and before[1].equals(after[1])
    (tmp_path / "file.txt").write_text("not a store")
    with pytest.raises(FileExistsError):
        su.data.simulate_to_soma(tmp_path / "file.txt", 30, 10)
    assert (tmp_path / "file.txt").read_text() == "not a store"


def test_write_memory_is_bounded_by_the_chunk(tmp_path):
    """Memory (numpy allocations, traced) is the same at 10k and 50k cells, far below dense.

    50,000 x 500 with chunks of 5,000: the dense float64 matrix ``simulate`` draws from would be
    191 MB; the write peaks at ~70 MB (simulate's 2M-entry generation block and one chunk).
    """
    su.data.simulate(10, 10)  # the calibration, cached, outside the measurement
    peaks = {}
    for n in (10_000, 50_000):
        tracemalloc.start()
        su.data.simulate_to_soma(tmp_path / f"m{n}.soma", n, 500, chunk_size=5000)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    dense = 50_000 * 500 * 8
    assert peaks[50_000] < 0.5 * dense, peaks
    assert peaks[50_000] < 1.2 * peaks[10_000], peaks  # does not grow with the cells
    assert _read(str(tmp_path / "m50000.soma"))[0].shape == (50_000, 500)


def test_tiledb_datamodule_trains_scvi(tmp_path):
    """The store feeds scvi-tools' out-of-core TileDBDataModule: su.SCVI trains one epoch."""
    scvi = pytest.importorskip("scvi")
    pytest.importorskip("tiledbsoma_ml", reason="tiledbsoma-ml is not installed")
    uri = su.data.simulate_to_soma(tmp_path / "train.soma", 500, 100, n_donors=4, n_batches=2)
    with soma.Experiment.open(uri) as exp:
        dm = scvi.dataloaders.TileDBDataModule(
            exp.axis_query("RNA"),
            layer_name="counts",
            batch_size=128,
            shuffle=True,
            batch_column_names=["donor"],
            train_size=0.9,
            split_seed=0,
        )
        assert dm.registry["field_registries"]["X"]["summary_stats"]["n_vars"] == 100
        assert dm.registry["field_registries"]["batch"]["summary_stats"]["n_batch"] == 4
        with isolated_seed(0):
            model = su.SCVI(adata=None, registry=dm.registry, n_latent=5)
            model.train(datamodule=dm, max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    elbo = model.history["elbo_train"]
    assert len(elbo) == 1 and np.isfinite(elbo.to_numpy(dtype=float)).all()
    assert model.is_trained


@pytest.mark.parametrize("chunk_size", [7, 50, 120, 1000])
def test_chunks_across_generation_blocks(tmp_path, monkeypatch, chunk_size):
    """Chunks smaller than, equal to and spanning several of simulate's blocks (50 rows here)."""
    from scvi_unlearn.data import _simulate

    monkeypatch.setattr(_simulate, "_CHUNK_ENTRIES", 50 * 30)
    uri = su.data.simulate_to_soma(tmp_path / "b.soma", 333, 30, chunk_size=chunk_size)
    expected = su.data.simulate(333, 30).layers["counts"]
    assert (_read(uri)[0] != expected).nnz == 0
