"""``unlearn()`` holds one copy of the retain cells' data, no more (issue #30, item 2).

scvi-tools registers no AnnData view (``AnnDataManager`` raises on one, ``_validate_anndata``
copies it), and the rows of a CSR matrix minus scattered forget rows cannot share the original's
buffers, so the new model's AnnData is a copy of the retain cells.  These tests keep it to one:
each matrix copied once (not subset and then copied again), and the certificate's digest of the
retain counts read in chunks (not a float64 copy of the whole matrix).
"""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import scvi_unlearn as su
from scvi_unlearn._seeding import isolated_seed
from scvi_unlearn.unlearn.core import _record
from scvi_unlearn.unlearn.core._record import counts_sha256
from scvi_unlearn.unlearn.core._task import _minimal_copy

QUIET = {"enable_progress_bar": False}


def _nbytes(m) -> int:
    if sp.issparse(m):
        return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    return np.asarray(m).nbytes


def _same(a, b) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    else:
        assert type(a) is type(b) and a.shape == b.shape
        a = a.toarray() if sp.issparse(a) else a
        b = b.toarray() if sp.issparse(b) else b
        np.testing.assert_array_equal(a, b)


def assert_equal(a: AnnData, b: AnnData) -> None:
    """Same cells, genes, annotations and data, element by element (uns keys only)."""
    _same(a.obs, b.obs)
    _same(a.var, b.var)
    _same(a.X, b.X)
    assert sorted(a.uns) == sorted(b.uns)
    for name in ("layers", "obsm", "obsp", "varm", "varp"):
        x, y = getattr(a, name), getattr(b, name)
        assert sorted(x) == sorted(y), name
        for key in x:
            _same(x[key], y[key])
    assert (a.raw is None) == (b.raw is None)
    if a.raw is not None:
        _same(a.raw.X, b.raw.X)
        _same(a.raw.var, b.raw.var)


def _one_shot_digest(adata: AnnData, names, layer: str | None) -> str:
    """The retain-counts digest as it was computed before chunking (the whole matrix at once)."""
    names = sorted(set(names))
    sub = adata[pd.Index(adata.obs_names).get_indexer(names)]
    x = sp.csr_matrix(sub.X if layer is None else sub.layers[layer], dtype=np.float64)
    x.sum_duplicates()
    x.eliminate_zeros()
    x.sort_indices()
    h = hashlib.sha256()
    for gene in np.asarray(adata.var_names, dtype=str):
        h.update(gene.encode() + b"\x00")
    h.update(np.asarray(x.shape, dtype=np.int64).tobytes())
    h.update(np.asarray(x.indptr, dtype=np.int64).tobytes())
    h.update(np.asarray(x.indices, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(x.data, dtype="<f8").tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def simulated_model():
    """A 1-epoch su.SCVI on 3,000 simulated cells x 2,000 genes (counts in a layer, X a
    separate copy of them), with 40 cells of the rarest type to forget."""
    adata = su.data.simulate(3000, 2000, random_state=0)
    su.SCVI.setup_anndata(adata, layer="counts", labels_key="cell_type")
    with isolated_seed(0):
        model = su.SCVI(adata, n_latent=5, n_hidden=32)
        model.train(max_epochs=1, **QUIET)
    rare = adata.obs["cell_type"].value_counts().index[-1]
    forget = adata.obs_names[adata.obs["cell_type"] == rare][:40].tolist()
    return model, forget


@pytest.mark.parametrize("kind", ["csr", "csc", "dense", "explicit_zeros", "float64"])
def test_chunked_counts_digest_equals_the_whole_matrix_digest(kind, monkeypatch):
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.7, (61, 13)).astype(np.float32)
    m = {
        "csr": sp.csr_matrix(counts),
        "csc": sp.csc_matrix(counts),
        "dense": counts,
        "float64": sp.csr_matrix(counts.astype(np.float64)),
    }.get(kind)
    if kind == "explicit_zeros":
        m = sp.csr_matrix(counts)
        m.data[::4] = 0.0
    adata = AnnData(
        X=np.zeros((61, 13), dtype=np.float32),
        layers={"counts": m},
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(61)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(13)]),
    )
    names = [f"cell{i}" for i in rng.choice(61, 40, replace=False)]
    monkeypatch.setattr(_record, "HASH_CHUNK_CELLS", 7)
    where = {"attr_name": "layers", "attr_key": "counts"}
    assert counts_sha256(adata, names, where) == _one_shot_digest(adata, names, "counts")
    changed = adata.copy()
    changed.layers["counts"] = sp.csr_matrix(counts)
    changed.layers["counts"][adata.obs_names.get_loc(names[0]), 0] += 1
    assert counts_sha256(changed, names, where) != counts_sha256(adata, names, where)


