"""A model trained out of core on a TileDB-SOMA store: what is recorded, and how it is read back.

scvi-tools' :class:`scvi.dataloaders.TileDBDataModule` streams an ``ExperimentAxisQuery`` of a
SOMA experiment through ``tiledbsoma_ml``; at ``setup`` it splits the query's cells into
training and validation cells with ``random_split(train_size, 1 - train_size,
seed=split_seed)``.  :meth:`scvi_unlearn.SCVI.train` records such a source with
:func:`describe_source` (a JSON-serialisable description: store, measurement, layer, queries,
the datamodule's arguments) and the ``soma_joinid`` of the cells of each split
(:func:`split_joinids`); ``unlearn`` reads it back here: :func:`resolve_forget` turns
``soma_joinid`` or ``obs`` ids into joinids, :class:`RetainTileDBDataModule` streams the retain
cells in their original roles (no other cell is read), and :func:`read_cells` reads a few cells'
counts into a small in-memory AnnData (the fit-matching and retain-check cells).

``tiledbsoma`` is imported inside the functions (the ``atlas`` extra); this module imports
without it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scvi.dataloaders import TileDBDataModule

from scvi_unlearn.unlearn.core._forget_cells import forget_values, preview

#: ``obs`` column of cell names looked up first (tiledbsoma.io.from_anndata's default, and what
#: :func:`scvi_unlearn.data.simulate_to_soma` writes)
OBS_ID_COLUMN = "obs_id"
#: description key that marks a recorded SOMA source
SOURCE_KIND = "tiledbsoma"
#: datamodule arguments that are recorded when present (all JSON-serialisable)
_DM_FIELDS = (
    "batch_column_names",
    "label_keys",
    "unlabeled_category",
    "sample_key",
    "train_size",
    "split_seed",
    "model_name",
)
#: covariates the retain stream and the in-memory scoring cells do not rebuild (yet)
_UNSUPPORTED = (
    "label_keys",
    "sample_key",
    "categorical_covariate_keys",
    "continuous_covariate_keys",
)
#: most ids in one ``obs_id in [...]`` filter
_FILTER_CHUNK = 1000


def _import_soma():
    from scvi_unlearn.data._soma import _import_soma as importer

    return importer()


def is_soma_datamodule(datamodule) -> bool:
    """Whether ``datamodule`` is scvi-tools' :class:`~scvi.dataloaders.TileDBDataModule` (or a
    subclass, e.g. :class:`RetainTileDBDataModule`)."""
    return isinstance(datamodule, TileDBDataModule)


def is_soma_source(description) -> bool:
    """Whether a recipe's ``datamodule`` entry is a recorded SOMA source."""
    return isinstance(description, dict) and description.get("source") == SOURCE_KIND


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | list | tuple | pd.Index):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def _axis(axis_query) -> dict[str, Any]:
    coords = getattr(axis_query, "coords", ()) or ()
    return {
        "value_filter": getattr(axis_query, "value_filter", None),
        "coords": "given" if len(coords) else None,
    }


def split_joinids(datamodule) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``soma_joinid`` of the training and validation cells a (set-up)
    :class:`~scvi.dataloaders.TileDBDataModule` served: its ``tiledbsoma_ml`` datasets' ids."""
    val = getattr(datamodule, "val_dataset", None)
    train = np.sort(np.asarray(datamodule.train_dataset.query_ids.obs_joinids, dtype=np.int64))
    val = (
        np.asarray([], dtype=np.int64)
        if val is None
        else np.sort(np.asarray(val.query_ids.obs_joinids, dtype=np.int64))
    )
    return train, val


