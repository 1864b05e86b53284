"""Helpers shared by the commands: reading the user's files, checking them, progress bars.

Every check raises :class:`ValueError` (or :class:`KeyError`) with a one-line message that
names the file or option at fault; :func:`scvi_unlearn.cli.main` prints it and exits with
status 2.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: ``--layer`` value naming ``adata.X`` instead of a layer
X_LAYER = "X"
#: the layer the benchmark's marker genes and the matched non-members' PCA read counts from
COUNTS_LAYER = "counts"


def interactive() -> bool:
    """Whether progress bars are shown: only when standard error is a terminal."""
    return sys.stderr.isatty()


def progress(total: int, desc: str, unit: str = "run"):
    """A tqdm progress bar over ``total`` steps, silent without a terminal (as scvi-tools).

    Parameters
    ----------
    total
        Number of steps.
    desc
        Label shown before the bar.
    unit
        Name of one step.

    Returns
    -------
    tqdm.tqdm
        The bar (use ``update(1)`` and ``close()``, or as a context manager).
    """
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not interactive(), file=sys.stderr)


def preview(names: Sequence[str], k: int = 5) -> str:
    """The first ``k`` names, quoted, for messages."""
    names = list(names)
    shown = ", ".join(repr(str(n)) for n in names[:k])
    return shown + (", ..." if len(names) > k else "")


def existing_file(path: str | Path, option: str) -> Path:
    """``path`` as a :class:`~pathlib.Path`; a clear error if it is not an existing file.

    Parameters
    ----------
    path
        The path given on the command line.
    option
        The option it was given to (for the message), e.g. ``"--adata"``.

    Returns
    -------
    pathlib.Path
        The path.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{option} {path}: no such file.")
    if not p.is_file():
        raise ValueError(f"{option} {path}: not a file.")
    return p


def read_adata(path: str | Path, option: str = "--adata"):
    """Read an ``.h5ad`` file into memory; its ``obs_names`` must be unique.

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    option
        The option it was given to (for messages).

    Returns
    -------
    anndata.AnnData
        The data (in memory; never written back).
    """
    import anndata as ad

    p = existing_file(path, option)
    try:
        adata = ad.read_h5ad(p)
    except Exception as err:  # h5py / anndata raise many types for a file that is not .h5ad
        raise ValueError(f"{option} {path}: cannot read it as an .h5ad file ({err}).") from None
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()
        raise ValueError(
            f"{option} {path}: {dup.size} obs_names are duplicated (e.g. {preview(dup)}); cells "
            "are identified by name, so make them unique (adata.obs_names_make_unique()) "
            "before training."
        )
    return adata


def read_cells(path: str | Path, option: str) -> np.ndarray:
    """The cell names in a text file, one ``obs_name`` per line (blank lines skipped).

    Surrounding white space is stripped; a name listed twice counts once (order kept).

    Parameters
    ----------
    path
        The text file.
    option
        The option it was given to (for messages), e.g. ``"--forget-cells"``.

    Returns
    -------
    numpy.ndarray
        The names (``str``), in file order, without duplicates.
    """
    p = existing_file(path, option)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()  # a BOM is not a name
    except UnicodeDecodeError:
        raise ValueError(f"{option} {path}: not a text file of cell names.") from None
    names = list(dict.fromkeys(s for s in (line.strip() for line in lines) if s))
    if not names:
        raise ValueError(f"{option} {path}: the file lists no cells (one obs_name per line).")
    return np.asarray(names, dtype=str)


def check_cells_in(adata, names: np.ndarray, option: str, path, adata_path) -> None:
    """Raise unless every cell of ``names`` (read from ``path``) is in ``adata``.

    Parameters
    ----------
    adata
        The AnnData read from ``adata_path``.
    names
        Cell names.
    option, path
        Where the names come from (for the message).
    adata_path
        Where ``adata`` comes from (for the message).
    """
    missing = names[~np.isin(names, np.asarray(adata.obs_names, dtype=str))]
    if missing.size:
        raise ValueError(
            f"{option} {path}: {missing.size} of its {names.size} cells are not in "
            f"{adata_path}, e.g. {preview(missing)}."
        )


def check_counts_layer(adata, layer: str | None, adata_path, model_dir=None) -> None:
    """Raise unless ``adata`` has ``layer`` and it holds non-negative integer counts.

    Parameters
    ----------
    adata
        The AnnData.
    layer
        A layer name, or ``None`` / ``"X"`` for ``adata.X``.
    adata_path
        Where ``adata`` comes from (for the messages).
    model_dir
        The saved model whose registered layer this is; ``None``: the layer was given with
        ``--layer``.
    """
    import scvi_unlearn as su

    source = "--layer" if model_dir is None else f"the layer the model in {model_dir} reads"
    if layer not in (None, X_LAYER) and layer not in adata.layers:
        raise ValueError(
            f"{adata_path} has no layer {layer!r} ({source}); its layers: "
            f"{list(adata.layers)}" + (f" ('{X_LAYER}' means adata.X)." if not model_dir else ".")
        )
    try:
        su.data.check_counts(adata, layer=None if layer in (None, X_LAYER) else layer)
    except ValueError as err:
        fix = (
            "Pass the layer of raw counts with --layer."
            if model_dir is None
            else f"The model in {model_dir} was set up with it: it must hold the raw counts."
        )
        raise ValueError(f"{adata_path}: {err} {fix}") from None