def test_minimal_copy_equals_anndata_subset_and_reads_only(pbmc):
    adata = pbmc.copy()
    adata.obsm["frame"] = pd.DataFrame({"u": np.arange(adata.n_obs)}, index=adata.obs_names)
    adata.uns["cells"] = list(adata.obs_names[:3])
    adata.obsp["knn"] = sp.random(adata.n_obs, adata.n_obs, density=0.01, format="csr", rng=0)
    adata.raw = adata
    before = adata.copy()
    idx = np.sort(np.random.default_rng(0).choice(adata.n_obs, 300, replace=False))
    sub = _minimal_copy(adata, idx)
    expected = adata[idx].copy()
    expected.uns = {}
    for key in expected.obs.columns:
        if hasattr(expected.obs[key], "cat"):
            expected.obs[key] = expected.obs[key].cat.remove_unused_categories()
    assert_equal(sub, expected)
    assert sub.raw is not None and sub.raw.n_obs == 300
    assert_equal(adata, before)
    # a copy, not a view: changing it does not reach the user's data
    sub.layers["counts"].data[:] = -1
    assert adata.layers["counts"].min() >= 0


def test_unlearn_holds_one_copy_of_the_retain_cells(simulated_model, monkeypatch):
    """Peak numpy memory of unlearn() (tracemalloc) at most the new model's AnnData plus a
    half of one matrix (minibatches): a second copy of a matrix, or a whole-matrix digest,
    breaks it."""
    model, forget = simulated_model
    monkeypatch.setattr(_record, "HASH_CHUNK_CELLS", 64)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        new = model.unlearn(forget, seed=0, match_fit=False, max_epochs=1, **QUIET)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    held = _nbytes(new.adata.X) + _nbytes(new.adata.layers["counts"])
    one_matrix = _nbytes(new.adata.layers["counts"])
    assert one_matrix > 2_000_000  # large enough to dominate the other allocations
    assert peak < held + one_matrix / 2, (peak / 1e6, held / 1e6)
    # the digest is the one the whole matrix gives
    names = new.adata.obs_names
    digest = new.unlearn_record_["retain_digest"]["counts_sha256"]
    assert digest == _one_shot_digest(new.adata, names, "counts")


def test_unlearn_leaves_the_user_adata_and_the_original_unchanged(simulated_model):
    model, forget = simulated_model
    adata = model.adata
    before = adata.copy()
    before_uns = dict(adata.uns)
    counts_buffer = adata.layers["counts"].data
    new = model.unlearn(forget, method="ssd", seed=0, on_degradation="warn")
    assert model.adata is adata and adata.layers["counts"].data is counts_buffer
    assert_equal(adata, before)
    assert dict(adata.uns) == before_uns
    assert new.adata.n_obs == adata.n_obs - len(forget)
    assert not set(forget) & set(new.adata.obs_names)
    assert not np.shares_memory(new.adata.layers["counts"].data, counts_buffer)
    assert new.train_indices.max() < new.adata.n_obs