def describe_source(datamodule) -> dict[str, Any]:
    """A JSON-serialisable description of a :class:`~scvi.dataloaders.TileDBDataModule`'s
    source, after training: the experiment's URI and read timestamp, measurement, ``X`` layer,
    the query's ``obs`` / ``var`` filters, the ``obs`` id column, the batch labels (in the
    original's encoding), the datamodule's and its dataset's arguments, and the numbers of
    training, validation and gene cells (the cells' joinids are kept apart,
    :func:`split_joinids`)."""
    locator = datamodule.train_dataset.x_locator
    query = datamodule.query
    matrix = getattr(query, "_matrix_axis_query", None)
    schema = query.experiment.obs.schema.names
    train, val = split_joinids(datamodule)
    kwargs = dict(datamodule.dataset_kwargs)
    kwargs.pop("layer_name", None)
    description = {
        "source": SOURCE_KIND,
        "class": type(datamodule).__name__,
        "uri": str(locator.uri),
        "measurement_name": str(locator.measurement_name),
        "layer_name": str(locator.layer_name),
        "tiledb_timestamp_ms": int(locator.tiledb_timestamp_ms),
        "obs_query": _axis(getattr(matrix, "obs", None)),
        "var_query": _axis(getattr(matrix, "var", None)),
        "obs_id_column": OBS_ID_COLUMN if OBS_ID_COLUMN in schema else None,
        "batch_labels": [str(b) for b in datamodule.batch_labels],
        "dataset_kwargs": _plain(kwargs),
        "dataloader_kwargs": _plain(datamodule.dataloader_kwargs),
        "n_train": int(train.size),
        "n_validation": int(val.size),
        "n_vars": int(datamodule.n_vars),
    }
    for name in _DM_FIELDS:
        description[name] = _plain(getattr(datamodule, name, None))
    for name in ("categorical_covariate_keys", "continuous_covariate_keys"):
        description[name] = _plain(getattr(datamodule, f"_{name}", None))
    return description


def check_supported(description: dict[str, Any]) -> None:
    """A clear error for a recorded source whose covariates the retain stream cannot rebuild."""
    used = [k for k in _UNSUPPORTED if description.get(k)]
    if used:
        raise ValueError(
            f"Unlearning a SOMA-trained model streams the retain cells with the original's "
            f"batch columns; this model also used {', '.join(used)}, which are not "
            "supported yet. Pass your own retain stream: unlearn(forget, datamodule=...)."
        )


def open_experiment(description: dict[str, Any]):
    """The recorded experiment, opened for reading at the recorded timestamp (the data the
    original read)."""
    soma = _import_soma()
    return soma.Experiment.open(
        description["uri"], tiledb_timestamp=description.get("tiledb_timestamp_ms")
    )


def resolve_forget(experiment, description: dict[str, Any], forget) -> np.ndarray:
    """The forget cells as sorted unique ``soma_joinid``: given as integers, or as ``obs`` ids
    (strings) looked up in the recorded ``obs_id_column``.

    Raises
    ------
    TypeError
        For a single string, a mix of integers and strings, or anything else.
    ValueError
        For an empty forget set, negative joinids, or ids not in the store (named).
    """
    values = forget_values(forget, "a sequence of soma_joinids or obs ids")
    if values.size == 0:
        raise ValueError("The forget set is empty: nothing to unlearn.")
    is_int = np.fromiter(
        (isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values), bool
    )
    is_str = np.fromiter((isinstance(v, str) for v in values), bool)
    if is_int.all():
        joinids = np.unique(values.astype(np.int64))
        if joinids[0] < 0:
            raise ValueError(f"soma_joinids are >= 0; got {joinids[0]}.")
        return joinids
    if not is_str.all():
        bad = values[~(is_int | is_str)][:1]
        what = f"{type(bad[0]).__name__} {bad[0]!r}" if bad.size else "integers and strings"
        raise TypeError(
            f"forget must hold soma_joinids (integers) or obs ids (strings), got {what}."
        )
    column = description.get("obs_id_column")
    if not column:
        raise ValueError(
            "The store's obs has no 'obs_id' column, so cells cannot be named: pass their "
            "soma_joinids (integers), or set model.train_recipe_['datamodule']"
            "['obs_id_column'] to the obs column holding the cell names."
        )
    names = pd.unique(values.astype(str))
    found = lookup_ids(experiment, column, names)
    missing = pd.Index(names).difference(found[column].astype(str))
    if missing.size:
        raise ValueError(
            f"{missing.size} of the {names.size} forget ids are not in the store's "
            f"obs[{column!r}]: {preview(missing)}."
        )
    return np.unique(found["soma_joinid"].to_numpy(np.int64))


