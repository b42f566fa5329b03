#!/usr/bin/env bash
# Cross-checks `inferd bench` against wrk on the same target and load:
# closed loop at 1, 16 and 64 connections, the two tools alternating.
#
#   cargo build --release -p inferd -p inferd-server --bins --examples
#   benches/crosscheck.sh [inferd|bare] [seconds] [rounds]
#
# `inferd` loads `inferd serve` with iris; `bare` loads the bare axum handler,
# which shows the load generators' own ceiling on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-inferd}
secs=${2:-10}
rounds=${3:-2}
bin=${CARGO_TARGET_DIR:-target}/release
body=examples/models/iris/input.json
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

port=18085
case "$what" in
  inferd) "$bin/inferd" serve --model iris=examples/models/iris/model.onnx --http-port $port 2>/dev/null & ;;
  bare) "$bin/examples/bare_handler" 127.0.0.1:$port 2>/dev/null & ;;
  *) echo "usage: $0 [inferd|bare] [seconds] [rounds]" >&2; exit 2 ;;
esac
server=$!
trap 'kill $server 2>/dev/null; wait 2>/dev/null' EXIT
url=http://127.0.0.1:$port/v2/models/iris/infer
for _ in $(seq 100); do curl -sf -o /dev/null -d @$body "$url" && break; sleep 0.1; done

tmp=$(mktemp -d)
echo "| connections | round | tool | req/s | p50 µs | p99 µs | errors |"
echo "|---|---|---|---|---|---|---|"
for c in 1 16 64; do
  threads=$(( c < 2 ? 1 : 2 ))
  for r in $(seq "$rounds"); do
    BODY=$body wrk -t$threads -c$c -d${secs}s -s benches/post.lua "$url" |
      sed -n 's/^RESULT rps=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\) requests=[0-9]* errors=\([0-9]*\)/\1 \2 \3 \4/p' |
      { read -r rps p50 p99 err; echo "| $c | $r | wrk | $rps | $p50 | $p99 | $err |"; }
    "$bin/inferd" bench --target "$what=$url" --input $body --concurrency $c \
      --duration ${secs}s --warmup 1s --threads $threads --json "$tmp/b.json" >/dev/null
    python3 - "$tmp/b.json" "$c" "$r" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["steps"][0]["targets"][0]
errors = sum(t["errors"].values())
print(f"| {sys.argv[2]} | {sys.argv[3]} | inferd bench | {t['requests_per_second']:.0f} | "
      f"{t['latency_us']['p50']} | {t['latency_us']['p99']} | {errors} |")
PY
  done
done
rm -rf "$tmp"
