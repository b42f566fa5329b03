#!/usr/bin/env bash
# Cold start of the local control plane, two ways:
#
# 1. `inferd up -f examples/iris.yaml` with a fresh state directory to the
#    first successful infer through its router: the clock starts just before
#    `up` is launched; curl posts examples/models/iris/input.json in a loop
#    (5 ms apart) until a 200. Every run starts from nothing kept: a new
#    state directory and new free ports. Also shown: how many curl calls it
#    took, and how long `up` took to exit after SIGINT (replicas drained).
# 2. Scale from zero: a service with minReplicas 0 and 6 s autoscaling
#    windows is left idle until it has no replica (`get revisions` shows
#    ScaledToZero and the old replica process is gone; polled every 0.5 s,
#    the idle time is counted from the previous request), then one request
#    is timed with curl (`%{time_total}`): the router holds it while a
#    replica starts. The request right after it is timed too, for contrast.
#
#   cargo build --release -p inferd
#   benches/cold-start.sh [runs, default 10] [scale-from-zero repetitions, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
reps=${2:-3}
bin=${CARGO_TARGET_DIR:-target}/release
body=examples/models/iris/input.json
[ -x "$bin/inferd" ] || { echo "$bin/inferd not found: cargo build --release -p inferd" >&2; exit 1; }

work=$(mktemp -d)
up_pid=
replica_pids=
stop_up() { # SIGINT, as Ctrl-C does; at most 10 s, then SIGKILL
  if [ -n "$up_pid" ] && kill -INT "$up_pid" 2>/dev/null; then
    for _ in $(seq 200); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  up_pid=
  # `up` stops its replicas; make sure none outlives it.
  for p in $replica_pids; do
    if kill -0 "$p" 2>/dev/null; then
      echo "replica $p outlived inferd up; killing it" >&2
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  replica_pids=
}
cleanup() { stop_up; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() { # two free loopback ports
  python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))'
}
infer() { # url -> HTTP status (000: no connection)
  curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'content-type: application/json' \
    --data-binary @$body "$1" || true
}
replicas() { # state dir -> "pid pid ..." of the service's replica processes
  "$bin/inferd" get revisions iris --state-dir "$1" -o json | python3 -c '
import json, sys
print(*(r["pid"] for rev in json.load(sys.stdin) for r in rev["replicas"] if r.get("pid")))'
}
stats() { # numbers on stdin -> "min median max"
  sort -n | awk '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%d %d %d\n", v[1], m, v[NR] }'
}
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p')" >&2

echo "### inferd up to the first successful infer (examples/iris.yaml, fresh state)"
echo
echo "| run | first 200 ms | curl attempts | stop ms |"
echo "|---|---|---|---|"
: >"$work/cold"
for run in $(seq "$runs"); do
  read -r port grpc < <(free_ports)
  state=$work/state-$run
  url=http://127.0.0.1:$port/v2/models/iris/infer
  start=$(date +%s%N)
  "$bin/inferd" up -f examples/iris.yaml --port "$port" --grpc-port "$grpc" --state-dir "$state" \
    >"$work/up-$run.out" 2>"$work/up-$run.log" &
  up_pid=$!
  attempts=1
  until [ "$(infer "$url")" = 200 ]; do
    attempts=$((attempts + 1))
    kill -0 "$up_pid" 2>/dev/null || { cat "$work/up-$run.log" >&2; exit 1; }
    [ $(( $(date +%s%N) - start )) -lt 30000000000 ] || { echo "no 200 within 30 s" >&2; exit 1; }
    sleep 0.005
  done
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  replica_pids=$(replicas "$state" || true)
  stopping=$(date +%s%N)
  stop_up
  stop_ms=$(( ($(date +%s%N) - stopping) / 1000000 ))
  echo "$ms" >>"$work/cold"
  echo "| $run | $ms | $attempts | $stop_ms |"
done
read -r lo med hi < <(stats <"$work/cold")
echo
echo "first 200 over $runs runs: min $lo ms, median $med ms, max $hi ms"
echo

echo "### Scale from zero (minReplicas 0, window and scale-to-zero grace period 6 s)"
echo
cat >"$work/zero.yaml" <<EOF
apiVersion: serving.inferd.dev/v1alpha1
kind: InferenceService
metadata:
  name: iris
  annotations:
    autoscaling.knative.dev/window: 6s
    autoscaling.knative.dev/scale-to-zero-grace-period: 6s
spec:
  predictor:
    model:
      format: onnx
      storageUri: $PWD/examples/models/iris/model.onnx
    minReplicas: 0
    maxReplicas: 1
EOF
read -r port grpc < <(free_ports)
state=$work/state-zero
url=http://127.0.0.1:$port/v2/models/iris/infer
"$bin/inferd" up -f "$work/zero.yaml" --port "$port" --grpc-port off --state-dir "$state" \
  >"$work/up-zero.out" 2>"$work/up-zero.log" &
up_pid=$!
for _ in $(seq 600); do [ "$(infer "$url")" = 200 ] && break; sleep 0.05; done
[ "$(infer "$url")" = 200 ] || { cat "$work/up-zero.log" >&2; exit 1; }
echo "| repetition | idle until scaled to zero s | request from zero ms | status | revision | next request ms |"
echo "|---|---|---|---|---|---|"
: >"$work/zero"
for rep in $(seq "$reps"); do
  idle=$(date +%s%N)
  old=$(replicas "$state" || true)
  replica_pids="$replica_pids $old"
  # Scaled to zero: no replica listed, the revision says so, the old process is gone.
  until "$bin/inferd" get revisions iris --state-dir "$state" -o json | python3 -c '
import json, sys
revs = json.load(sys.stdin)
sys.exit(0 if revs and all(not r["replicas"] and r["state"] == "ScaledToZero" for r in revs) else 1)'; do
    [ $(( $(date +%s%N) - idle )) -lt 90000000000 ] || { echo "not scaled to zero within 90 s" >&2; exit 1; }
    sleep 0.5
  done
  for p in $old; do
    for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  done
  idle_s=$(awk -v n="$(( $(date +%s%N) - idle ))" 'BEGIN { printf "%.1f", n / 1e9 }')
  read -r status total < <(curl -s -o /dev/null -D "$work/headers" -w '%{http_code} %{time_total}\n' \
    -XPOST -H 'content-type: application/json' --data-binary @$body "$url")
  revision=$(tr -d '\r' <"$work/headers" | sed -n 's/^x-inferd-revision: //Ip')
  read -r _ next < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -XPOST \
    -H 'content-type: application/json' --data-binary @$body "$url")
  ms=$(awk -v t="$total" 'BEGIN { printf "%d", t * 1000 }')
  next_ms=$(awk -v t="$next" 'BEGIN { printf "%.1f", t * 1000 }')
  echo "$ms" >>"$work/zero"
  echo "| $rep | $idle_s | $ms | $status | $revision | $next_ms |"
done
replica_pids="$replica_pids $(replicas "$state" || true)"
read -r lo med hi < <(stats <"$work/zero")
echo
echo "request from zero over $reps repetitions: min $lo ms, median $med ms, max $hi ms"
