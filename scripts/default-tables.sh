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
if ! has_version minilm; then
  echo "building table 'minilm' from the MiniLM-L6 token embedding layer (30,522 x 384, ~5 s)"
  "$BIN/embserve-train" import --format minilm-sample --tables "$TABLES" --name minilm
fi
if ! has_version minilm-distilled; then
  # model2vec runs in its own virtualenv (its pins conflict with the main one's): built on first need only.
  "$(dirname "$0")/distill-env.sh" "$(dirname "$BIN")"
  echo "distilling table 'minilm-distilled' from all-MiniLM-L6-v2 with model2vec (30k tokens x 256, ~1 min on 2 cores)"
  "$BIN/embserve-train" distill --from minilm-sample --tables "$TABLES" --name minilm-distilled
fi
GCIDE="${GCIDE:-/usr/share/dictd/gcide.dict.dz}"
if ! has_version gcide; then
  [ -f "$GCIDE" ] || "$(dirname "$0")/system-deps.sh" serve
  echo "training table 'gcide' on $GCIDE (skip-gram 100d, 5 epochs: ~3 min on 2 cores)"
  "$BIN/embserve-train" train --corpus "$GCIDE" --tables "$TABLES" --name gcide --model skipgram --dim 100 --epochs 5
fi
