#!/usr/bin/env bash
# Regenerates client/embserve_client/pb/ from proto/embserve/v1/*.proto.
# The only place that runs protoc. Usage: proto/generate.sh [OUT_DIR]   (default: the client package)
# Needs the pinned grpcio-tools (constraints.txt); tests/processes/test_packaging.py fails when the
# committed output differs from what this script generates.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../client/embserve_client/pb}"
python="${PYTHON:-python3}"
mkdir -p "$out"
rm -rf "$out/embserve"
"$python" -m grpc_tools.protoc -I "$here" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$here"/embserve/v1/*.proto
# protoc emits absolute imports ("from embserve.v1 import ..."): anchor them in our package.
for f in "$out"/embserve/v1/*_grpc.py; do
  sed -i 's/^from embserve\.v1 import /from embserve_client.pb.embserve.v1 import /' "$f"
done
touch "$out/embserve/__init__.py" "$out/embserve/v1/__init__.py"
