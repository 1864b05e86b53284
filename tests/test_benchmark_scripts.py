"""The scripts of ``benchmarks/``: each imports, gives its command line (``--help``) without
training anything and writes the command that reproduces it in its docstring; the helpers they
share compute what their docstrings say.  The measurements themselves are not run here: they
take minutes to hours (``benchmarks/RESULTS.md``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pandas as pd
import pytest

import scvi_unlearn as su

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: modules of ``benchmarks/`` that are shared code, not scripts
HELPERS = {"verdict_grid"}
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem not in HELPERS)


@pytest.fixture
def benchmarks(monkeypatch):
    """``benchmarks/`` importable, as when a script runs from there."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


def test_benchmark_scripts_found():
    assert len(SCRIPTS) >= 25 and "scale_verdict" in SCRIPTS and "fit_match_scaling" in SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_gives_its_command_line(name, benchmarks, monkeypatch, capsys):
    module = benchmarks(name)
    assert f"benchmarks/{name}.py" in module.__doc__, "the docstring gives its command"
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    # the description is the docstring's first line (argparse re-wraps it, also at hyphens)
    assert "".join(module.__doc__.splitlines()[0].split()) in "".join(out.split())


def test_reference_folder_names(benchmarks):
    folder = benchmarks("equivalence_power").reference_folder
    assert folder("/c", "CD56+ NK (22)") == Path("/c/CD56p_NK")
    assert folder("/c", "CD14+ Monocyte (90)") == Path("/c/CD14p_Monocyte")
    assert folder("/c", "random (50)") == Path("/c/random")


def test_default_budget_follows_the_documented_rule(benchmarks):
    budget = benchmarks("scaling").default_budget
    # fast_retrain: min(E, max(30, ceil(0.15 E))), E the original's epochs
    assert [budget(su.unlearn.fast_retrain, e) for e in (8, 27, 80, 200, 400, 1000)] == [
        8,
        27,
        30,
        30,
        60,
        150,
    ]
    # rewind is not capped at the original's epochs
    rewind = [budget(su.unlearn.rewind, e) for e in (8, 400)]
    assert rewind[0] > 8 and rewind[1] >= rewind[0]


def test_verdict_summary_counts_runs(benchmarks):
    table = pd.DataFrame(
        {
            "forget set": ["A"] * 3 + ["B"],
            "method": ["m"] * 4,
            "time / retrain": [0.1, 0.2, 0.3, 0.5],
            "mean z": [0.1, -0.2, 2.5, 0.0],
            "decision": ["equivalent", "equivalent", "remembers", "equivalent"],
            "same-type ok": [True, False, False, True],
            "other types vs retrains (%)": [0.1, -0.2, 0.3, 0.0],
            "retain check drop (%)": [0.5, 1.0, -0.5, 0.0],
            "passed": [True, False, False, True],
        }
    )
    out = benchmarks("verdict_grid").summary(table)
    assert list(out["forget set"]) == ["A", "B"]
    a = out.iloc[0]
    assert a["passed"] == "1/3" and a["same-type ELBO ok"] == "1/3"
    assert a["time / retrain"] == "0.200"
    assert a["mean z (seeds)"] == "+0.10 / -0.20 / +2.50"
    assert a["decision"] == "equivalent 2/3, remembers 1/3"
    assert out.iloc[1]["passed"] == "1/1"
