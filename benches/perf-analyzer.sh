#!/usr/bin/env bash
# Cross-checks `inferd bench` against Triton's perf_analyzer on the same
# server and load, closed loop at 1, 8 and 64 requests in flight by default
# (perf_analyzer over HTTP or gRPC, `inferd bench` over HTTP):
# `inferd` serves iris with `inferd serve`; `pytriton` serves it through
# onnxruntime in PyTriton. perf_analyzer sends its inputs as binary tensors
# and reads Triton's model-configuration and statistics endpoints.
#
# Needs benchmarks/peers/run.sh to have made the PyTriton venv and the model
# files (its cache), and installs perf_analyzer on first use: on Debian 12
# only the binary inside the tritonclient 2.51.0 wheel runs (later wheels
# need glibc 2.38); it needs libb64 and libcudart from nvidia-cuda-runtime-cu12.
#
#   benches/perf-analyzer.sh [inferd|pytriton] [seconds] [rounds] [http|grpc] [in-flight levels]
#   e.g. benches/perf-analyzer.sh inferd 2 1 grpc "1 2 3 4"
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-inferd}
secs=${2:-8}
rounds=${3:-2}
protocol=${4:-http}
levels=${5:-1 8 64}
case "$protocol" in
  http) pa_port=18200 ;;
  grpc) pa_port=18201 ;;
  *) echo "usage: $0 [inferd|pytriton] [seconds] [rounds] [http|grpc] [in-flight levels]" >&2; exit 2 ;;
esac
cache=${INFERD_PEERS_CACHE:-$HOME/.cache/inferd-peers}
bin=${CARGO_TARGET_DIR:-target}/release
pa=$cache/perf/bin/perf_analyzer.bin

if [ ! -x "$pa" ]; then
  dpkg -s libb64-0d >/dev/null 2>&1 || apt-get install -y -q libb64-0d >/dev/null
  python3 -m venv "$cache/perf"
  "$cache/perf/bin/pip" install -q nvidia-cuda-runtime-cu12==12.9.79
  "$cache/perf/bin/pip" download -q tritonclient==2.51.0 --no-deps --only-binary=:all: -d "$cache/perf/dl"
  python3 -m zipfile -e "$cache"/perf/dl/tritonclient-2.51.0-*.whl "$cache/perf/dl/x"
  cp "$cache/perf/dl/x/tritonclient-2.51.0.data/data/bin/perf_analyzer" "$pa"
  chmod +x "$pa"
fi
cudart=$(dirname "$(find "$cache/perf" -name 'libcudart.so.12' | head -n1)")
[ -n "$cudart" ] || { echo "libcudart.so.12 not found under $cache/perf" >&2; exit 1; }

work=$(mktemp -d)
token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
case "$what" in
  inferd)
    grpc_port=()
    if "$bin/inferd" serve --help | grep -q -- --grpc-port; then grpc_port=(--grpc-port 18201); fi
    "$bin/inferd" serve --model iris=examples/models/iris/model.onnx --http-port 18200 \
      "${grpc_port[@]}" >"$work/log" 2>&1 &
    # No batcher yet (max_batch_size 0): perf_analyzer's shapes include the batch.
    shape='[1,4]' ;;
  pytriton)
    # perf_analyzer reads statistics, which PyTriton keeps behind an access token.
    # Triton's Python backend stub must load the libpython the venv was made from.
    pylib=$("$cache/pytriton/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
    LD_LIBRARY_PATH=$pylib "$cache/pytriton/bin/python" benchmarks/peers/servers/pytriton_server.py \
      --model examples/models/iris/model.onnx --http-port 18200 --grpc-port 18201 \
      --metrics-port 18202 --workspace "$work/ws" --access-token "$token" >"$work/log" 2>&1 &
    # PyTriton batches (max_batch_size 4): shapes leave the batch out.
    shape='[4]' ;;
  *) echo "usage: $0 [inferd|pytriton] [seconds] [rounds] [http|grpc] [in-flight levels]" >&2; exit 2 ;;
esac
server=$!
trap 'kill $server 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
url=http://127.0.0.1:18200/v2/models/iris/infer
body='{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
echo "$body" > "$work/body.json"
for _ in $(seq 600); do curl -sf -o /dev/null -d @"$work/body.json" "$url" && break; sleep 0.2; done
curl -sf -o /dev/null -d @"$work/body.json" "$url" || { cat "$work/log" >&2; exit 1; }
# perf_analyzer reads its input data from a JSON file of its own format.
echo "{\"data\":[{\"input\":{\"content\":[5.1,3.5,1.4,0.2],\"shape\":$shape}}]}" > "$work/pa.json"

# PyTriton reads its access token from this header over HTTP and from its
# prefixed form in gRPC metadata; inferd ignores both.
if [ "$protocol" = grpc ]; then
  auth="triton-grpc-protocol-triton-access-token:$token"
else
  auth="triton-access-token:$token"
fi

echo "| in flight | round | tool | req/s | p50 µs | p99 µs |"
echo "|---|---|---|---|---|---|"
for c in $levels; do
  for r in $(seq "$rounds"); do
    # This shared two-core machine rarely holds throughput within the default
    # 10% over consecutive windows, hence --stability-percentage 30.
    LD_LIBRARY_PATH=$cudart "$pa" -m iris -u "127.0.0.1:$pa_port" -i "$protocol" --concurrency-range "$c" \
      -H "$auth" \
      --input-data "$work/pa.json" --measurement-mode time_windows \
      --measurement-interval $((secs * 1000)) --stability-percentage 30 --percentile 99 \
      -f "$work/pa.csv" >"$work/pa.out" 2>&1 ||
      { cat "$work/pa.out" >&2; exit 1; }
    python3 - "$work/pa.csv" "$c" "$r" "$protocol" <<'PY'
import csv, sys
row = next(csv.DictReader(open(sys.argv[1])))
print(f"| {sys.argv[2]} | {sys.argv[3]} | perf_analyzer ({sys.argv[4]}) | "
      f"{float(row['Inferences/Second']):.0f} | {row['p50 latency']} | {row['p99 latency']} |")
PY
    "$bin/inferd" bench --target "$what=$url" --input "$work/body.json" --concurrency "$c" \
      --duration "${secs}s" --warmup 1s --json "$work/b.json" >/dev/null
    python3 - "$work/b.json" "$c" "$r" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["steps"][0]["targets"][0]
print(f"| {sys.argv[2]} | {sys.argv[3]} | inferd bench (http) | {t['requests_per_second']:.0f} | "
      f"{t['latency_us']['p50']} | {t['latency_us']['p99']} |")
PY
  done
done
