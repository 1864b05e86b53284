"""Provenance of an unlearning run: the ``unlearn_record_`` saved with the new model.

The record names the method, its hyper-parameters (defaults filled in), the seed, the number of
forgotten cells, a *salted* SHA-256 digest of their sorted ``obs_names`` (so that a holder of the
list can verify it with :func:`verify_forget_digest`, while the record alone does not reveal the
cells), wall times, package versions, the per-step losses and a slot for an audit result.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from anndata import AnnData

#: version of the record layout
RECORD_VERSION = 1

_PACKAGES = ("scvi-tools", "torch", "scvi-unlearn", "opacus", "anndata", "lightning")


def forget_digest(obs_names: Iterable[str], salt: str) -> str:
    """Salted SHA-256 hex digest of the sorted, de-duplicated ``obs_names``."""
    names = sorted({str(n) for n in obs_names})
    h = hashlib.sha256()
    h.update(salt.encode())
    for name in names:
        h.update(b"\x00")
        h.update(name.encode())
    return h.hexdigest()


def verify_forget_digest(record: dict[str, Any], obs_names: Iterable[str]) -> bool:
    """Whether ``obs_names`` is exactly the set of cells forgotten in ``record``.

    Parameters
    ----------
    record
        A model's ``unlearn_record_``.
    obs_names
        The candidate list of forgotten cells (order and duplicates do not matter).
    """
    digest = record["forget_digest"]
    return secrets.compare_digest(forget_digest(obs_names, digest["salt"]), digest["sha256"])


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages an unlearning result depends on."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def plain(value: Any) -> Any:
    """A picklable, human-readable copy of a hyper-parameter value (repr for objects).

    An AnnData (e.g. ``nonmembers`` of the critic methods) becomes a summary,
    ``"AnnData of <n> cells x <m> genes"``: no cell names enter the record.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, AnnData):
        return f"AnnData of {value.n_obs} cells x {value.n_vars} genes"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return repr(value)


def new_record(
    method: str,
    hyperparameters: dict[str, Any],
    seed: int,
    forget_names: np.ndarray,
) -> dict[str, Any]:
    """A record with the request's fields; timings, log and checks are filled in later."""
    salt = secrets.token_hex(16)
    return {
        "record_version": RECORD_VERSION,
        "method": method,
        "hyperparameters": {k: plain(v) for k, v in hyperparameters.items()},
        "seed": int(seed),
        "n_forget": int(len(forget_names)),
        "forget_digest": {
            "algorithm": "sha256(salt + sorted obs_names)",
            "salt": salt,
            "sha256": forget_digest(forget_names, salt),
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "method_time_s": None,
        "wall_time_s": None,
        "log": [],
        "checks": None,
        "audit": None,
    }
