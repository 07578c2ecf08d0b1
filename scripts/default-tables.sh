#!/usr/bin/env bash
# Builds the default tables under $TABLES when no version of them exists yet.
#   scripts/default-tables.sh                 minilm, glove, gcide, minilm-distilled (fastest first)
#   scripts/default-tables.sh glove gcide     only those
# Where the time goes on 2 cores: minilm ~5 s (a copy of a token embedding layer); glove ~2 min
# (an HNSW32 index over 400k x 50, tuned); gcide ~2-3 min (skip-gram training on 4.5M words);
# minilm-distilled ~1 min uncontended (model2vec distils all-MiniLM-L6-v2 in its own virtualenv, created
# here on first need: scripts/distill-env.sh; 11 min on a 2-core box shared with other jobs, 2026-12-06).
set -euo pipefail
TABLES="${TABLES:-tables}"
BIN="${BIN:-.venv/bin}"
GCIDE="${GCIDE:-/usr/share/dictd/gcide.dict.dz}"
has_version() { compgen -G "$TABLES/$1/[0-9]*" >/dev/null; }
build() {
  case "$1" in
    minilm)
      echo "building table 'minilm' from the MiniLM-L6 token embedding layer (30,522 x 384, ~5 s)"
      "$BIN/embserve-train" import --format minilm-sample --tables "$TABLES" --name minilm ;;
    glove)
      echo "building table 'glove' from the GloVe 6B 50d sample (400k x 50, HNSW index: ~2 min)"
      "$BIN/embserve-train" import --format glove-6b-50d --tables "$TABLES" --name glove ;;
    gcide)
      [ -f "$GCIDE" ] || "$(dirname "$0")/system-deps.sh" serve
      echo "training table 'gcide' on $GCIDE (skip-gram 100d, 5 epochs: ~3 min on 2 cores)"
      "$BIN/embserve-train" train --corpus "$GCIDE" --tables "$TABLES" --name gcide --model skipgram --dim 100 --epochs 5 ;;
    minilm-distilled)
      "$(dirname "$0")/distill-env.sh" "$(dirname "$BIN")"
      echo "distilling table 'minilm-distilled' from all-MiniLM-L6-v2 with model2vec (29,525 x 256, ~1 min on 2 cores)"
      "$BIN/embserve-train" distill --from minilm-sample --tables "$TABLES" --name minilm-distilled ;;
    *)
      echo "default-tables.sh: no default table '$1' (minilm, glove, gcide, minilm-distilled)" >&2
      exit 2 ;;
  esac
}
[ $# -gt 0 ] || set -- minilm glove gcide minilm-distilled
for table in "$@"; do
  has_version "$table" || build "$table"
done
