#!/usr/bin/env bash
# The router hop: V2 REST infer on iris sent straight to the one replica of
# `inferd up` and through its router, in the same run. `inferd bench`
# interleaves the two targets (1 s turns) at 1 connection (latency) and at
# 64 (throughput). Prints a markdown table: req/s, p50 and p99 of both, the
# router's share of direct throughput and the µs it adds; then the CPU time
# the load generator, the router (the `inferd up` process) and the replica
# each spent per request they handled in each run, warm-up included (from
# bash's `times`, /proc/PID/stat, the replica's /v2/models/iris/stats and the
# router's /metrics).
#
#   cargo build --release -p inferd
#   benches/router.sh [seconds-per-target-per-step] [rounds]
#
# The service has minReplicas = maxReplicas = 1 (the autoscaler changes
# nothing during the run) and no batching, so the replica answers as
# `inferd serve` does in benches/http.sh; both targets hit the same process.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-2}
bin=${CARGO_TARGET_DIR:-target}/release
body=examples/models/iris/input.json
[ -x "$bin/inferd" ] || { echo "$bin/inferd not found: cargo build --release -p inferd" >&2; exit 1; }

work=$(mktemp -d)
up_pid=
replica_pid=
cleanup() {
  if [ -n "$up_pid" ] && kill -INT "$up_pid" 2>/dev/null; then
    for _ in $(seq 200); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  # `up` stops its replicas; make sure none outlives it.
  if [ -n "$replica_pid" ]; then kill -KILL "$replica_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cat >"$work/iris.yaml" <<EOF
apiVersion: serving.inferd.dev/v1alpha1
kind: InferenceService
metadata:
  name: iris
spec:
  predictor:
    model:
      format: onnx
      storageUri: $PWD/examples/models/iris/model.onnx
    minReplicas: 1
    maxReplicas: 1
EOF

"$bin/inferd" up -f "$work/iris.yaml" --port 0 --grpc-port off --state-dir "$work/state" \
  >"$work/up.out" 2>"$work/up.log" &
up_pid=$!
router=
for _ in $(seq 600); do
  router=$(sed -n 's/^router *\(http:[^ ]*\)$/\1/p' "$work/up.out")
  [ -n "$router" ] && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.log" >&2; exit 1; }
  sleep 0.05
done
[ -n "$router" ] || { echo "inferd up printed no router address" >&2; cat "$work/up.log" >&2; exit 1; }

# The replica's own address, once it is ready.
replica=
for _ in $(seq 600); do
  read -r replica replica_pid < <("$bin/inferd" get revisions iris --state-dir "$work/state" -o json |
    python3 -c '
import json, sys
for rev in json.load(sys.stdin):
    for r in rev["replicas"]:
        if r["phase"] == "Ready" and r.get("http"):
            print(r["http"], r.get("pid", "")); sys.exit()
print()') || true
  [ -n "$replica" ] && break
  sleep 0.05
done
[ -n "$replica" ] || { echo "no ready replica" >&2; cat "$work/up.log" >&2; exit 1; }

direct_url=http://$replica/v2/models/iris/infer
router_url=$router/v2/models/iris/infer
curl -sf -o /dev/null -XPOST -H 'content-type: application/json' --data-binary @$body "$direct_url"
revision=$(curl -sf -D - -o /dev/null -XPOST -H 'content-type: application/json' --data-binary @$body \
  "$router_url" | tr -d '\r' | sed -n 's/^x-inferd-revision: //Ip')
[ -n "$revision" ] || { echo "the router's answer names no revision (x-inferd-revision)" >&2; exit 1; }
echo "router $router, revision $revision; replica $replica (pid $replica_pid)" >&2
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p')" >&2

cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system, clock ticks
served() { # replica answers, router answers
  curl -sf "http://$replica/v2/models/iris/stats" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["model_stats"][0]["inference_stats"]["success"]["count"])'
  curl -sf "$router/metrics" |
    awk '/^inferd_router_requests_total\{/ && /code="200"/ { n += $NF } END { print n + 0 }'
}
tick=$(getconf CLK_TCK)
children_cpu() { # sets children: CPU seconds of this shell's waited-for children (`times` runs here)
  times >"$work/times"
  children=$(awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
    print t }' "$work/times")
}

echo "| connections | round | direct req/s | router req/s | router/direct | direct p50 µs | router p50 µs | added p50 µs | direct p99 µs | router p99 µs | added p99 µs | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
: >"$work/cpu"
for c in 1 64; do
  threads=$(( c < 2 ? 1 : 2 ))
  for r in $(seq "$rounds"); do
    { read -r rep0; read -r rt0; } < <(served)
    up0=$(cpu "$up_pid"); replica0=$(cpu "$replica_pid")
    children_cpu; load0=$children
    "$bin/inferd" bench --target "direct=$direct_url" --target "router=$router_url" --input $body \
      --concurrency "$c" --duration "${secs}s" --warmup 2s --threads "$threads" \
      --json "$work/b.json" >/dev/null
    children_cpu; load1=$children
    up1=$(cpu "$up_pid"); replica1=$(cpu "$replica_pid")
    { read -r rep1; read -r rt1; } < <(served)
    echo "$c $r $(( up1 - up0 )) $(( rt1 - rt0 )) $(( replica1 - replica0 )) $(( rep1 - rep0 ))" \
      "$(awk -v a="$load0" -v b="$load1" 'BEGIN { print b - a }')" >>"$work/cpu"
    python3 - "$work/b.json" "$c" "$r" <<'PY'
import json, sys
t = {x["name"]: x for x in json.load(open(sys.argv[1]))["steps"][0]["targets"]}
d, r = t["direct"], t["router"]
errors = sum(d["errors"].values()) + sum(r["errors"].values())
dl, rl = d["latency_us"], r["latency_us"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {d['requests_per_second']:.0f} | {r['requests_per_second']:.0f} | "
      f"{r['requests_per_second'] / d['requests_per_second']:.2f} | {dl['p50']} | {rl['p50']} | "
      f"{rl['p50'] - dl['p50']} | {dl['p99']} | {rl['p99']} | {rl['p99'] - dl['p99']} | {errors} |")
PY
  done
done
echo
echo "| connections | round | requests (replica) | load generator CPU µs/request | router requests | router CPU µs/request | replica CPU µs/request |"
echo "|---|---|---|---|---|---|---|"
while read -r c r up_t rt_n rep_t rep_n load_s; do
  awk -v c="$c" -v r="$r" -v ut="$up_t" -v un="$rt_n" -v rt="$rep_t" -v rn="$rep_n" -v ls="$load_s" -v hz="$tick" 'BEGIN {
    printf "| %d | %d | %d | %.1f | %d | %.1f | %.1f |\n",
      c, r, rn, ls * 1e6 / rn, un, ut / hz * 1e6 / un, rt / hz * 1e6 / rn }'
done <"$work/cpu"
echo
echo "router (inferd up) peak RSS: $(grep VmHWM /proc/$up_pid/status | awk '{print $2, $3}')," \
  "replica: $(grep VmHWM /proc/$replica_pid/status | awk '{print $2, $3}')"
