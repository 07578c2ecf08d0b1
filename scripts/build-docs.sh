#!/usr/bin/env bash
# Build the manual (docs/) into a static site, strictly: any warning fails the build (a broken link or
# anchor, a cross-reference into embserve's packages that resolves to nothing, a docstring autodoc
# cannot read, a name of embserve_client.__all__ missing from the reference).
#   scripts/build-docs.sh [OUT [SRC]]     default OUT docs/_build/html, SRC docs
# PYTHON picks the interpreter (make docs passes the venv's). The one home of the build's options:
# `make docs` and tests/test_docs_site.py both run this script.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/docs/_build/html}
SRC=${2:-$ROOT/docs}
PYTHON=${PYTHON:-python3}
# -W: warnings are errors; --keep-going: report all of them first; -n: nitpicky cross-references;
# -E: read every page again (generated pages depend on code Sphinx does not track); -q: warnings only.
exec "$PYTHON" -m sphinx -W --keep-going -n -E -q -b html -d "$(dirname "$OUT")/.doctrees" "$SRC" "$OUT"
