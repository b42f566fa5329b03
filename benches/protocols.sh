#!/usr/bin/env bash
# REST JSON vs REST binary tensors (Triton's extension) on the same server and
# the same rows, with wrk, interleaved. One-row requests to iris (4 floats) and
# to the MLP (64 floats in, 10 out), at 64 connections.
#
#   cargo build --release -p inferd
#   benches/protocols.sh [seconds-per-run] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-2}
bin=${CARGO_TARGET_DIR:-target}/release
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
dir=$(mktemp -d)
"$bin/inferd" serve --model iris=examples/models/iris/model.onnx --model mlp=examples/models/mlp \
  --http-port 18080 --grpc-port off 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
# For each model: a one-row JSON body and the same row as binary tensor data,
# the output asked for in binary too; the JSON header's length goes in a header.
python3 - "$dir" <<'PY'
import json, struct, sys
out = sys.argv[1]
for model, src in [("iris", "examples/models/iris/input.json"), ("mlp", "examples/models/mlp/input.json")]:
    t = json.load(open(src))["inputs"][0]
    width = t["shape"][1]
    row = t["data"][:width]
    json.dump({"inputs": [{"name": t["name"], "datatype": "FP32", "shape": [1, width], "data": row}]},
              open(f"{out}/{model}.json", "w"))
    raw = struct.pack(f"<{width}f", *row)
    header = json.dumps({"inputs": [{"name": t["name"], "datatype": "FP32", "shape": [1, width],
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    open(f"{out}/{model}.bin", "wb").write(header + raw)
    open(f"{out}/{model}.len", "w").write(str(len(header)))
PY
for m in iris mlp; do
  for _ in $(seq 100); do
    curl -sf -o /dev/null -XPOST -d @"$dir/$m.json" "http://127.0.0.1:18080/v2/models/$m/infer" && break
    sleep 0.1
  done
done
run() { # model json|bin -> "rps p50 p99 errors"
  local len=""
  [ "$2" = bin ] && len=$(cat "$dir/$1.len")
  BODY="$dir/$1.$2" HEADER_LENGTH="$len" wrk -t2 -c64 -d"${secs}s" -s benches/post.lua \
    "http://127.0.0.1:18080/v2/models/$1/infer" |
    sed -n 's/^RESULT rps=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\) requests=[0-9]* errors=\([0-9]*\)/\1 \2 \3 \4/p'
}
echo "| model | round | JSON req/s | binary req/s | binary/JSON | JSON p50 µs | binary p50 µs | errors |"
echo "|---|---|---|---|---|---|---|---|"
for m in iris mlp; do
  for r in $(seq "$rounds"); do
    read -r j_rps j_p50 _ j_err < <(run "$m" json)
    read -r b_rps b_p50 _ b_err < <(run "$m" bin)
    awk -v m="$m" -v r="$r" -v j="$j_rps" -v b="$b_rps" -v j5="$j_p50" -v b5="$b_p50" -v e="$((j_err + b_err))" \
      'BEGIN { printf "| %s | %d | %d | %d | %.2f | %d | %d | %d |\n", m, r, j, b, b / j, j5, b5, e }'
  done
done
