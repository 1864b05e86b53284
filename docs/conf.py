"""Sphinx configuration of the scvi-unlearn documentation (scverse cookiecutter layout).

Build: ``bash scripts/docs.sh`` (warnings are errors, every tutorial notebook is executed).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from datetime import date
from importlib.metadata import metadata
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))

# -- Project information -----------------------------------------------------------------------

info = metadata("scvi-unlearn")
project = "scvi-unlearn"
author = info["Author"] or "scvi-unlearn developers"
copyright = f"{date.today():%Y}, {author}"
version = info["Version"]
release = version

# -- General configuration ---------------------------------------------------------------------

extensions = [
    "myst_nb",  # Markdown pages and MyST Markdown notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # numpydoc-style docstrings
    "sphinx_autodoc_typehints",  # after napoleon
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxcontrib.bibtex",
    "sphinx_copybutton",
    "api_docs",  # docs/_ext/api_docs.py: every public name in api.md, constants documented
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
default_role = "literal"
nitpicky = False  # no intersphinx inventories offline: external types cannot resolve

# -- MyST and notebooks ------------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist", "html_image"]
myst_heading_anchors = 3
# A link to a missing page or heading is a warning, hence an error under -W.
myst_all_links_external = False

# The tutorials (tutorials/*.md, MyST Markdown notebooks, reached through the docs/tutorials
# symlink) run during every build; outputs are never committed.  "cache" re-executes a
# notebook only when its code changed (jupyter-cache in docs/_build/.jupyter_cache); a
# failing cell fails the build.
nb_execution_mode = "cache"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_render_markdown_format = "gfm"  # Markdown outputs (the benchmark's tables) are GFM tables

# -- Autodoc / autosummary ---------------------------------------------------------------------

autosummary_generate = True
autosummary_imported_members = True


def _own_members(cls: type, package: str = "scvi_unlearn") -> list[str]:
    """Public members of ``cls`` defined by ``package`` (the class itself or its mixins)."""
    names = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        for klass in cls.__mro__:
            if name in vars(klass) or name in getattr(klass, "__annotations__", {}):
                if klass.__module__.startswith(package):
                    names.append(name)
                break
    return names


# scvi_unlearn.SCVI's page documents what this package adds to scvi.model.SCVI (its own
# members and its mixins'); the members of scvi.model.SCVI and its bases are documented by
# scvi-tools (their docstrings cite scvi-tools' own bibliography).  autodoc's
# ":inherited-members: SCVI" does not exclude them on Sphinx 9, hence an explicit list.
autosummary_context = {"scvi_members": _own_members(importlib.import_module("scvi_unlearn").SCVI)}
# Classes document the members they define (_templates/autosummary/class.rst), not those
# inherited from Lightning, torch or scvi-tools.
autodoc_member_order = "groupwise"
autodoc_default_options = {"show-inheritance": True}
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "braces"
always_use_bars_union = True
typehints_document_rtype = True

# -- Citations ---------------------------------------------------------------------------------

bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
bibtex_default_style = "plain"

# -- HTML --------------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = "scvi-unlearn"
html_static_path: list[str] = []
html_theme_options = {"show_toc_level": 2, "use_download_button": True}
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

# -- Public API, for api_docs -----------------------------------------------------------------

#: the modules whose ``__all__`` must be covered by api.md (docs/_ext/api_docs.py)
api_check_modules = [
    "scvi_unlearn",
    "scvi_unlearn.model",
    "scvi_unlearn.attack",
    "scvi_unlearn.unlearn",
    "scvi_unlearn.fisher",
    "scvi_unlearn.metrics",
    "scvi_unlearn.data",
    "scvi_unlearn.benchmark",
    "scvi_unlearn.toy",
]


# -- Hooks -------------------------------------------------------------------------------------

_SUMMARY = re.compile(r"^reproduction/(?P<folder>[^/]+)/summary$")


def _title_benchmark_summaries(app, docname: str, source: list[str]) -> None:
    """Give the benchmark's generated summary.md files (no heading) a page title when read."""
    if match := _SUMMARY.match(docname):
        source[0] = f"# Full benchmark tables: {match['folder']}\n\n" + source[0]


# a relative Markdown link target, without its #anchor (external URLs and path: links excluded)
_LINK = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:|#)([^)#\s]+)(#[^)\s]*)?\)")


def _outside_links_to_downloads(app, docname: str, source: list[str]) -> None:
    """Links from a page to a repository file outside docs/ (``../benchmarks/RESULTS.md``)
    become download links, as MyST makes links to any other non-page file; Sphinx would
    otherwise take the linked ``.md`` file for a page that is missing.  The files themselves
    keep their plain relative links, which work on GitHub."""
    srcdir = Path(app.srcdir)
    docdir = (srcdir / docname).parent

    def to_download(match: re.Match) -> str:
        target = Path(os.path.normpath(docdir / match[1]))
        outside = not target.is_relative_to(srcdir)
        if outside and target.suffix in source_suffix and target.is_file():
            return f"](path:{match[1]})"
        return match[0]

    source[0] = _LINK.sub(to_download, source[0])


def setup(app) -> None:
    app.connect("source-read", _title_benchmark_summaries)
    app.connect("source-read", _outside_links_to_downloads)
