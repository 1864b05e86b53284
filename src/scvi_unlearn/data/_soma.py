"""Simulated atlases on disk: :func:`simulate`'s cells written in chunks to a TileDB-SOMA store.

Needs the ``atlas`` extra (``pip install "scvi-unlearn[atlas]"``: ``tiledbsoma``,
``tiledbsoma-ml``); ``tiledbsoma`` is imported inside the functions, so the package imports
without it.
"""

from __future__ import annotations

import json
import numbers
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scvi_unlearn.data._membership import HOLDOUT, SPLIT_KEY, TRAIN, _heldout_mask
from scvi_unlearn.data._simulate import _cell_names, _check_int, _count_blocks, _plan

#: ``obs`` column of the donors written by :func:`simulate_to_soma`
DONOR_KEY = "donor"
#: ``experiment.metadata`` key holding :func:`simulate_to_soma`'s arguments (JSON)
SIMULATION_METADATA_KEY = "scvi_unlearn.simulation"
#: space tile extent of both X dimensions (tiledbsoma's default, set explicitly): the writer
#: orders each chunk's entries by tile itself, much faster than tiledbsoma's sort
_TILE = 2048


def _import_soma():
    try:
        import tiledbsoma
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "Writing or reading TileDB-SOMA stores needs the optional 'atlas' dependencies: "
            'pip install "scvi-unlearn[atlas]" (tiledbsoma, tiledbsoma-ml).'
        ) from err
    return tiledbsoma


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _check_name(name: str, value) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"{name} must be a non-empty string without '/', got {value!r}.")
    return value


def _dictionary(codes: np.ndarray, categories: Sequence[str]):
    """An Arrow dictionary (categorical) column; SOMA stores it as a TileDB enumeration."""
    import pyarrow as pa

    index_type = pa.int8() if len(categories) <= np.iinfo(np.int8).max else pa.int32()
    return pa.DictionaryArray.from_arrays(
        pa.array(codes, type=index_type), pa.array(list(categories), type=pa.large_string())
    )


def _link(parent, key: str, cls, uri: str) -> None:
    with cls.open(uri) as child:
        parent.set(key, child, use_relative_uri=True)


def _obs_table(plan, donor, heldout, donor_names, start: int, stop: int):
    import pyarrow as pa

    rows = slice(start, stop)
    columns = {
        "soma_joinid": pa.array(np.arange(start, stop, dtype=np.int64)),
        "obs_id": pa.array(_cell_names(start, stop), type=pa.large_string()),
        "cell_type": _dictionary(plan.cell_type[rows], list(plan.cell_types)),
        "batch": _dictionary(plan.batch[rows], plan.batch_names),
        DONOR_KEY: _dictionary(donor[rows], donor_names),
    }
    if heldout is not None:
        columns[SPLIT_KEY] = _dictionary(heldout[rows].astype(np.int8), [TRAIN, HOLDOUT])
    return pa.table(columns)


def _var_table(var: pd.DataFrame):
    import pyarrow as pa

    return pa.table(
        {
            "soma_joinid": pa.array(np.arange(len(var), dtype=np.int64)),
            "var_id": pa.array(var.index.to_numpy(dtype=str), type=pa.large_string()),
            "source_gene": pa.array(var["source_gene"].to_numpy(str), type=pa.large_string()),
            "scale": pa.array(var["scale"].to_numpy(np.float64)),
            "simulated": pa.array(var["simulated"].to_numpy(bool)),
        }
    )


