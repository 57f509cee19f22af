#!/usr/bin/env bash
# Generates the okta.events.v1 Python client (messages + gRPC stub) from ../../proto with
# grpcio-tools, into OUT_DIR (default: ./okta_stream_client, which .gitignore keeps out of git).
#
#   python3 -m pip install grpcio grpcio-tools   # once
#   ./generate.sh [OUT_DIR]
#
# The stubs import each other as `okta.events.v1...`: put OUT_DIR on sys.path (example.py's
# --stubs does that).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
proto="$here/../../proto"
out="${1:-$here/okta_stream_client}"
mkdir -p "$out"
# grpc_tools.protoc adds the well-known types (google/protobuf/*.proto) to the include path.
python3 -m grpc_tools.protoc \
  -I "$proto" \
  --python_out="$out" \
  --pyi_out="$out" \
  --grpc_python_out="$out" \
  "$proto/okta/events/v1/events.proto"
for package in okta okta/events okta/events/v1; do
  touch "$out/$package/__init__.py"
done
echo "generated okta.events.v1 into $out"
