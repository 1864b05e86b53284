"""The ``scvi-unlearn`` commands on the user's own ``.h5ad`` files (``docs/cli.md``).

Everything is tiny: a 2-epoch original, 3 references, 2 posterior draws per cell.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import scvi_unlearn as su
from scvi_unlearn.cli import main

#: the rare cell type forgotten in these tests (31 cells, 22 of them training members)
FORGET_LABEL = "CD56+ NK"


@pytest.fixture(scope="module")
def files(pbmc, tmp_path_factory) -> dict[str, Path]:
    """The user's files: .h5ad with / without a split, forget and held-out lists, a model."""
    from scvi_unlearn._seeding import isolated_seed

    root = tmp_path_factory.mktemp("cli")
    adata = pbmc.copy()
    adata.write_h5ad(root / "pbmc.h5ad")  # counts in layers["counts"], obs["membership"]
    nosplit = adata.copy()
    del nosplit.obs["membership"]
    nosplit.write_h5ad(root / "nosplit.h5ad")
    nosplit.layers["raw"] = nosplit.layers.pop("counts")  # counts under another name
    nosplit.write_h5ad(root / "rawlayer.h5ad")
    forget = su.data.forget_by_label(adata, FORGET_LABEL)
    (root / "nk.txt").write_text("\n".join(forget) + "\n")
    heldout = adata.obs_names[adata.obs["membership"] == "heldout"]
    (root / "heldout.txt").write_text("\n".join(heldout) + "\n")
    members = adata[adata.obs["membership"] == "train"].copy()
    su.SCVI.setup_anndata(members, layer="counts", labels_key="cell_type")
    with isolated_seed(0):
        model = su.SCVI(members, n_latent=10, n_hidden=64)
        model.train(max_epochs=2, enable_progress_bar=False)
    model.save(str(root / "model"), save_anndata=False)
    return {
        "root": root,
        "adata": root / "pbmc.h5ad",
        "nosplit": root / "nosplit.h5ad",
        "rawlayer": root / "rawlayer.h5ad",
        "forget": root / "nk.txt",
        "heldout": root / "heldout.txt",
        "model": root / "model",
    }


