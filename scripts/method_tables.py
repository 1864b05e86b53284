"""Rewrite the method tables of the docs from the registry (``su.unlearn.methods()``).

Every Markdown table whose header starts with ``| name |`` in ``docs/unlearning.md`` (the whole
registry) and ``docs/howto_choose_method.md`` (one table per group of kinds, :data:`GUIDE_GROUPS`)
is replaced by what ``scvi-unlearn methods --markdown --columns <its columns>`` prints, and the
``- **Measured**:`` line under each method's heading in ``docs/unlearning.md`` by the method's
``measured`` text (:func:`measured_lines`)::

    python scripts/method_tables.py          # rewrite the tables
    python scripts/method_tables.py --check  # exit 1 if one is out of date

``tests/test_methods_table.py`` checks the same tables with these functions.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: the method guide's tables, in order: the kinds each one lists
GUIDE_GROUPS = [("exact",), ("private",), ("approximate", "adversarial")]
#: page -> the kinds of each of its tables, in order (``None``: every method)
PAGES = {"unlearning.md": None, "howto_choose_method.md": GUIDE_GROUPS}


def registry_tables(page: str) -> list[tuple[list[str], int, int]]:
    """Every table of ``docs/<page>`` whose header starts with ``| name |``: its columns and its
    first and past-the-last line numbers."""
    lines = (DOCS / page).read_text().splitlines()
    tables = []
    for i, line in enumerate(lines):
        if line.startswith("| name |"):
            end = i
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            columns = [c.strip() for c in line.strip().strip("|").split("|")]
            tables.append((columns, i, end))
    return tables


def generated(columns: list[str], kinds=None, names=None) -> str:
    """What ``scvi-unlearn methods --markdown --columns ...`` prints (the methods of ``kinds``
    and, when given, of ``names`` only)."""
    import scvi_unlearn as su
    from scvi_unlearn.cli._methods import markdown

    table = su.unlearn.methods()
    if names is not None:
        table = table[table["name"].isin(names)]
    if kinds is not None:
        table = table[table["kind"].isin(kinds)]
    return markdown(table[columns].reset_index(drop=True))


#: the line of a method's subsection that quotes its registry ``measured`` text
MEASURED = "- **Measured**: "


def measured_lines(page: str = "unlearning.md") -> dict[str, tuple[int, str]]:
    """Method name -> (line number, text) of the ``- **Measured**:`` line under each
    ``#### `name``` heading of ``docs/<page>``."""
    lines = (DOCS / page).read_text().splitlines()
    found, name = {}, None
    for i, line in enumerate(lines):
        if line.startswith("#### `"):
            name = line.split("`")[1]
        elif name is not None and line.startswith(MEASURED):
            found[name] = (i, line[len(MEASURED) :])
            name = None
    return found


def expected_measured(name: str) -> str:
    """The ``- **Measured**:`` text of ``name`` (before the line's closing full stop): its
    registry ``measured`` text, or ``not measured`` when empty."""
    import scvi_unlearn as su

    measured = su.unlearn.guarantee(name)["measured"]
    return measured if measured else "not measured"


def rewrite_measured(page: str = "unlearning.md") -> bool:
    """Set every ``- **Measured**:`` line of ``page`` from the registry; whether it changed."""
    path = DOCS / page
    lines = path.read_text().splitlines()
    for name, (i, _) in measured_lines(page).items():
        lines[i] = MEASURED + expected_measured(name) + "."
    text = "\n".join(lines) + "\n"
    changed = text != path.read_text()
    path.write_text(text)
    return changed


def rewrite(page: str, groups) -> bool:
    """Regenerate the tables of ``page``; whether it changed."""
    path = DOCS / page
    lines = path.read_text().splitlines()
    tables = registry_tables(page)
    kinds = groups if groups is not None else [None] * len(tables)
    if len(kinds) != len(tables):
        raise SystemExit(f"{page}: {len(tables)} method tables, expected {len(kinds)}")
    for (columns, start, end), group in reversed(list(zip(tables, kinds, strict=True))):
        lines[start:end] = generated(columns, group).splitlines()
    text = "\n".join(lines) + "\n"
    changed = text != path.read_text()
    path.write_text(text)
    return changed


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for page, groups in PAGES.items():
        before = (DOCS / page).read_text()
        changed = rewrite(page, groups)
        changed = (page == "unlearning.md" and rewrite_measured(page)) or changed
        if changed:
            stale.append(page)
            if check:
                (DOCS / page).write_text(before)
    for page in stale:
        print(f"{'out of date' if check else 'rewrote'}: docs/{page}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
