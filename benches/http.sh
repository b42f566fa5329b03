#!/usr/bin/env bash
# V2 REST infer on iris against a bare axum handler returning the same bytes,
# both on loopback, measured with wrk in one run and interleaved
# (bare, inferd, bare, inferd, ...) so machine drift hits both alike.
# Prints a markdown table; also reports inferd's peak RSS.
#
#   cargo build --release -p inferd -p inferd-server --bins --examples
#   benches/http.sh [seconds-per-run] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-2}
bin=${CARGO_TARGET_DIR:-target}/release
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

"$bin/inferd" serve --model iris=examples/models/iris/model.onnx --http-port 18080 2>/dev/null &
inferd_pid=$!
"$bin/examples/bare_handler" 127.0.0.1:18090 2>/dev/null &
bare_pid=$!
trap 'kill $inferd_pid $bare_pid 2>/dev/null; wait 2>/dev/null' EXIT
for port in 18080 18090; do
  for _ in $(seq 100); do curl -sf -o /dev/null -XPOST -d @examples/models/iris/input.json \
    "http://127.0.0.1:$port/v2/models/iris/infer" && break; sleep 0.1; done
done

run() { # port connections -> "rps p50_us p99_us errors"
  local threads=$(( $2 < 2 ? 1 : 2 ))
  wrk -t"$threads" -c"$2" -d"${secs}s" -s benches/post.lua \
    "http://127.0.0.1:$1/v2/models/iris/infer" |
    sed -n 's/^RESULT rps=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\) requests=[0-9]* errors=\([0-9]*\)/\1 \2 \3 \4/p'
}

echo "| connections | round | bare req/s | inferd req/s | inferd/bare | bare p50 µs | inferd p50 µs | p50 ratio | bare p99 µs | inferd p99 µs | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for c in 1 16 64; do
  for r in $(seq "$rounds"); do
    read -r b_rps b_p50 b_p99 b_err < <(run 18090 "$c")
    read -r i_rps i_p50 i_p99 i_err < <(run 18080 "$c")
    awk -v c="$c" -v r="$r" -v br="$b_rps" -v ir="$i_rps" -v b5="$b_p50" -v i5="$i_p50" \
        -v b9="$b_p99" -v i9="$i_p99" -v e="$((b_err + i_err))" 'BEGIN {
      printf "| %d | %d | %d | %d | %.2f | %d | %d | %.2f | %d | %d | %d |\n",
        c, r, br, ir, ir / br, b5, i5, i5 / b5, b9, i9, e }'
  done
done
echo
echo "inferd peak RSS: $(grep VmHWM /proc/$inferd_pid/status | awk '{print $2, $3}')"
