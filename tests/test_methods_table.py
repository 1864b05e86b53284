"""The registry's table of what each method guarantees: ``su.unlearn.methods()``."""

from __future__ import annotations

import pytest

import scvi_unlearn as su
from conftest import load_script
from scvi_unlearn.benchmark._arguments import all_methods, original_train_kwargs, resolve_arguments

#: built-in method -> (kind, exact, private)
BUILT_IN = {
    "retrain": ("exact", True, False),
    "fast_retrain": ("exact", True, False),
    "dp_sgd": ("private", True, True),
    "finetune": ("approximate", False, False),
    "gradient_ascent": ("approximate", False, False),
    "ssd": ("approximate", False, False),
    "scrub": ("approximate", False, False),
    "contrastive": ("approximate", False, False),
    "fisher": ("approximate", False, False),
    "reinit_finetune": ("approximate", False, False),
    "rewind": ("approximate", False, False),
    "distill": ("approximate", False, False),
    "langevin": ("approximate", False, False),
    "conditional_reset": ("approximate", False, False),
    "extragradient": ("adversarial", False, False),
    "mi_regularized": ("adversarial", False, False),
}


@pytest.fixture()
def registered():
    """Register throw-away methods; remove them afterwards."""
    added = []

    def _register(name, **kwargs):
        def method(task, *, max_epochs=1):
            return task.new_model(copy_weights=True)

        su.unlearn.register(name, **kwargs)(method)
        added.append(name)
        return method

    yield _register
    for name in added:
        su.unlearn.METHODS.pop(name, None)
        su.unlearn.FROM_SCRATCH.discard(name)


def test_columns_and_one_row_per_method():
    table = su.unlearn.methods()
    assert tuple(table.columns) == su.unlearn.METHOD_COLUMNS
    assert sorted(table["name"]) == sorted(su.unlearn.METHODS)
    assert table["name"].is_unique
    kinds = list(table["kind"])
    assert kinds == sorted(kinds, key=su.unlearn.KINDS.index)  # exact first


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_built_in_rows(name):
    row = su.unlearn.guarantee(name)
    assert (row["kind"], row["exact"], row["private"]) == BUILT_IN[name]
    assert row["exact"] == (name in su.unlearn.FROM_SCRATCH)
    assert row["reference"]  # every built-in cites its paper or origin
    assert row["guarantee"].startswith("exact" if row["exact"] else ("none", "exact for"))
    expected = {"fast_retrain": "default", "retrain": "recommended", "dp_sgd": "recommended"}
    assert row["status"] == expected.get(name, "research baseline")


def test_measured_cites_its_source():
    table = su.unlearn.methods()
    measured = table.loc[table["measured"] != "", "measured"]
    assert len(measured) >= 14  # all but conditional_reset: left empty, not invented
    for text in measured:  # a source (a docs page or the benchmark results) and a cost ratio
        assert ("docs/" in text or "benchmarks/RESULTS.md" in text) and "x" in text, text
    assert su.unlearn.guarantee("conditional_reset")["measured"] == ""


def test_default_row_is_the_default_method():
    table = su.unlearn.methods()
    assert list(table.loc[table["status"] == "default", "name"]) == [su.unlearn.DEFAULT_METHOD]


def test_user_method_rows(registered):
    registered("table_user_approx")
    row = su.unlearn.guarantee("table_user_approx")
    assert row["kind"] == "approximate" and not row["exact"] and not row["private"]
    assert row["status"] == "user" and row["reference"] == "" and row["measured"] == ""
    assert row["guarantee"].startswith("none") and row["benchmark"] is False
    registered("table_user_exact", from_scratch=True, reference="me 2026", benchmark=True)
    row = su.unlearn.guarantee("table_user_exact")
    assert row["kind"] == "exact" and row["exact"] and row["reference"] == "me 2026"
    assert "table_user_exact" in su.unlearn.FROM_SCRATCH
    registered("table_user_dp", from_scratch=True, private=True)
    assert su.unlearn.guarantee("table_user_dp")["kind"] == "private"
    registered("table_user_adv", kind="adversarial", status="recommended")
    row = su.unlearn.guarantee("table_user_adv")
    assert row["kind"] == "adversarial" and row["status"] == "recommended"
    names = set(su.unlearn.methods()["name"])
    assert {"table_user_approx", "table_user_exact", "table_user_dp"} <= names
    # benchmark=True puts it in methods="all"; the others are run when named
    assert "table_user_exact" in all_methods()
    assert "table_user_approx" not in all_methods()


def test_user_method_row_goes_with_its_registration(registered):
    registered("table_user_gone")
    su.unlearn.METHODS.pop("table_user_gone")
    assert "table_user_gone" not in set(su.unlearn.methods()["name"])
    with pytest.raises(ValueError, match="Unknown unlearning method 'table_user_gone'"):
        su.unlearn.guarantee("table_user_gone")


