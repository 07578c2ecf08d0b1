#!/usr/bin/env bash
# Builds the default tables under $TABLES when no version of them exists yet.
set -euo pipefail
TABLES="${TABLES:-tables}"
BIN="${BIN:-.venv/bin}"
has_version() { compgen -G "$TABLES/$1/[0-9]*" >/dev/null; }
if ! has_version glove; then
  echo "building table 'glove' from the GloVe 6B 50d sample (400k x 50, HNSW index: ~2 min)"
  "$BIN/embserve-train" import --format glove-6b-50d --tables "$TABLES" --name glove
fi