def lookup_ids(experiment, column: str, names) -> pd.DataFrame:
    """``soma_joinid`` and ``column`` of the cells whose ``obs[column]`` is in ``names`` (a
    filtered read of two ``obs`` columns, :data:`_FILTER_CHUNK` names a query)."""
    names = [str(n) for n in names]
    found = [pd.DataFrame({"soma_joinid": np.asarray([], dtype=np.int64), column: []})]
    for start in range(0, len(names), _FILTER_CHUNK):
        chunk = names[start : start + _FILTER_CHUNK]
        table = experiment.obs.read(
            value_filter=f"{column} in {chunk!r}", column_names=["soma_joinid", column]
        )
        found.append(table.concat().to_pandas())
    return pd.concat(found, ignore_index=True)


def var_joinids(registry: dict) -> np.ndarray:
    """The genes the original read, from its registry (scvi-tools records the query's
    ``var`` joinids as the ``X`` field's column names)."""
    names = registry["field_registries"]["X"]["state_registry"]["column_names"]
    return np.asarray([int(n) for n in names], dtype=np.int64)


def _encoded_obs(obs: pd.DataFrame, description: dict[str, Any]) -> pd.DataFrame:
    """``obs`` with scvi-tools' ``_scvi_batch`` column, categorical in the codes
    :class:`~scvi.dataloaders.TileDBDataModule` gives the batches (their sorted labels)."""
    out = pd.DataFrame(index=obs["soma_joinid"].astype(str).to_numpy())
    columns = description.get("batch_column_names") or []
    batches = sorted(description["batch_labels"])
    if columns:
        values = obs[columns].astype(str).agg("//".join, axis=1).to_numpy()
    else:
        values = np.full(len(obs), batches[0] if batches else "0")
    out["_scvi_batch"] = pd.Categorical(values, categories=batches or ["0"])
    return out


#: cells a read of :func:`read_cells` (its peak memory grows with it on a large store)
READ_CELLS = 256


def read_cells(
    experiment, description: dict[str, Any], registry: dict, joinids: np.ndarray
) -> AnnData:
    """The counts of a few cells (sorted ``joinids``), read from the store into an in-memory
    AnnData: the recorded layer's rows of those cells only, the original's genes, ``obs`` with the
    batch columns encoded as the original's datamodule encodes them; its
    ``obs_names`` are the joinids as strings.  Not registered."""
    joinids = np.asarray(joinids, dtype=np.int64)
    genes = var_joinids(registry)
    columns = list(description.get("batch_column_names") or [])
    obs = (
        experiment.obs.read(coords=(joinids,), column_names=["soma_joinid", *columns])
        .concat()
        .to_pandas()
        .set_index("soma_joinid", drop=False)
        .loc[joinids]
    )
    layer = experiment.ms[description["measurement_name"]].X[description["layer_name"]]
    # a few hundred cells a read: one read of cells scattered over a large store makes TileDB
    # hold many tiles at once (2,048 cells of a 1M-cell store: 4 GB; 256 at a time: 0.5 GB)
    import pyarrow as pa

    table = pa.concat_tables(
        layer.read(coords=(joinids[i : i + READ_CELLS], genes)).tables().concat()
        for i in range(0, max(joinids.size, 1), READ_CELLS)
    )
    rows = pd.Index(joinids).get_indexer(table["soma_dim_0"].to_numpy())
    cols = pd.Index(genes).get_indexer(table["soma_dim_1"].to_numpy())
    x = sp.csr_matrix(
        (table["soma_data"].to_numpy().astype(np.float32), (rows, cols)),
        shape=(joinids.size, genes.size),
    )
    adata = AnnData(X=x, obs=_encoded_obs(obs, description))
    adata.var_names = genes.astype(str)
    return adata