def test_reregistering_the_same_function_keeps_its_metadata():
    func = su.unlearn.METHODS["retrain"]
    try:
        su.unlearn.register("retrain", overwrite=True)(func)
        row = su.unlearn.guarantee("retrain")
        assert not row["exact"] and row["kind"] == "approximate"
        assert row["status"] == "recommended" and "Bourtoule" in row["reference"]
    finally:
        su.unlearn.register("retrain", from_scratch=True, overwrite=True)(func)
    assert su.unlearn.guarantee("retrain")["kind"] == "exact"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "exact"}, "needs from_scratch=True"),
        ({"kind": "private", "from_scratch": True, "private": False}, "contradicts private"),
        ({"kind": "approximate", "from_scratch": True}, "contradicts from_scratch"),
        ({"kind": "magic"}, "kind must be one of"),
        ({"status": "default"}, "reserved for DEFAULT_METHOD"),
    ],
)
def test_register_rejects_contradictions(kwargs, match):
    with pytest.raises(ValueError, match=match):
        su.unlearn.register("table_bad", **kwargs)
    assert "table_bad" not in su.unlearn.METHODS


def test_benchmark_all_reads_the_table():
    table = su.unlearn.methods()
    expected = list(table.loc[table["benchmark"], "name"])
    methods, *_ = resolve_arguments("all", 1, 3, [0.5], "calibrated")
    assert methods == expected
    assert list(su.benchmark.ALL_METHODS) == expected
    # the references and the ConditionalSCVI-only method are not among them
    assert "retrain" not in expected and "conditional_reset" not in expected
    assert {"fast_retrain", "dp_sgd", "scrub", "rewind"} <= set(expected)
    assert "rewind_epoch" in original_train_kwargs("all", {"max_epochs": 10})


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="Unknown unlearning method 'nope'.*fast_retrain"):
        su.unlearn.guarantee("nope")


#: scripts/method_tables.py, the regenerator of the docs' method tables
TABLES = load_script("method_tables")


def _registry_tables(page: str) -> list[tuple[list[str], str]]:
    """Every method table of ``docs/<page>``: its columns and its text."""
    lines = (TABLES.DOCS / page).read_text().splitlines()
    return [(c, "\n".join(lines[a:b])) for c, a, b in TABLES.registry_tables(page)]


def _generated(columns: list[str], kinds: tuple[str, ...] | None = None) -> str:
    """What ``scvi-unlearn methods --markdown --columns ...`` prints for the built-in methods
    (of ``kinds``): the text a docs table must equal."""
    return TABLES.generated(columns, kinds, names=BUILT_IN)


def test_docs_table_is_the_registry_table():
    """docs/unlearning.md's method tables are the output of su.unlearn.methods()."""
    tables = _registry_tables("unlearning.md")
    assert [columns for columns, _ in tables] == [
        ["name", "kind", "exact", "private", "status", "measured"],
        ["name", "guarantee", "reference"],
    ]
    for columns, text in tables:
        assert text == _generated(columns), "out of date: python scripts/method_tables.py"


def test_method_guide_is_the_registry_table():
    """docs/howto_choose_method.md: the registry's table split by kind (exact, private,
    approximate and adversarial), every built-in method once, each table as generated."""
    tables = _registry_tables("howto_choose_method.md")
    assert len(tables) == len(TABLES.GUIDE_GROUPS)
    assert {k for group in TABLES.GUIDE_GROUPS for k in group} == set(su.unlearn.KINDS)
    listed = []
    for (columns, text), kinds in zip(tables, TABLES.GUIDE_GROUPS, strict=True):
        assert columns == ["name", "status", "guarantee", "measured"]
        expected = _generated(columns, kinds)
        assert text == expected, (
            f"the {'/'.join(kinds)} table is out of date: python scripts/method_tables.py"
        )
        listed += [line.split(" | ")[0].strip("| `") for line in text.splitlines()[2:]]
    assert sorted(listed) == sorted(BUILT_IN)


def test_cli_methods_prints_the_table(capsys):
    from scvi_unlearn.cli import main

    assert main(["methods", "--markdown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| name | kind | exact | private | status | measured |"
    assert len(out) == 2 + len(su.unlearn.METHODS)
    assert out[2].startswith(f"| `{su.unlearn.DEFAULT_METHOD}` | exact | True | False | default |")
    assert main(["methods", "--columns", "name", "benchmark"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "benchmark"]
    flagged = [line.split()[0] for line in lines[1:] if line.split()[1] == "True"]
    assert flagged == list(all_methods())
    assert main(["methods", "--columns", "nope"]) == 2
    assert "unknown ['nope']" in capsys.readouterr().err


def test_cli_help_lists_the_registered_methods():
    from scvi_unlearn.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    help_text = sub.choices["unlearn"].format_help().replace("\n", " ")
    help_text = " ".join(help_text.split())
    for name in su.unlearn.METHODS:
        assert name in help_text


def test_each_methods_section_quotes_its_measured_verdict():
    """docs/unlearning.md: every built-in method's subsection has a Measured line, and it is the
    registry's ``measured`` text (``python scripts/method_tables.py`` rewrites it)."""
    found = TABLES.measured_lines("unlearning.md")
    assert set(found) == set(BUILT_IN)
    for name, (_, text) in found.items():
        assert text == TABLES.expected_measured(name) + ".", (
            f"{name}: out of date: python scripts/method_tables.py"
        )
