"""Deletion certificates: what an unlearned model's record states, for a data steward to keep.

:func:`issue_certificate` (behind :meth:`scvi_unlearn.model.UnlearningMixin.deletion_certificate`)
turns the ``unlearn_record_`` of a model returned by ``unlearn`` into a JSON-serialisable dict;
:func:`verify_certificate` (``su.verify_certificate``) re-checks it against a model and,
optionally, the data and the forgotten cells' names.  No cell name is stored: the retain cells
by an unsalted SHA-256 of their sorted names (a saved model keeps those names anyway), the
forgotten cells by the record's *salted* digest, which a requester who knows their barcodes and
the salt can verify.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from scvi_unlearn.unlearn.core._forget_cells import forget_values
from scvi_unlearn.unlearn.core._guarantees import guarantee
from scvi_unlearn.unlearn.core._record import (
    counts_sha256,
    forget_digest,
    names_sha256,
    package_versions,
    plain,
    weights_sha256,
)
from scvi_unlearn.unlearn.core._registry import METHODS
from scvi_unlearn.unlearn.core._soma_source import lookup_ids, open_experiment
from scvi_unlearn.unlearn.core._stream import is_streamed, joinids_sha256, trained_joinids

#: version of the certificate layout
CERTIFICATE_VERSION = 1

#: what :func:`verify_certificate` cannot re-check
NOT_CHECKED = (
    "the training itself: re-running the method with the certificate's recipe and seed on the "
    "retain cells is the only way to check that the weights follow from them (bit-identical "
    "only on the same hardware and library versions)"
)

#: the checks that decide ``verified`` (when not ``None``)
_DECIDING = ("record", "weights", "retain_digest", "retain_counts", "chain")


def _record(model) -> dict[str, Any]:
    record = getattr(model, "unlearn_record_", None)
    if not record:
        raise ValueError(
            f"This {type(model).__name__} was not produced by unlearn(): it has no "
            "unlearn_record_, so there is no deletion to certify. Certify the model that "
            "model.unlearn(cells) returns (or that SCVI.load reads back from its saved folder)."
        )
    return record


def _training_recipe(model) -> dict[str, Any] | None:
    recipe = copy.deepcopy(getattr(model, "train_recipe_", None))
    if recipe is None:
        return None
    splitter = recipe.get("datasplitter_kwargs")
    if isinstance(splitter, dict) and splitter.get("external_indexing") is not None:
        sizes = [int(np.asarray(part).size) for part in splitter["external_indexing"]]
        splitter["external_indexing"] = (
            f"the original's split minus the forget cells ({sizes[0]} training, "
            f"{sizes[1]} validation cells)"
        )
    return plain(recipe)


def _verdict(report) -> dict[str, Any] | None:
    if report is None:
        return None
    if not (hasattr(report, "verdict") and hasattr(report, "passed")):
        raise TypeError(
            "verdict must be an EquivalenceReport (target.equivalence(new)), got "
            f"{type(report).__name__}."
        )
    return {
        "passed": bool(report.passed),
        "verdict": str(report.verdict()),
        "exact": plain(getattr(report, "exact", None)),
    }


def issue_certificate(model, verdict=None) -> dict[str, Any]:
    """A deletion certificate for ``model``; see
    :meth:`scvi_unlearn.model.UnlearningMixin.deletion_certificate`."""
    record = _record(model)
    stated = record.get("guarantee")
    if stated is None and record.get("method") in METHODS:  # a record of layout 1
        row = guarantee(record["method"])
        stated = {k: row[k] for k in ("kind", "exact", "private", "guarantee")}
    return plain(
        {
            "certificate_version": CERTIFICATE_VERSION,
            "issued": datetime.now(UTC).isoformat(timespec="seconds"),
            "issued_with": package_versions()["scvi-unlearn"],
            "model": {
                "class": type(model).__name__,
                "weights_sha256": record.get("weights_sha256"),
            },
            "request": {
                "method": record.get("method"),
                "created": record.get("created"),
                "record_version": record.get("record_version"),
                "n_forget": record.get("n_forget"),
                "method_time_s": record.get("method_time_s"),
                "wall_time_s": record.get("wall_time_s"),
            },
            "guarantee": stated,
            "versions": record.get("versions"),
            "seed": record.get("seed"),
            "recipe": {
                "hyperparameters": record.get("hyperparameters"),
                "training": _training_recipe(model),
            },
            "retain_digest": record.get("retain_digest"),
            "forget_digest": record.get("forget_digest"),
            "chain": record.get("previous", []),
            "checks": record.get("checks"),
            "audit": record.get("audit"),
            "verdict": _verdict(verdict),
            "not_checked": NOT_CHECKED,
        }
    )


def _forget_names(forget) -> np.ndarray:
    names = forget_values(forget, "an AnnData or a sequence of obs_names")
    if not all(isinstance(n, str) for n in names):
        raise TypeError("forget must contain obs_names (strings).")
    return names.astype(str)


def _absent_from_store(model, names: np.ndarray, trained: np.ndarray) -> bool | None:
    """Whether none of ``names`` is a training cell of a streamed model: the names are looked
    up in the recorded store's ``obs`` id column (decimal ``soma_joinid`` without one);
    ``None`` when the store cannot be opened."""
    source = model.train_recipe_["datamodule"]
    column = source.get("obs_id_column")
    if not column:
        ids = pd.to_numeric(pd.Series(names), errors="coerce").dropna().astype(np.int64)
        return not np.isin(ids.to_numpy(), trained).any()
    try:
        with open_experiment(source) as experiment:
            found = lookup_ids(experiment, column, names)["soma_joinid"].to_numpy(np.int64)
    except Exception:  # a moved or deleted store: the check cannot be made
        return None
    return not np.isin(found, trained).any()


def _matches(names: np.ndarray, digest: dict[str, Any] | None) -> bool:
    if not digest or "salt" not in digest:
        return False
    return secrets.compare_digest(forget_digest(names, digest["salt"]), digest["sha256"])


def verify_certificate(
    model,
    certificate: dict[str, Any],
    adata: AnnData | None = None,
    forget: AnnData | Sequence[str] | pd.Index | np.ndarray | None = None,
) -> dict[str, Any]:
    """Re-check a deletion certificate against a model, and optionally data and cell names.

    Parameters
    ----------
    model
        The model the certificate is about (e.g. read back with ``SCVI.load``).
    certificate
        A certificate from :meth:`~scvi_unlearn.model.UnlearningMixin.deletion_certificate`
        (the dict, or the same read back from JSON).
    adata
        Optional: the data steward's AnnData holding the model's training cells (e.g. the
        full dataset).  Checks that their registered counts (the layer the model was set up
        with) are the counts the model was trained on.
    forget
        Optional: the forgotten cells (an AnnData or their ``obs_names``), as the requester
        knows them.  Checks them against the certificate's salted digest.

    Returns
    -------
    dict
        ``True`` / ``False`` for each check, ``None`` when it could not be made (no ``adata``,
        no ``forget``, or a certificate of a record without the digest):

        * ``record`` -- the certificate was issued for this model's request (method, seed,
          hyper-parameters, time and forget digest equal its ``unlearn_record_``);
        * ``weights`` -- SHA-256 of the model's weights equals the certificate's (the weights
          are those the request produced: not trained or edited since);
        * ``retain_digest`` -- SHA-256 of the sorted names of the model's training cells
          (``trained_obs_names``; for a model trained out of core, of their sorted
          ``soma_joinid``) equals the certificate's;
        * ``retain_counts`` -- (``adata``) SHA-256 of those cells' registered counts in
          ``adata`` equals the certificate's (``False`` if a cell is missing; ``None`` for a
          model trained out of core, whose certificate does not hash the counts);
        * ``forget_digest`` -- (``forget``) the names are exactly this request's forget set;
        * ``forget_request`` -- (``forget``) which request of the chain (1 = the first; the
          last is this one) forgot exactly these names, or ``None``;
        * ``forget_absent`` -- (``forget``) none of the names is among the model's training
          cells (out of core: looked up in the recorded store's ``obs`` ids; ``None`` when it
          cannot be opened);
        * ``chain`` -- the certificate's chain of earlier requests equals the record's;
        * ``guarantee`` -- the method is registered today with the kind, exactness and privacy
          the certificate states;
        * ``versions`` -- the installed scvi-tools and scvi-unlearn are the certificate's
          (informational: needed to reproduce the weights bit for bit);

        plus ``verified`` (every check among ``record``, ``weights``, ``retain_digest``,
        ``retain_counts`` and ``chain`` that could be made passed and, with ``forget``, the
        names are exactly the forget set of one request of the chain and none is a training
        cell), ``method``, ``chain_length`` (number of requests, this one included) and
        ``not_checked`` (what no check here can establish: the training itself).

    Raises
    ------
    ValueError
        For a model without ``unlearn_record_`` or a dict that is not a certificate.
    TypeError
        For ``forget`` that is neither an AnnData nor a sequence of names.
    """
    record = _record(model)
    if not isinstance(certificate, dict) or "certificate_version" not in certificate:
        raise ValueError(
            "certificate must be a dict from model.deletion_certificate() (or its JSON read "
            f"back), got {type(certificate).__name__} without 'certificate_version'."
        )
    request = certificate.get("request") or {}
    cert_forget = certificate.get("forget_digest") or {}
    same_record = (
        request.get("method") == record.get("method")
        and request.get("created") == record.get("created")
        and certificate.get("seed") == record.get("seed")
        and (certificate.get("recipe") or {}).get("hyperparameters")
        == plain(record.get("hyperparameters"))
        and cert_forget == plain(record.get("forget_digest"))
    )
    out: dict[str, Any] = {"verified": False, "method": request.get("method")}
    out["record"] = same_record

    stated_weights = (certificate.get("model") or {}).get("weights_sha256")
    out["weights"] = (
        None if stated_weights is None else stated_weights == weights_sha256(model.module)
    )

    streamed = is_streamed(model)
    trained = None
    if streamed:
        trained = trained_joinids(model)
    elif getattr(model, "train_obs_names_", None) is not None:
        trained = np.asarray(model.trained_obs_names, dtype=str)
    retain = certificate.get("retain_digest") or {}
    out["retain_digest"] = None
    if retain.get("sha256") is not None and trained is not None:
        digest = joinids_sha256(trained) if streamed else names_sha256(trained)
        out["retain_digest"] = retain["sha256"] == digest
    out["retain_counts"] = None
    if adata is not None and retain.get("counts_sha256") is not None and not streamed:
        try:
            digest = counts_sha256(adata, trained, retain["counts"])
        except KeyError:
            digest = None
        out["retain_counts"] = digest == retain["counts_sha256"]

    chain = list(certificate.get("chain") or [])
    out["forget_digest"] = out["forget_request"] = out["forget_absent"] = None
    if forget is not None:
        names = _forget_names(forget)
        out["forget_digest"] = _matches(names, cert_forget)
        digests = [link.get("forget_digest") for link in chain] + [cert_forget]
        found = [i + 1 for i, d in enumerate(digests) if _matches(names, d)]
        out["forget_request"] = found[-1] if found else None
        if streamed:
            out["forget_absent"] = _absent_from_store(model, names, trained)
        elif trained is not None:
            out["forget_absent"] = not np.isin(names, trained).any()
    out["chain"] = chain == plain(record.get("previous", []))
    out["chain_length"] = len(chain) + 1

    stated = certificate.get("guarantee") or {}
    method = request.get("method")
    if method in METHODS and stated:
        row = guarantee(method)
        out["guarantee"] = all(row[k] == stated.get(k) for k in ("kind", "exact", "private"))
    else:
        out["guarantee"] = None
    installed = package_versions()
    stated_versions = certificate.get("versions") or {}
    out["versions"] = all(
        installed.get(k) == stated_versions.get(k) for k in ("scvi-tools", "scvi-unlearn")
    )
    made = [out[k] for k in _DECIDING if out[k] is not None]
    if forget is not None:  # the names are one request of the chain, and none is trained on
        made += [out["forget_request"] is not None, out["forget_absent"] is not False]
    out["verified"] = all(made)
    out["not_checked"] = NOT_CHECKED
    return out
