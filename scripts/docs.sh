#!/usr/bin/env bash
# Build the documentation site: `bash scripts/docs.sh` (or `bash scripts/run.sh docs`, which CI runs).
# Installs the `docs` extra into the virtual environment ($VENV, default ./.venv, created by
# scripts/run.sh) when it is missing, then runs Sphinx with warnings as errors (-W --keep-going:
# every warning is reported, then the build fails), executing every tutorial notebook
# (myst-nb; a failing cell fails the build; broken internal links are warnings, hence errors).
# Output: docs/_build/html/index.html. Executed notebooks are cached in docs/_build/.jupyter_cache
# (a rebuild re-runs only the tutorials whose code changed); `--clean` deletes docs/_build and
# the generated API pages first. Extra arguments go to sphinx-build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  # a fresh machine: scripts/run.sh creates the environment (CPU torch first), then calls back
  exec bash scripts/run.sh docs "$@"
fi
if ! "$VENV/bin/python" -c "import sphinx, myst_nb, sphinx_book_theme, sphinxcontrib.bibtex, \
sphinx_copybutton, sphinx_autodoc_typehints, ipykernel, jupytext, ipywidgets" 2>/dev/null; then
  # torch is already installed (CPU build): the docs extra does not pull another one
  "$VENV/bin/python" -m pip install -q -e ".[docs]"
fi
if [ "${1:-}" = "--clean" ]; then
  shift
  rm -rf docs/_build docs/generated
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
"$VENV/bin/python" -m sphinx -W --keep-going -b html docs docs/_build/html "$@"