def _coo_table(block: sp.csr_matrix, first_row: int):
    """The block's entries as SOMA COO columns, in the array's global (tile) order."""
    import pyarrow as pa

    coo = block.tocoo()
    rows = coo.row.astype(np.int64) + first_row
    cols = coo.col.astype(np.int64)
    data = coo.data.astype(np.float32, copy=False)
    if block.shape[1] > _TILE:  # several column tiles: group the row-major entries by tile
        tile = (rows // _TILE) * (-(-block.shape[1] // _TILE)) + cols // _TILE
        order = np.argsort(tile, kind="stable")
        rows, cols, data = rows[order], cols[order], data[order]
    return pa.table(
        {
            "soma_dim_0": pa.array(rows),
            "soma_dim_1": pa.array(cols),
            "soma_data": pa.array(data),
        }
    )


def _sorted_rank(codes: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Codes renumbered in the sorted order of their names (as ``pd.Categorical`` of the
    names would number them), so that the split visits the strata in membership_split's order."""
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(np.asarray(names, dtype=str), kind="stable")] = np.arange(len(names))
    return rank[codes]


def _draw_donors(rng: np.random.Generator, batch: np.ndarray, n_batches: int, n_donors: int):
    """Donor ``d`` belongs to batch ``d % n_batches``; a cell's donor is uniform among its
    batch's donors."""
    per_batch = (n_donors - np.arange(n_batches) + n_batches - 1) // n_batches
    return batch + n_batches * rng.integers(0, per_batch[batch])


def simulate_to_soma(
    uri: str | os.PathLike,
    n_cells: int,
    n_genes: int = 2000,
    *,
    n_batches: int = 1,
    rare_fraction: float | None = None,
    random_state: int | np.random.Generator | None = 0,
    batch_effect: float = 0.25,
    n_donors: int = 10,
    holdout: float | None = 0.15,
    stratify: str | None = None,
    split_seed: int = 0,
    chunk_size: int = 10_000,
    measurement_name: str = "RNA",
    layer_name: str = "counts",
) -> str:
    """Write :func:`~scvi_unlearn.data.simulate`'s cells to a new TileDB-SOMA experiment.

    The count matrix is never held in memory: cells are drawn in :func:`simulate`'s own row
    blocks (about 2M matrix entries each, 1,000 cells at 2,000 genes) and written to disk every
    ``chunk_size`` cells, so the memory of a write grows with ``chunk_size x n_genes`` and
    not with ``n_cells`` (only a few per-cell vectors, about 40 bytes a cell, are kept).

    **Same cells as** :func:`simulate`.  With the same ``n_cells``, ``n_genes``, ``n_batches``,
    ``rare_fraction``, ``random_state`` and ``batch_effect``, the counts, cell types, batches,
    genes and cell names (``obs_id``) are exactly those of :func:`simulate` (the same random
    stream, consumed in the same order); ``chunk_size`` changes only how the writes are cut.

    **Donors** (``obs["donor"]``, ``"donor_0"`` ...) are drawn afterwards from the same
    generator (so the counts do not depend on ``n_donors``): donor ``d`` belongs to batch
    ``d % n_batches`` (a donor is sequenced in one batch), and each cell's donor is uniform
    among its batch's donors.  Donors are independent of cell types, so every donor holds
    cells of all common types (about ``n_cells / n_donors`` cells each); they carry no
    expression effect of their own beyond their batch's.

    **Membership split** (``obs["membership"]``, ``"train"`` / ``"heldout"``): exactly what
    :func:`~scvi_unlearn.data.membership_split` ``(adata, holdout, stratify, split_seed)``
    writes on the same cells; it needs only the labels, not the counts.

    Parameters
    ----------
    uri
        Where to create the experiment (a local folder or a TileDB URI); must not exist.
    n_cells, n_genes, n_batches, rare_fraction, random_state, batch_effect
        As in :func:`simulate` (``random_state``: seed, consumed Generator, or ``None``).
    n_donors
        Number of donors (``>= n_batches``, every batch needs one).
    holdout
        Fraction of held-out cells in ``(0, 1)``; ``None`` writes no membership column.
    stratify
        ``None``, ``"cell_type"``, ``"batch"`` or ``"donor"``: split within each category.
    split_seed
        Seed of the membership split (``membership_split``'s ``seed``).
    chunk_size
        Cells per write (one TileDB fragment each; >= 1).  Memory grows with it: about 30
        bytes per non-zero entry of a chunk, plus :func:`simulate`'s generation block
        (~70 MB); measured: ~570 MB above the imports at 10,000 cells x 2,000 genes.
    measurement_name
        SOMA measurement holding the genes (``exp.ms[measurement_name]``).
    layer_name
        X layer of the counts (float32 holding integers), the ``layer_name`` to give
        :class:`scvi.dataloaders.TileDBDataModule`.

    Returns
    -------
    The experiment's URI (``str(uri)``).  ``obs``: ``soma_joinid`` (the row), ``obs_id``,
    ``cell_type``, ``batch``, ``donor``, ``membership`` (all categorical but the ids);
    ``ms[measurement_name].var``: ``var_id`` (gene names), ``source_gene``, ``scale``,
    ``simulated``; ``experiment.metadata["scvi_unlearn.simulation"]``: the arguments (JSON).

    Raises
    ------
    ValueError
        An argument out of range or of the wrong type.
    FileExistsError
        Something already exists at ``uri``.
    ImportError
        ``tiledbsoma`` is not installed (the ``atlas`` extra).

    Examples
    --------
    >>> import scvi, tiledbsoma, scvi_unlearn as su
    >>> uri = su.data.simulate_to_soma("atlas.soma", 1_000_000, 2000, n_donors=200)
    >>> exp = tiledbsoma.Experiment.open(uri)
    >>> dm = scvi.dataloaders.TileDBDataModule(
    ...     exp.axis_query("RNA"), layer_name="counts", batch_size=128,
    ...     batch_column_names=["donor"], train_size=0.9, split_seed=0)
    >>> model = su.SCVI(adata=None, registry=dm.registry)
    """
    soma = _import_soma()
    import pyarrow as pa

    if not isinstance(uri, str | os.PathLike):
        raise ValueError(f"uri must be a path or a URI string, got {uri!r}.")
    uri = os.fspath(uri)
    n_donors = _check_int("n_donors", n_donors, 1)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    measurement_name = _check_name("measurement_name", measurement_name)
    layer_name = _check_name("layer_name", layer_name)
    if stratify not in (None, "cell_type", "batch", DONOR_KEY):
        raise ValueError(
            f"stratify must be None, 'cell_type', 'batch' or 'donor', got {stratify!r}."
        )
    if holdout is not None and (
        isinstance(holdout, bool) or not isinstance(holdout, numbers.Real) or not 0 < holdout < 1
    ):
        raise ValueError(f"holdout must be a fraction in (0, 1) or None, got {holdout!r}.")
    split_seed = _check_int("split_seed", split_seed, 0)
    if _is_local(uri) and os.path.lexists(_local_path(uri)):
        raise FileExistsError(f"{uri!r} already exists: simulate_to_soma writes a new store.")
    if not _is_local(uri) and soma.Experiment.exists(uri):
        raise FileExistsError(f"A SOMA experiment already exists at {uri!r}.")
    plan = _plan(n_cells, n_genes, n_batches, rare_fraction, random_state, batch_effect)
    n_cells, n_genes = plan.cell_type.size, plan.profiles.shape[1]
    n_batches = len(plan.batch_names)
    if n_donors < n_batches:
        raise ValueError(
            f"n_donors ({n_donors}) must be >= n_batches ({n_batches}): each donor belongs "
            "to one batch and every batch needs a donor."
        )
    created = False
    try:
        with soma.Experiment.create(uri) as exp:
            created = True
            ms = exp.add_new_collection("ms")
            measurement = ms.add_new_collection(measurement_name, soma.Measurement)
            x = measurement.add_new_collection("X")
            layer_uri = f"{x.uri.rstrip('/')}/{layer_name}"
            tiles = {"soma_dim_0": {"tile": _TILE}, "soma_dim_1": {"tile": _TILE}}
            with soma.SparseNDArray.create(
                layer_uri,
                type=pa.float32(),
                shape=(n_cells, n_genes),
                platform_config={"tiledb": {"create": {"dims": tiles}}},
            ) as layer:
                _write_counts(layer, plan, chunk_size, soma.TileDBWriteOptions(sort_coords=False))
            _link(x, layer_name, soma.SparseNDArray, layer_uri)

            donor = _draw_donors(plan.rng, plan.batch, n_batches, n_donors)
            donor_names = [f"donor_{d}" for d in range(n_donors)]
            heldout = None
            if holdout is not None:
                strata = {
                    "cell_type": (plan.cell_type, list(plan.cell_types)),
                    "batch": (plan.batch, plan.batch_names),
                    DONOR_KEY: (donor, donor_names),
                }.get(stratify)
                strata = None if strata is None else _sorted_rank(*strata)
                heldout = _heldout_mask(n_cells, strata, float(holdout), split_seed)

            obs_uri = f"{exp.uri.rstrip('/')}/obs"
            schema = _obs_table(plan, donor, heldout, donor_names, 0, 0).schema
            with soma.DataFrame.create(obs_uri, schema=schema, domain=[(0, n_cells - 1)]) as obs:
                for start in range(0, n_cells, chunk_size):
                    stop = min(start + chunk_size, n_cells)
                    obs.write(_obs_table(plan, donor, heldout, donor_names, start, stop))
            _link(exp, "obs", soma.DataFrame, obs_uri)

            var_uri = f"{measurement.uri.rstrip('/')}/var"
            table = _var_table(plan.var)
            with soma.DataFrame.create(
                var_uri, schema=table.schema, domain=[(0, n_genes - 1)]
            ) as var:
                var.write(table)
            _link(measurement, "var", soma.DataFrame, var_uri)

            record = dict(plan.record)
            record.update(
                n_donors=n_donors,
                holdout=None if holdout is None else float(holdout),
                stratify=stratify,
                split_seed=split_seed,
                measurement_name=measurement_name,
                layer_name=layer_name,
            )
            exp.metadata[SIMULATION_METADATA_KEY] = json.dumps(record)
    except BaseException:
        if created and _is_local(uri):
            shutil.rmtree(_local_path(uri), ignore_errors=True)
        raise
    return uri


def _write_counts(layer, plan, chunk_size: int, options) -> None:
    """Write :func:`simulate`'s count blocks, re-cut into writes of ``chunk_size`` rows."""
    pending: list[sp.csr_matrix] = []
    pending_rows, written = 0, 0
    for _, block in _count_blocks(plan):
        pending.append(block)
        pending_rows += block.shape[0]
        if pending_rows < chunk_size:
            continue
        rows = sp.vstack(pending, format="csr") if len(pending) > 1 else pending[0]
        start = 0
        while rows.shape[0] - start >= chunk_size:
            piece = rows[start : start + chunk_size]
            layer.write(_coo_table(piece, written), platform_config=options)
            start += chunk_size
            written += chunk_size
        pending = [rows[start:]] if start < rows.shape[0] else []
        pending_rows = rows.shape[0] - start
        del rows
    if pending_rows:
        rows = sp.vstack(pending, format="csr") if len(pending) > 1 else pending[0]
        layer.write(_coo_table(rows, written), platform_config=options)
