#!/usr/bin/env bash
# Creates the bench-only virtualenv of Infinity (bench/bench_infinity.py's baseline) at <venv>/tools/infinity:
# infinity-emb 0.0.78 with its torch CPU engine starts only with transformers<5, against the main and the
# distill virtualenvs' pins, and it is large (torch): never part of `make install`, `make test` or CI.
# Usage: scripts/infinity-env.sh [VENV]   (default .venv)
#   --resolve: install from the open requirements instead of the pinned set, then print `pip freeze`
#              (how bench/requirements-infinity.txt was made).
set -euo pipefail
VENV="${1:-.venv}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$VENV/tools/infinity"
PINS="$ROOT/bench/requirements-infinity.txt"
STAMP="$DIR/.installed"
if [ "${2:-}" = "--resolve" ]; then
  "${PYTHON:-python3}" -m venv "$DIR"
  # torch==2.13.0: the CPU build from a local file on these machines; an open range pulls CUDA packages.
  "$DIR/bin/pip" install --quiet torch==2.13.0 'infinity-emb[server,torch]==0.0.78' 'transformers<5'
  "$DIR/bin/pip" freeze --all --exclude pip --exclude-editable  # --all: setuptools too (torch needs >=77)
  exit 0
fi
if [ ! -f "$STAMP" ] || [ "$PINS" -nt "$STAMP" ]; then
  echo "installing infinity-emb 0.0.78 (torch 2.13.0 CPU, transformers<5) into $DIR"
  "${PYTHON:-python3}" -m venv "$DIR"
  "$DIR/bin/pip" install --quiet --no-deps -r "$PINS"
  "$DIR/bin/pip" check
  touch "$STAMP"
fi
