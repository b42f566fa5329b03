#!/usr/bin/env bash
# Dynamic batching on the MLP (64 -> 1024 -> 1024 -> 10), one row per request,
# 64 connections: throughput with batching off, with opportunistic batching
# (no added delay) and with a small delay, and the model's in-process limit
# at the same batch sizes (no HTTP, no JSON: the most batching could give).
#
#   cargo build --release -p inferd -p inferd-runtime --bins --examples
#   benches/batching.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
bin=${CARGO_TARGET_DIR:-target}/release
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
body=$(mktemp)
trap 'rm -f "$body"' EXIT
# One row of the model's input.
python3 - "$body" <<'PY'
import json, sys
req = json.load(open("examples/models/mlp/input.json"))
t = req["inputs"][0]
width = t["shape"][1]
t["shape"] = [1, width]
t["data"] = t["data"][:width]
json.dump(req, open(sys.argv[1], "w"))
PY

serve() { # extra flags...
  "$bin/inferd" serve --model mlp=examples/models/mlp --http-port 18080 --grpc-port off "$@" 2>/dev/null &
  pid=$!
  for _ in $(seq 200); do
    curl -sf -o /dev/null -XPOST -d @"$body" http://127.0.0.1:18080/v2/models/mlp/infer && break
    sleep 0.1
  done
}

run() { # label -> one table row
  local line
  line=$(BODY="$body" wrk -t2 -c64 -d"${secs}s" -s benches/post.lua \
    http://127.0.0.1:18080/v2/models/mlp/infer | grep '^RESULT')
  local stats rows execs
  stats=$(curl -sf http://127.0.0.1:18080/v2/models/mlp/stats)
  rows=$(echo "$stats" | python3 -c 'import json,sys; s=json.load(sys.stdin)["model_stats"][0]; print(s["inference_count"])')
  execs=$(echo "$stats" | python3 -c 'import json,sys; s=json.load(sys.stdin)["model_stats"][0]; print(s["execution_count"])')
  echo "$1 $line rows=$rows execs=$execs"
}

echo "| configuration | req/s | p50 µs | p99 µs | errors | mean rows per execution |"
echo "|---|---|---|---|---|---|"
declare -A rps
for config in "off|--max-batch-size 0" "on, no delay|--max-batch-size 64" "on, no delay, 1 instance|--max-batch-size 64 --instance-count 1" "on, 2 ms delay|--max-batch-size 64 --max-queue-delay 2ms"; do
  label=${config%%|*}
  # shellcheck disable=SC2086
  serve ${config#*|}
  result=$(run x)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  r=$(echo "$result" | sed -n 's/.*rps=\([0-9]*\).*/\1/p')
  p50=$(echo "$result" | sed -n 's/.*p50_us=\([0-9]*\).*/\1/p')
  p99=$(echo "$result" | sed -n 's/.*p99_us=\([0-9]*\).*/\1/p')
  err=$(echo "$result" | sed -n 's/.*errors=\([0-9]*\).*/\1/p')
  rows=$(echo "$result" | sed -n 's/.* rows=\([0-9]*\).*/\1/p')
  execs=$(echo "$result" | sed -n 's/.*execs=\([0-9]*\).*/\1/p')
  rps[$label]=$r
  awk -v l="$label" -v r="$r" -v a="$p50" -v b="$p99" -v e="$err" -v n="$rows" -v x="$execs" \
    'BEGIN { printf "| %s | %d | %d | %d | %d | %.1f |\n", l, r, a, b, e, (x > 0 ? n / x : 0) }'
done
awk -v on="${rps[on, no delay]}" -v one="${rps[on, no delay, 1 instance]}" -v d="${rps[on, 2 ms delay]}" -v off="${rps[off]}" \
  'BEGIN { printf "\nbatching on / off: %.2fx (no delay), %.2fx (no delay, 1 instance), %.2fx (2 ms delay)\n\n", on / off, one / off, d / off }'
echo "In-process limit (the runtime alone, two threads):"
"$bin/examples/batch_limit" examples/models/mlp/model.onnx 2 3 1 8 16 32 64