class RetainTileDBDataModule(TileDBDataModule):
    """scvi-tools' :class:`~scvi.dataloaders.TileDBDataModule` over given training and validation
    cells (``soma_joinid``), instead of a random split of a query.

    The retain stream of an unlearning request: the original's training and validation cells
    minus the forget cells, each in its original role; ``tiledbsoma_ml`` reads the rows of these
    cells only.  The batch labels are the original's (``batch_labels``), so the encoding and the
    architecture are the original's even when a batch (a donor) disappears.

    Parameters
    ----------
    query
        An ``ExperimentAxisQuery`` of the retain cells (training and validation) and the
        original's genes.
    train_joinids, validation_joinids
        ``soma_joinid`` of the training and validation cells.
    layer_name
        The ``X`` layer to read.
    **kwargs
        :class:`~scvi.dataloaders.TileDBDataModule`'s arguments (``batch_column_names``,
        ``batch_labels``, ...) and ``tiledbsoma_ml.ExperimentDataset``'s
        (``batch_size``, ``shuffle``, ``seed``, ...).
    """

    def __init__(
        self,
        query,
        train_joinids: np.ndarray,
        validation_joinids: np.ndarray,
        *,
        layer_name: str,
        **kwargs,
    ):
        n = len(train_joinids) + len(validation_joinids)
        train_size = float(len(train_joinids) / n) if n else 1.0
        super().__init__(query, layer_name=layer_name, train_size=train_size, **kwargs)
        self.train_joinids = np.sort(np.asarray(train_joinids, dtype=np.int64))
        self.validation_joinids = np.sort(np.asarray(validation_joinids, dtype=np.int64))

    def setup(self, stage: str | None = None) -> None:
        """The two ``tiledbsoma_ml`` datasets, over the given cells (no random split)."""
        from attrs import evolve
        from tiledbsoma_ml import ExperimentDataset

        columns = list(self.batch_column_names or [])
        full = ExperimentDataset(
            self.query,
            *self.dataset_args,
            obs_column_names=columns or ["soma_joinid"],
            **self.dataset_kwargs,
        )
        ids = full.query_ids
        self.train_dataset = evolve(full, query_ids=evolve(ids, obs_joinids=self.train_joinids))
        self.val_dataset = None
        if self.validation_joinids.size:
            self.val_dataset = evolve(
                full, query_ids=evolve(ids, obs_joinids=self.validation_joinids)
            )

    def train_dataloader(self):
        """scvi-tools' loader, without a last minibatch of a single cell when the retain
        training cells leave one (``n % batch_size == 1``): BatchNorm cannot train on one cell
        (scvi-tools' in-memory splitter moves such cells to validation).  An epoch then leaves
        out one retain cell -- the last of its shuffle, as ``drop_last`` does -- and never
        reads a forget cell."""
        loader = super().train_dataloader()
        batch_size = int(self.dataset_kwargs.get("batch_size", 1))
        if batch_size > 1 and self.train_joinids.size % batch_size == 1:
            return _FirstBatches(loader, self.train_joinids.size // batch_size)
        return loader


class _FirstBatches:
    """The first ``n`` minibatches of ``loader`` (a length-aware iterable for Lightning)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def retain_datamodule(
    experiment,
    description: dict[str, Any],
    registry: dict,
    train_joinids: np.ndarray,
    validation_joinids: np.ndarray,
    **dataset_kwargs,
) -> RetainTileDBDataModule:
    """A :class:`RetainTileDBDataModule` over the recorded store's retain cells and genes, with
    the original datamodule's arguments (``dataset_kwargs`` override its dataset's, e.g.
    ``batch_size``)."""
    soma = _import_soma()
    cells = np.union1d(train_joinids, validation_joinids)
    query = experiment.axis_query(
        description["measurement_name"],
        obs_query=soma.AxisQuery(coords=(cells,)),
        var_query=soma.AxisQuery(coords=(var_joinids(registry),)),
    )
    kwargs = {**(description.get("dataset_kwargs") or {}), **dataset_kwargs}
    return RetainTileDBDataModule(
        query,
        train_joinids,
        validation_joinids,
        layer_name=description["layer_name"],
        batch_column_names=description.get("batch_column_names"),
        batch_labels=list(description["batch_labels"]),
        unlabeled_category=description.get("unlabeled_category"),
        split_seed=description.get("split_seed"),
        dataloader_kwargs=dict(description.get("dataloader_kwargs") or {}),
        model_name=description.get("model_name") or "SCVI",
        **kwargs,
    )


def sorted_joinids(values: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """``values`` as a sorted int64 array (empty for ``None``)."""
    if values is None:
        return np.asarray([], dtype=np.int64)
    return np.sort(np.asarray(values, dtype=np.int64))
