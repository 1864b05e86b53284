"""The benchmark harness (``python -m benchmarks``): suites, configs and the commands the docs
quote.  Every config must build (its experiment exists, its parameters are known), every
``python -m benchmarks run`` command written in README, docs and RESULTS.md must name an existing
suite and config, and no old per-script command may remain.  The measurements themselves are not
run here (minutes to hours, ``benchmarks/RESULTS.md``), except the track suite's smoke config in
the slow job."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
from benchmarks import _harness as h
from benchmarks.__main__ import main

import scvi_unlearn as su

ROOT = Path(__file__).resolve().parents[1]
SUITES = h.load_suites()
CONFIGS = sorted(h.CONFIGS.glob("*/*.toml"))
#: files whose benchmark commands must resolve
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "benchmarks" / "RESULTS.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "tutorials").glob("*")),
]
_RUN = re.compile(r"python -m benchmarks run ([^`\n|]+)")


def test_every_suite_is_listed_with_its_configs(capsys):
    assert {"track"} <= set(SUITES)
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for suite, description in SUITES.items():
        assert f"{suite}: {description}" in out
        assert h.EXPERIMENTS.get(suite), f"suite {suite} registers no experiment"
        assert h.configs_of(suite), f"suite {suite} has no config"
        for path in h.configs_of(suite):
            assert f"config {path.stem}:" in out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_config_builds(path):
    suite = path.parent.name
    assert suite in SUITES, f"configs/{suite}/ is not a suite"
    exp, params, raw = h.build(suite, path, {})
    assert isinstance(params, exp.params)
    assert raw.get("description"), "a config says what it measures"


@pytest.mark.parametrize(
    "exp",
    [e for suite in h.EXPERIMENTS.values() for e in suite.values()],
    ids=lambda e: f"{e.suite}/{e.name}",
)
def test_every_parameter_is_documented(exp):
    # a parameter inherited from another experiment's parameters is documented there
    doc = "".join(cls.__doc__ or "" for cls in exp.params.__mro__)
    for field in dataclasses.fields(exp.params):
        # a numpydoc entry names it alone or with others ("cells, genes")
        entry = rf"^\s*(?:\w+, )*{field.name}(?:, \w+)*\s*$"
        assert re.search(entry, doc, re.M), f"{exp.suite}/{exp.name}: {field.name} undocumented"


def _commands() -> list[tuple[Path, str]]:
    found = []
    for path in DOCUMENTS:
        if path.is_file():
            for match in _RUN.finditer(path.read_text()):
                found.append((path, match.group(1).strip()))
    return found


def test_documented_commands_name_existing_suites_and_configs():
    commands = _commands()
    assert commands, "the docs quote benchmark commands"
    for path, command in commands:
        words = shlex.split(command.replace("\\", " "), comments=True)
        suite = words[0]
        if suite.isupper():  # the syntax, "run SUITE --config NAME"
            continue
        assert suite in SUITES, f"{path.name}: unknown suite in {command!r}"
        config = words[words.index("--config") + 1] if "--config" in words else None
        if config is not None and "<" not in config:  # "<name>" placeholders in prose
            h.resolve_config(suite, config)
        for i, word in enumerate(words):
            if word == "--set":
                key, _ = h.parse_override(words[i + 1])
                exp, _, _ = h.build(suite, h.resolve_config(suite, config), {})
                fields = {f.name for f in dataclasses.fields(exp.params)}
                assert key in fields, f"{path.name}: {command!r} sets unknown {key!r}"


def test_no_per_script_commands_remain():
    old = re.compile(r"python benchmarks/\w+\.py|benchmarks/\w+\.py")
    for path in [*DOCUMENTS, *ROOT.joinpath("src").rglob("*.py")]:
        if path.is_file():
            hits = [m for m in old.findall(path.read_text()) if "benchmarks/_" not in m]
            assert not hits, f"{path.relative_to(ROOT)} still names {hits}"


def test_overrides_are_toml_values_or_strings():
    assert h.parse_override("seeds=3") == ("seeds", 3)
    assert h.parse_override("lr=1e-2") == ("lr", 0.01)
    assert h.parse_override('sets=["random (50)"]') == ("sets", ["random (50)"])
    assert h.parse_override("method=scrub") == ("method", "scrub")
    assert h.parse_override("fixed-epochs=2") == ("fixed_epochs", 2)
    with pytest.raises(SystemExit, match="key=value"):
        h.parse_override("seeds")


@pytest.fixture
def dummy_suite(tmp_path, monkeypatch):
    """A suite ``dummy`` with one experiment and one config, in place of the real ones."""

    @dataclasses.dataclass
    class Params(h.Common):
        """Attributes
        ----------
        n
            Rows.
        """

        n: int = 2

    def table(params):
        """Doubles of range(n)."""
        return {
            "doubles": pd.DataFrame({"i": range(params.n), "2i": [2 * i for i in range(params.n)]})
        }

    (tmp_path / "dummy").mkdir()
    (tmp_path / "dummy" / "default.toml").write_text(
        'experiment = "table"\ndescription = "a dummy"\n[params]\nn = 3\n'
    )
    monkeypatch.setattr(h, "CONFIGS", tmp_path)
    monkeypatch.setattr(h, "load_suites", lambda: {"dummy": "A dummy suite."})
    monkeypatch.setitem(
        h.EXPERIMENTS, "dummy", {"table": h.Experiment("dummy", "table", table, Params)}
    )
    return tmp_path


def test_run_prints_tables_under_their_command_and_writes_them(dummy_suite, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "dummy", "--set", "n=4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "`python -m benchmarks run dummy --config default --set n=4`" in printed
    assert "| i | 2i |\n|---|---|\n| 0 | 0 |" in printed and "| 3 | 6 |" in printed
    assert pd.read_csv(out / "doubles.csv")["2i"].tolist() == [0, 2, 4, 6]
    meta = json.loads((out / "run.json").read_text())
    assert meta["params"]["n"] == 4 and meta["experiment"] == "table"


def test_bad_configs_are_clear_errors(dummy_suite):
    config = dummy_suite / "dummy" / "default.toml"
    with pytest.raises(SystemExit, match=r"unknown parameter\(s\) \['m'\].*accepts"):
        h.build("dummy", config, {"m": 1})
    with pytest.raises(
        SystemExit, match="No config 'nope' for suite 'dummy'. Its configs: default"
    ):
        h.resolve_config("dummy", "nope")
    (dummy_suite / "dummy" / "bad.toml").write_text('experiment = "nope"\n')
    with pytest.raises(SystemExit, match="experiment 'nope' is not in suite 'dummy'"):
        h.build("dummy", dummy_suite / "dummy" / "bad.toml", {})
    (dummy_suite / "dummy" / "typo.toml").write_text('experiment = "table"\nparms = 1\n')
    with pytest.raises(SystemExit, match=r"unknown top-level key\(s\) \['parms'\]"):
        h.build("dummy", dummy_suite / "dummy" / "typo.toml", {})
    with pytest.raises(SystemExit, match="Unknown suite 'nope'"):
        main(["run", "nope"])


def test_markdown_marks_missing_values():
    table = pd.DataFrame({"a": [1.5, float("nan")], "b": ["x|y", "z"]})
    assert h.markdown(table) == "| a | b |\n|---|---|\n| 1.5 | x\\|y |\n| - | z |"


def test_track_compare_flags_slowdowns_and_memory(tmp_path):
    from benchmarks.suites.track import compare

    def run(seconds, mb):
        rows = [
            {"cells": 1000, "measure": "unlearn ssd", "seconds": seconds, "peak memory (MB)": mb}
        ]
        return {"rows": rows}

    (tmp_path / "a.json").write_text(json.dumps(run(1.0, 100)))
    (tmp_path / "b.json").write_text(json.dumps(run(1.5, 110)))
    table = compare(tmp_path / "a.json", tmp_path / "b.json", threshold=1.2)
    assert table.loc[0, "time ratio"] == 1.5 and table.loc[0, "memory ratio"] == 1.1
    assert table.loc[0, "flag"] == "slower"
    assert compare(tmp_path / "b.json", tmp_path / "a.json").loc[0, "flag"] == ""
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--fail"]) == 1


def test_reference_folder_names():
    from benchmarks.suites._settings import reference_folder

    assert reference_folder("/c", "CD56+ NK (22)") == Path("/c/CD56p_NK")
    assert reference_folder("/c", "CD14+ Monocyte (90)") == Path("/c/CD14p_Monocyte")
    assert reference_folder("/c", "random (50)") == Path("/c/random")


def test_default_budget_follows_the_documented_rule():
    from benchmarks.suites._settings import default_budget

    # fast_retrain: min(E, max(30, ceil(0.15 E))), E the original's epochs
    assert [default_budget(su.unlearn.fast_retrain, e) for e in (8, 27, 80, 200, 400, 1000)] == [
        8,
        27,
        30,
        30,
        60,
        150,
    ]
    # rewind is not capped at the original's epochs
    rewind = [default_budget(su.unlearn.rewind, e) for e in (8, 400)]
    assert rewind[0] > 8 and rewind[1] >= rewind[0]


def test_verdict_summary_counts_runs():
    from benchmarks.suites.verdict import summary

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
    out = summary(table)
    assert list(out["forget set"]) == ["A", "B"]
    a = out.iloc[0]
    assert a["passed"] == "1/3" and a["same-type ELBO ok"] == "1/3"
    assert a["time / retrain"] == "0.200"
    assert a["mean z (seeds)"] == "+0.10 / -0.20 / +2.50"
    assert a["decision"] == "equivalent 2/3, remembers 1/3"
    assert out.iloc[1]["passed"] == "1/1"


@pytest.mark.slow
def test_track_smoke_config_runs_end_to_end(tmp_path, capsys):
    assert main(["run", "track", "--config", "smoke", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for measure in ("unlearn fast_retrain (fixed)", "unlearn ssd", "audit threshold", "audit mlp"):
        assert f"| 1000 | {measure} |" in out
