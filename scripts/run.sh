#!/usr/bin/env bash
# Fresh-machine entry point: `bash scripts/run.sh demo` (the main job), `bash scripts/run.sh test`
# or `bash scripts/run.sh docs` (the documentation site, warnings as errors: scripts/docs.sh).
# Creates ./.venv once (the local CPU torch 2.13.0 first, so no dependency pulls a CUDA build),
# installs the package with its test, dev and atlas extras (atlas: tiledbsoma and tiledbsoma-ml,
# ~250 MB, for the TileDB-SOMA tests), then runs the requested job.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import scvi_unlearn, xdist, tiledbsoma" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q torch==2.13.0
  "$VENV/bin/python" -m pip install -q -e ".[test,dev,atlas]"
fi
export PATH="$VENV/bin:$PATH"
job="${1:-}"
shift || true
case "$job" in
  demo)
    scvi-unlearn demo "$@"
    ;;
  test)
    ruff check .
    ruff format --check .
    # one worker per core, each test file on one worker (its module fixtures trained once)
    python -m pytest -m "not slow" -q -p no:cacheprovider -n auto --dist loadfile "$@"
    ;;
  docs)
    VENV="$VENV" bash scripts/docs.sh "$@"
    ;;
  *)
    echo "usage: bash scripts/run.sh {demo|test|docs} [args...]" >&2
    exit 2
    ;;
esac