def use_as_counts_layer(adata, layer: str | None) -> None:
    """Make ``adata.layers["counts"]`` the counts of ``layer`` (in memory only).

    The benchmark's marker genes and the matched non-members' PCA read ``layers["counts"]``;
    a user's counts in another layer (or in ``X``) are put there.  The file is not modified.
    """
    if layer == COUNTS_LAYER:
        return
    adata.layers[COUNTS_LAYER] = adata.X if layer in (None, X_LAYER) else adata.layers[layer]


def parse_value(text: str) -> Any:
    """A ``--param`` value: JSON or a Python literal (``10``, ``1e-3``, ``true``, ``None``...).

    Anything else is kept as a string (``--param accelerator=cpu``).
    """
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


def parse_params(items: Iterable[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` into a dict of hyper-parameters (see :func:`parse_value`).

    Parameters
    ----------
    items
        The ``--param`` arguments.

    Returns
    -------
    dict
        ``{key: value}``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(
                f"--param {item!r} is not key=value with a hyper-parameter name as key "
                "(e.g. --param max_epochs=20)."
            )
        if key in out:
            raise ValueError(f"--param {key} is given twice.")
        if not value.strip():
            raise ValueError(f"--param {item!r} has no value (e.g. --param {key}=10).")
        out[key] = parse_value(value.strip())
    return out


def check_params(method: str, params: dict[str, Any]) -> None:
    """Raise a one-line :class:`ValueError` for an unknown method or hyper-parameter.

    Values of a hyper-parameter whose default is a number or a boolean must have that type.
    """
    import inspect

    import scvi_unlearn as su
    from scvi_unlearn.unlearn.core._registry import bind_hyperparameters

    func = su.unlearn.get_method(method)  # ValueError listing the available methods
    try:
        bind_hyperparameters(method, func, params)
    except TypeError as err:
        raise ValueError(f"--param: {err}") from None
    defaults = {
        p.name: p.default
        for p in list(inspect.signature(func).parameters.values())[1:]
        if p.default is not inspect.Parameter.empty
    }
    for key, value in params.items():
        default = defaults.get(key)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = True
        if not ok:
            raise ValueError(
                f"--param {key}={value!r}: method {method!r} expects a value of type "
                f"{type(default).__name__} (default {default!r})."
            )


def model_folder(path: str | Path, option: str) -> Path:
    """``path`` as a folder holding a saved scvi-tools model (``model.pt``), else an error."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{option} {path}: no such folder.")
    if not (p / "model.pt").is_file():
        raise ValueError(
            f"{option} {path}: not a saved scvi-tools model (no model.pt in it; save one with "
            "model.save(folder))."
        )
    return p


def registered_layer(folder: Path) -> tuple[str | None, str | None]:
    """The counts layer (``None``: ``X``) and the labels column a saved model was set up with.

    Parameters
    ----------
    folder
        A saved model folder.

    Returns
    -------
    tuple
        ``(layer, labels_key)``; ``labels_key`` is ``None`` when the model has no labels.
    """
    import scvi_unlearn as su

    registry = su.SCVI.load_registry(str(folder))
    fields = registry.get("field_registries", {})
    layer = fields.get("X", {}).get("data_registry", {}).get("attr_key")
    labels = fields.get("labels", {}).get("state_registry", {}).get("original_key")
    if labels is not None and str(labels).startswith("_scvi"):
        labels = None  # set up without labels: scvi-tools registers a constant column
    return layer, labels


def load_model(folder: Path, adata, adata_path, option: str):
    """Load the :class:`scvi_unlearn.SCVI` saved in ``folder`` on ``adata``.

    Checks first that ``adata`` holds raw counts in the layer the model was set up with.

    Parameters
    ----------
    folder
        A folder checked by :func:`model_folder`.
    adata
        The AnnData to bind the model to (scvi-tools registers it in place).
    adata_path
        Where ``adata`` comes from (for messages).
    option
        The option the folder was given to (for messages).

    Returns
    -------
    scvi_unlearn.SCVI
        The model.
    """
    import scvi_unlearn as su

    layer, _ = registered_layer(folder)
    check_counts_layer(adata, layer, adata_path, model_dir=folder)
    try:
        return su.SCVI.load(str(folder), adata=adata)
    except (ValueError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ValueError(f"{option} {folder}: cannot load it on {adata_path}: {msg}") from None


def trained_cells(model, folder, option: str) -> np.ndarray:
    """``obs_names`` of the cells a loaded model trained on, or a clear error."""
    try:
        return np.asarray(model.trained_obs_names, dtype=str)
    except (ValueError, AttributeError):
        raise ValueError(
            f"{option} {folder}: the model does not record the cells it trained on (train it "
            "with scvi_unlearn.SCVI.train)."
        ) from None
