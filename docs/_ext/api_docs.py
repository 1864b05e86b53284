"""Sphinx extension for the API reference (api.md).

1. Warn (an error under ``-W``) when a public name is missing from api.md: every name in the
   ``__all__`` of the modules listed in the config value ``api_check_modules`` must appear in
   an ``autosummary`` block of ``api.md`` under the matching ``module`` / ``currentmodule``
   (or be the same class or function as a name listed elsewhere: ``scvi_unlearn.model.SCVI``
   is ``scvi_unlearn.SCVI``).  Subpackages and dunder names are skipped.  Names listed in
   api.md that do not exist are warned about too.
2. Document the package's constants (``su.unlearn.METHODS``, ``su.data.SPLIT_KEY``, ...) with
   the ``#:`` comment at their definition in a private module.  autodoc only reads ``#:``
   comments of the module it documents from (the public ``__init__``), and otherwise falls
   back to the docstring of the value's *type* (``dict``, ``str``, ``DataFrame``), which is not
   their documentation.  Short values are shown; long ones (registries, tables) are not.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from functools import cache
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

logger = logging.getLogger(__name__)

_CURRENT = re.compile(r"^\s*\.\. (?:current)?module:: (\S+)\s*$")
_AUTOSUMMARY = re.compile(r"^\s*\.\. autosummary::")
_ENTRY = re.compile(r"^\s+~?([A-Za-z_][\w.]*)\s*$")


def documented_names(text: str) -> set[str]:
    """Full names of the entries of every autosummary block in ``text`` (reStructuredText)."""
    names: set[str] = set()
    current = ""
    in_block = False
    for line in text.splitlines():
        if match := _CURRENT.match(line):
            current, in_block = match.group(1), False
        elif _AUTOSUMMARY.match(line):
            in_block = True
        elif in_block and line.strip().startswith(("```", ".. ")):
            in_block = False
        elif in_block and (match := _ENTRY.match(line)):
            name = match.group(1)
            names.add(name if name.startswith(current + ".") else f"{current}.{name}")
    return names


def _resolve(full_name: str):
    module_name, _, attr = full_name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return None


def check_api(app: Sphinx) -> None:
    api = Path(app.srcdir) / "api.md"
    documented = documented_names(api.read_text())
    objects = [_resolve(name) for name in documented]
    shared = [obj for obj in objects if inspect.isclass(obj) or inspect.isfunction(obj)]
    for module_name in app.config.api_check_modules:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if name.startswith("__") or inspect.ismodule(obj):
                continue
            full = f"{module_name}.{name}"
            if full in documented or any(obj is other for other in shared):
                continue
            logger.warning(f"api.md: public name {full} is not documented", location=str(api))
    for name, obj in zip(documented, objects):
        if obj is None:
            logger.warning(f"api.md: {name} does not exist", location=str(api))


@cache
def _defining_module(package: str, name: str) -> str:
    """The module a package's ``__init__`` imports ``name`` from (``package`` if none)."""
    source = Path(importlib.import_module(package).__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if any((alias.asname or alias.name) == name for alias in node.names):
                return node.module
    return package


def _constant_doc(package: str, name: str) -> list[str]:
    analyzer = ModuleAnalyzer.for_module(_defining_module(package, name))
    analyzer.analyze()
    return list(analyzer.attr_docs.get(("", name), []))


#: longest value repr shown on a constant's page
_MAX_VALUE = 80


def document_constant(app: Sphinx, what: str, name: str, obj, options, lines: list[str]) -> None:
    if what != "data" or not name.startswith("scvi_unlearn."):
        return
    package, _, attr = name.rpartition(".")
    doc = _constant_doc(package, attr)
    while doc and not doc[-1].strip():
        doc.pop()
    value = repr(obj)
    if len(value) <= _MAX_VALUE and "\n" not in value:
        doc += ["", f"Value: ``{value}``"]
    lines[:] = doc + [""]


def setup(app: Sphinx) -> dict:
    app.add_config_value("api_check_modules", [], "env")
    app.connect("builder-inited", check_api)
    app.connect("autodoc-process-docstring", document_constant)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
