#!/usr/bin/env bash
# Creates the virtualenv that runs model2vec's distillation (embserve-train distill finds it at
# <venv>/tools/distill): its pins (constraints-distill.txt) cannot share the main virtualenv.
# Usage: scripts/distill-env.sh [VENV]   (default .venv); `--bench` also installs the bench's transformer baseline.
set -euo pipefail
VENV="${1:-.venv}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$VENV/tools/distill"
STAMP="$DIR/.installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/constraints-distill.txt" -nt "$STAMP" ]; then
  echo "installing model2vec[distill] into $DIR (torch 2.13.0 CPU from a local wheel, transformers 5.3.0)"
  "${PYTHON:-python3}" -m venv "$DIR"
  "$DIR/bin/pip" install --quiet -c "$ROOT/constraints-distill.txt" torch==2.13.0 'model2vec[distill]==0.10.0' scikit-learn  # model2vec.distill imports its vocabulary quantization (sklearn)
  touch "$STAMP"
fi
if [ "${2:-}" = "--bench" ]; then
  "$DIR/bin/pip" install --quiet -c "$ROOT/constraints-distill.txt" -r "$ROOT/bench/requirements-distill.txt"
fi