def _run(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` with its standard output and error captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def unlearned(files) -> tuple[Path, int, str, str]:
    """``scvi-unlearn unlearn`` of the NK cells with the default method (contrastive)."""
    new = files["root"] / "new"
    code, out, err = _run(
        [
            "unlearn",
            files["model"],
            "--adata",
            files["adata"],
            "--forget-cells",
            files["forget"],
            "--method",
            "contrastive",
            "--out",
            new,
        ]
    )
    return new, code, out, err


def _forget_names(files) -> list[str]:
    return files["forget"].read_text().split()


def _assert_no_forget_cell_in(folder: Path, names: list[str]) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaked = [n for n in names if n.encode() in data]
            assert not leaked, f"{path.name} names forget cells {leaked[:3]}"


def test_unlearn_saves_the_new_model_and_prints_its_record(files, unlearned):
    new, code, out, err = unlearned
    assert code == 0, err
    assert "unlearning 22 of the 491 cells" in out
    assert "method          contrastive (seed 0)" in out
    assert "forgotten       22 cells" in out
    assert "wall time" in out and "retain ELBO     " in out
    assert "%|" not in err  # no progress bar without a terminal
    assert sorted(p.name for p in new.iterdir()) == [
        "deletion_certificate.json",
        "model.pt",
        "unlearn_record.json",
    ]
    _assert_no_forget_cell_in(new, _forget_names(files))
    adata = su.data.pbmc68k()
    model = su.SCVI.load(str(new), adata=adata)
    record = model.unlearn_record_
    assert record["method"] == "contrastive" and record["n_forget"] == 22
    assert su.unlearn.verify_forget_digest(record, _forget_names(files))
    assert not np.isin(_forget_names(files), model.trained_obs_names).any()
    certificate = json.loads((new / "deletion_certificate.json").read_text())
    report = su.verify_certificate(model, certificate, forget=_forget_names(files))
    assert report["verified"] and report["forget_digest"] and report["weights"]


def test_unlearn_with_params_and_anndata(files):
    new = files["root"] / "new_finetune"
    code, out, err = _run(
        [
            "unlearn",
            files["model"],
            "--adata",
            files["adata"],
            "--forget-cells",
            files["forget"],
            "--method",
            "finetune",
            "--param",
            "max_epochs=1",
            "--param",
            "lr=1e-3",
            "--seed",
            "3",
            "--save-anndata",
            "--out",
            new,
        ]
    )
    assert code == 0, err
    assert "method          finetune (seed 3)" in out and "max_epochs=1" in out
    assert (new / "adata.h5ad").stat().st_size > 0
    _assert_no_forget_cell_in(new, _forget_names(files))
    model = su.SCVI.load(str(new))  # self-contained: its AnnData is the retain cells
    assert model.adata.n_obs == 491 - 22
    assert model.unlearn_record_["hyperparameters"]["lr"] == 1e-3
    # the folder is not empty now: refused without --overwrite
    code, _, err = _run(
        ["unlearn", files["model"], "--adata", files["adata"], "--forget-cells"]
        + [files["forget"], "--method", "ssd", "--out", new]
    )
    assert code == 2 and "exists and is not empty" in err


def test_unlearn_failure_exits_1_and_saves_nothing(files):
    new = files["root"] / "destroyed"
    code, out, err = _run(
        ["unlearn", files["model"], "--adata", files["adata"], "--forget-cells", files["forget"]]
        + ["--method", "fisher", "--param", "alpha=0.01", "--on-degradation", "raise"]
        + ["--out", new]
    )
    assert code == 1 and "unlearning failed, nothing saved" in err
    assert not new.exists()


def test_audit_writes_the_report_and_reuses_references(files, unlearned):
    new = unlearned[0]
    refs, report = files["root"] / "refs", files["root"] / "report"
    common = ["--forget-cells", files["forget"], "--references", refs, "--n-references", "3"]
    common += ["--n-draws", "2"]
    code, out, err = _run(
        ["audit", new, "--original", files["model"], "--adata", files["adata"], *common]
        + ["--out", report]
    )
    assert code == 0, err
    assert "references in" in out and "0 reused, 3 to train" in out
    assert "membership   PASS" in out or "membership   FAIL" in out
    assert "calibrated attack: AUC" in out
    assert "equivalence  PASS" in out or "equivalence  FAIL" in out
    assert "overall      " in out
    for name in (
        "membership.csv",
        "equivalence.csv",
        "equivalence_per_cell.csv",
        "verdict.txt",
        "equivalence.png",
        "membership_roc.png",
    ):
        assert (report / name).stat().st_size > 0
    per_cell = pd.read_csv(report / "equivalence_per_cell.csv", index_col="obs_name")
    assert set(per_cell.index[per_cell["group"] == "forget"]) == set(_forget_names(files))
    eq = pd.read_csv(report / "equivalence.csv")
    assert eq["eq_decision"].iloc[0] in ("equivalent", "remembers", "over-forgets", "no power")
    membership = pd.read_csv(report / "membership.csv")
    assert list(membership["model"]) == ["candidate"] + [f"reference {i}" for i in range(3)]
    verdict = (report / "verdict.txt").read_text()
    assert "membership" in verdict and "equivalence" in verdict and "overall" in verdict
    assert sorted(p.name for p in refs.iterdir())[0] == "references.json"

    # held-out cells from a file, on an .h5ad without obs['membership']: references reused
    code, out, err = _run(
        ["audit", new, "--original", files["model"], "--adata", files["nosplit"], *common]
        + ["--heldout-cells", files["heldout"]]
    )
    assert code == 0, err
    assert "3 reused, 0 to train" in out and "209 held-out cells" in out
    assert "overall      " in out


def test_benchmark_on_own_adata(files):
    out_dir = files["root"] / "bench"
    code, out, err = _run(
        [
            "benchmark",
            "--adata",
            files["rawlayer"],
            "--layer",
            "raw",
            "--forget-cells",
            files["forget"],
            "--methods",
            "ssd",
            "--seeds",
            "1",
            "--retrain-seeds",
            "3",
            "--budgets",
            "--attacks",
            "calibrated",
            "--max-epochs",
            "2",
            "--n-draws",
            "2",
            "--no-umap",
            "--out",
            out_dir,
        ]
    )
    assert code == 0, err
    assert "no obs['membership']" in out and "kept as training members" in out
    assert "forgetting 22 cells" in out and "| ssd |" in out
    table = pd.read_csv(out_dir / "benchmark_table.csv")
    assert set(table["method"]) == {"original", "retrain", "ssd"}
    for name in ("benchmark_summary.csv", "summary.md", "roc_calibrated.png"):
        assert (out_dir / name).stat().st_size > 0


def _bad_inputs(f: dict[str, Path]) -> list[tuple[list, str]]:
    """(arguments, fragment of the one-line error) of every bad input."""
    r = f["root"]
    unlearn = ["unlearn", f["model"], "--adata", f["adata"], "--forget-cells", f["forget"]]
    unlearn_ssd = [*unlearn, "--method", "ssd", "--out", r / "unused"]
    audit = ["audit", r / "fake", "--original", f["model"], "--forget-cells", f["forget"]]
    bench = ["benchmark", "--adata", f["adata"], "--out", r / "unused"]
    return [
        # missing files and folders
        (
            ["unlearn", f["model"], "--adata", r / "nope.h5ad", "--forget-cells", f["forget"]]
            + ["--method", "ssd", "--out", r / "unused"],
            "--adata " + str(r / "nope.h5ad") + ": no such file",
        ),
        ([*unlearn[:5], r / "nope.txt", "--method", "ssd", "--out", r / "x"], "no such file"),
        ([*bench, "--forget-label", FORGET_LABEL, "--adata", r / "nope.h5ad"], "no such file"),
        ([*audit, "--adata", f["adata"], "--heldout-cells", r / "nope.txt"], "no such file"),
        (["unlearn", r, *unlearn[2:], "--method", "ssd", "--out", r / "x"], "no model.pt"),
        (
            ["unlearn", f["forget"], *unlearn[2:], "--method", "ssd", "--out", r / "x"],
            "not a saved scvi-tools model",
        ),
        ([*bench[:2], f["forget"], *bench[3:], "--forget-label", "x"], "cannot read it as"),
        ([*bench[:2], r / "dup.h5ad", *bench[3:], "--forget-label", "x"], "are duplicated"),
        # layers that are not counts
        ([*bench, "--layer", "X", "--forget-label", FORGET_LABEL], "must hold raw integer"),
        ([*bench, "--layer", "nope", "--forget-label", FORGET_LABEL], "has no layer 'nope'"),
        ([*unlearn_ssd[:3], r / "lognorm.h5ad", *unlearn_ssd[4:]], "was set up with it"),
        ([*unlearn_ssd[:3], f["rawlayer"], *unlearn_ssd[4:]], "has no layer 'counts'"),
        # unknown labels, label columns and cells
        ([*bench, "--forget-label", "Nope"], "Unknown label(s) ['Nope']"),
        ([*bench, "--forget-label", "x", "--label-key", "nope"], "--label-key 'nope' is not"),
        ([*bench, "--forget-cells", r / "unknown.txt"], "are not in"),
        (
            [*unlearn[:5], r / "unknown.txt", "--method", "ssd", "--out", r / "x"],
            "were not used to train the model",
        ),
        ([*audit[:5], r / "unknown.txt", "--adata", f["adata"]], "1 of its 2 cells are not in"),
        ([*audit, "--adata", f["adata"], "--label-key", "nope"], "--label-key 'nope' is not"),
        # held-out cells
        ([*audit, "--adata", f["nosplit"]], "has no held-out cells"),
        ([*audit, "--adata", f["adata"], "--heldout-cells", f["forget"]], "also in"),
        # methods and their hyper-parameters
        ([*unlearn, "--method", "nope", "--out", r / "x"], "Unknown unlearning method 'nope'"),
        ([*bench, "--forget-label", FORGET_LABEL, "--methods", "nope"], "Unknown unlearning"),
        ([*unlearn_ssd, "--param", "alpha"], "--param 'alpha' is not key=value"),
        ([*unlearn_ssd, "--param", "=3"], "is not key=value"),
        ([*unlearn_ssd, "--param", "alpha="], "has no value"),
        ([*unlearn_ssd, "--param", "alpha=1", "--param", "alpha=2"], "given twice"),
        ([*unlearn_ssd, "--param", "alpah=5"], "Did you mean ['alpha']"),
        ([*unlearn_ssd, "--param", "alpha=high"], "expects a value of type float"),
        # counts of references
        ([*audit, "--adata", f["adata"], "--n-references", "2"], "--n-references must be"),
    ]


def test_bad_inputs_exit_2_with_one_line(files, capsys):
    import anndata as ad

    r = files["root"]
    (r / "unknown.txt").write_text(f"{_forget_names(files)[0]}\nno-such-cell\n")
    lognorm = ad.read_h5ad(files["adata"])
    lognorm.layers["counts"] = lognorm.X.copy()  # log-normalized values under "counts"
    lognorm.write_h5ad(r / "lognorm.h5ad")
    dup = lognorm[:4].copy()
    dup.obs_names = ["cell-a", "cell-a", "cell-b", "cell-c"]
    dup.write_h5ad(r / "dup.h5ad")
    (r / "fake").mkdir(exist_ok=True)  # the audit's model folder: its errors come first
    (r / "fake" / "model.pt").touch()
    for argv, message in _bad_inputs(files):
        code, out, err = _run(argv)
        assert code == 2, (argv, out, err)
        assert message in err, (argv, err)
        assert err.startswith("scvi-unlearn: error: ") and err.count("\n") == 1, err
    assert not (r / "unused").exists() and not (r / "x").exists()


def test_argument_errors_exit_2(files, capsys):
    for argv in (
        ["benchmark", "--dataset", "pbmc68k", "--adata", files["adata"], "--forget-label", "x"],
        ["benchmark", "--forget-label", "x", "--forget-cells", files["forget"], "--out", "x"],
        ["unlearn", files["model"], "--adata", files["adata"], "--out", "x", "--method", "ssd"],
        ["audit", files["model"], "--adata", files["adata"], "--forget-cells", files["forget"]],
    ):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_unlearn_check_cells(files):
    """--check-cells: the retain check scores listed cells the model never trained on."""
    new = files["root"] / "checked"
    heldout = files["root"] / "heldout.txt"
    n = len(heldout.read_text().split())
    code, out, err = _run(
        ["unlearn", files["model"], "--adata", files["adata"], "--forget-cells", files["forget"]]
        + ["--method", "ssd", "--check-cells", heldout, "--out", new]
    )
    assert code == 0, err
    assert f"on check_cells ({n} cells, unseen by both)" in out
    # cells the model trained on are refused before anything is done
    code, _, err = _run(
        ["unlearn", files["model"], "--adata", files["adata"], "--forget-cells", files["forget"]]
        + ["--method", "ssd", "--check-cells", files["forget"], "--out", files["root"] / "x"]
    )
    assert code == 2 and "check_cells are in the training set" in err
    assert not (files["root"] / "x").exists()


def test_unlearn_check_tolerance_and_confidence(files):
    """--retain-tolerance / --retain-confidence reach the retain check and its record."""
    new = files["root"] / "confidence"
    base = ["unlearn", files["model"], "--adata", files["adata"], "--forget-cells"]
    base += [files["forget"], "--method", "ssd"]
    code, out, err = _run(
        base + ["--retain-tolerance", "0.05", "--retain-confidence", "0.5", "--out", new]
    )
    assert code == 0, err
    assert "50% bound" in out and "tolerance 5%" in out
    checks = json.loads((new / "unlearn_record.json").read_text())["checks"]
    assert checks["confidence"] == 0.5 and checks["tolerance"] == 0.05
    assert checks["relative_drop_upper"] == pytest.approx(checks["relative_drop"])
    # a level outside [0.5, 1) is refused before anything is saved
    bad = files["root"] / "bad_confidence"
    code, _, err = _run(base + ["--retain-confidence", "1.5", "--out", bad])
    assert code == 2 and "retain_confidence must be a number in [0.5, 1)" in err
    assert not bad.exists()
