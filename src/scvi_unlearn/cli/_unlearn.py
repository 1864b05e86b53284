"""``scvi-unlearn unlearn``: remove listed cells from a saved model, save the new model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ._common import (
    check_params,
    load_model,
    model_folder,
    parse_params,
    preview,
    read_adata,
    read_cells,
    trained_cells,
)
from ._methods import method_names

#: the unlearned model's provenance, next to the model (no cell names: see docs/cli.md)
RECORD_FILE = "unlearn_record.json"
#: the deletion certificate of the new model (``new.deletion_certificate()``), next to it
CERTIFICATE_FILE = "deletion_certificate.json"


def _json_ready(value):
    """A JSON-serialisable copy of a record value (numbers, strings, lists, dicts)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def summary(record: dict) -> list[str]:
    """Lines describing an ``unlearn_record_``: method, cells, times, retain-ELBO check.

    Parameters
    ----------
    record
        The new model's ``unlearn_record_``.

    Returns
    -------
    list of str
        The lines (without cell names).
    """
    hyper = ", ".join(
        f"{k}={v!r}" for k, v in record["hyperparameters"].items() if k != "enable_progress_bar"
    )
    lines = [
        f"method          {record['method']} (seed {record['seed']})",
        f"hyper-params    {hyper or '-'}",
        f"forgotten       {record['n_forget']} cells (salted SHA-256 of their names: "
        f"{record['forget_digest']['sha256'][:16]}...)",
        f"wall time       {record['wall_time_s']:.2f} s (method {record['method_time_s']:.2f} s)",
    ]
    c = record.get("checks") or {}
    if c:
        lines.append(
            f"retain ELBO     {'PASS' if c['passed'] else 'FAIL'}: "
            f"{c['retain_elbo_new']:.1f} vs original {c['retain_elbo_original']:.1f} on "
            f"{c['retain_cells']} (relative drop {c['relative_drop']:+.1%}"
            + (  # records written before the check had its margin lack the bound
                f", {c.get('confidence', 0.95):.0%} bound {c['relative_drop_upper']:+.1%}"
                if "relative_drop_upper" in c
                else ""
            )
            + f", tolerance {c['tolerance']:.0%})"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    """Unlearn the cells of ``--forget-cells`` from the model in ``MODEL_DIR``.

    ``args``: the parsed command line; returns the exit status: 0, or 1 when the method fails
    (a non-finite loss or model) or the retain check stops a degraded model
    (``--on-degradation``: by default for the methods that edit the original); nothing is saved
    then.
    """
    import scvi_unlearn as su

    params = parse_params(args.param)
    check_params(args.method, params)
    folder = model_folder(args.model_dir, "MODEL_DIR")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder.")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"--out {out} exists and is not empty; pass --overwrite to replace it.")
    if out.resolve() == folder.resolve():
        raise ValueError("--out must not be MODEL_DIR: the original model is kept as it is.")
    forget = read_cells(args.forget_cells, "--forget-cells")
    adata = read_adata(args.adata)
    model = load_model(folder, adata, args.adata, "MODEL_DIR")
    trained = trained_cells(model, folder, "MODEL_DIR")
    untrained = forget[~np.isin(forget, trained)]
    if untrained.size and not args.ignore_untrained:
        raise ValueError(
            f"--forget-cells {args.forget_cells}: {untrained.size} of its {forget.size} cells "
            f"were not used to train the model in {folder}, e.g. {preview(untrained)}; pass "
            "--ignore-untrained to skip them."
        )
    if untrained.size:
        forget = forget[np.isin(forget, trained)]
        if not forget.size:
            raise ValueError(
                f"--forget-cells {args.forget_cells}: none of its cells were used to train the "
                f"model in {folder}: nothing to unlearn."
            )
        print(f"skipping {untrained.size} cells the model never trained on")
    retain = np.setdiff1d(trained, forget)
    missing = retain[~np.isin(retain, np.asarray(adata.obs_names, dtype=str))]
    if missing.size:
        raise ValueError(
            f"{args.adata}: {missing.size} of the cells the model in {folder} trained on (and "
            f"keeps) are not in it, e.g. {preview(missing)}; unlearning needs every retain cell."
        )
    check = None
    if args.check_cells is not None:
        names = read_cells(args.check_cells, "--check-cells")
        absent = names[~np.isin(names, np.asarray(adata.obs_names, dtype=str))]
        if absent.size:
            raise ValueError(
                f"--check-cells {args.check_cells}: {absent.size} of its cells are not in "
                f"{args.adata}, e.g. {preview(absent)}."
            )
        check = adata[names]  # the library validates them (never trained on, >= 16)
    # the library's defaults unless given (it checks them before any training)
    check_options = {
        key: value
        for key, value in (
            ("retain_tolerance", args.retain_tolerance),
            ("retain_confidence", args.retain_confidence),
        )
        if value is not None
    }
    if "enable_progress_bar" not in params:
        try:  # Lightning's bar only in a terminal, for the methods that train
            check_params(args.method, {**params, "enable_progress_bar": False})
            params["enable_progress_bar"] = sys.stderr.isatty()
        except ValueError:
            pass
    print(
        f"unlearning {forget.size} of the {trained.size} cells the model in {folder} trained "
        f"on with {args.method!r}"
    )
    try:
        new = model.unlearn(
            forget,
            method=args.method,
            seed=args.seed,
            on_degradation=args.on_degradation,
            check_cells=check,
            **check_options,
            **params,
        )
    except (su.unlearn.UnlearningError, su.unlearn.NonFiniteLossError) as err:
        print(f"scvi-unlearn: unlearning failed, nothing saved: {err}", file=sys.stderr)
        return 1
    if out.is_dir():  # --overwrite: no stale file of an earlier model may stay (adata.h5ad)
        for name in ("model.pt", "adata.h5ad", RECORD_FILE, CERTIFICATE_FILE):
            (out / name).unlink(missing_ok=True)
    new.save(str(out), save_anndata=args.save_anndata, overwrite=True)
    (out / RECORD_FILE).write_text(json.dumps(_json_ready(new.unlearn_record_), indent=1))
    (out / CERTIFICATE_FILE).write_text(json.dumps(new.deletion_certificate(), indent=1))
    for line in summary(new.unlearn_record_):
        print(line)
    if not new.unlearn_record_["checks"]["passed"]:
        print(
            "warning: the new model lost more retain ELBO than the tolerance; gentler "
            "hyper-parameters (--param) or --method retrain",
            file=sys.stderr,
        )
    load = "" if args.save_anndata else ", adata=ad.read_h5ad(...)"
    print(f"saved the new model to {out} (load it with su.SCVI.load({str(out)!r}{load}))")
    return 0


#: the subcommand's name, one-line help and description (``scvi-unlearn unlearn --help``)
NAME = "unlearn"
HELP = "remove listed cells from a saved model and save the new model"
DESCRIPTION = (
    "Load the scvi_unlearn.SCVI saved in MODEL_DIR on --adata (which must hold every "
    "cell the model trained on), forget the cells listed in --forget-cells with "
    "--method, and save the new model, its record (unlearn_record.json) and its deletion "
    "certificate (deletion_certificate.json) to --out. "
    "The new model and its record name no forgotten cell."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``unlearn`` command's arguments to its parser."""
    p.add_argument("model_dir", metavar="MODEL_DIR", help="folder of the saved trained model")
    p.add_argument("--adata", required=True, metavar="FILE.h5ad", help="the model's data")
    p.add_argument(
        "--forget-cells",
        required=True,
        metavar="CELLS.txt",
        help="file of the cells to forget, one obs_name per line",
    )
    p.add_argument(
        "--method",
        required=True,
        help=f"unlearning method: {method_names()} ('scvi-unlearn methods' says what each "
        "guarantees)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the method (default: the training seed)"
    )
    p.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="a hyper-parameter of the method, e.g. --param max_epochs=20 (repeatable)",
    )
    p.add_argument("--out", required=True, metavar="NEW_DIR", help="folder of the new model")
    p.add_argument(
        "--save-anndata",
        action="store_true",
        help="also save the new model's AnnData (its retain cells' counts) in --out",
    )
    p.add_argument(
        "--ignore-untrained",
        action="store_true",
        help="skip listed cells the model never trained on (default: an error)",
    )
    p.add_argument(
        "--on-degradation",
        choices=("auto", "warn", "raise"),
        default="auto",
        help="when the retain ELBO is not confidently within 2%%: warn and save, or stop "
        "(exit 1); auto (default): warn for retrain / fast_retrain / dp_sgd, stop for the others",
    )
    p.add_argument(
        "--retain-tolerance",
        type=float,
        default=None,
        metavar="FRACTION",
        help="largest tolerated relative drop of the retain ELBO (default 0.02)",
    )
    p.add_argument(
        "--retain-confidence",
        type=float,
        default=None,
        metavar="LEVEL",
        help="confidence of the check's one-sided bound on the drop, in [0.5, 1) (default 0.95; "
        "0.5: the point drop)",
    )
    p.add_argument(
        "--check-cells",
        default=None,
        metavar="CELLS.txt",
        help="cells of --adata the model never trained on (one obs_name a line, e.g. held-out "
        "cells of the types kept) for the retain-ELBO check instead of the validation cells",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
