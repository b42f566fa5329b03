#!/usr/bin/env bash
# Compare inferd with other model servers serving the same iris classifier:
# cold start, peak memory of the whole process tree, and throughput/latency
# at several closed-loop concurrencies. One server runs at a time, on loopback.
#
#   benchmarks/peers/run.sh                      # everything, 10 s per step
#   DURATION=5 benchmarks/peers/run.sh --load wrk --peers inferd,kserve
#
# See benchmarks/peers/README.md for what is measured and how each peer is set up.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

INFERD=${INFERD:-target/release/inferd}
CACHE=${INFERD_PEERS_CACHE:-$HOME/.cache/inferd-peers}
PYTHON=${PYTHON:-python3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-1,8,64}
INSTALL_TIMEOUT=${INSTALL_TIMEOUT:-600}
START_TIMEOUT=${START_TIMEOUT:-120}
QUIET_WAIT=${QUIET_WAIT:-30}

all_servers=inferd,kserve,kserve-onnx,mlserver,rayserve,pytriton,pytriton-onnx,onnxruntime

usage() {
  cat <<EOF
Usage: benchmarks/peers/run.sh [--load inferd|wrk] [--peers LIST] [--no-onnx-variants] [--setup-only]

  --load inferd|wrk    load generator: 'inferd bench' (default when \$INFERD has it) or wrk
  --peers LIST         comma-separated servers to measure, in order
                       (default: $all_servers)
  --no-onnx-variants   leave out kserve-onnx and pytriton-onnx
  --setup-only         create the virtual environments and models, measure nothing

Environment: INFERD ($INFERD), INFERD_PEERS_CACHE ($CACHE), PYTHON ($PYTHON),
DURATION ($DURATION s per step), WARMUP ($WARMUP s), CONCURRENCY ($CONCURRENCY),
INSTALL_TIMEOUT ($INSTALL_TIMEOUT s per peer), START_TIMEOUT ($START_TIMEOUT s),
QUIET_WAIT (at most $QUIET_WAIT s waiting for other CPU load to settle before each server).
EOF
}

load=""
servers=$all_servers
onnx_variants=1
setup_only=0
while (($#)); do
  case $1 in
    --load) load=${2:?--load needs inferd or wrk}; shift 2 ;;
    --peers) servers=${2:?--peers needs a list}; shift 2 ;;
    --no-onnx-variants) onnx_variants=0; shift ;;
    --setup-only) setup_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
if ((!onnx_variants)); then
  servers=$(tr , '\n' <<<"$servers" | grep -vx -e kserve-onnx -e pytriton-onnx | paste -sd, -)
fi

say() { printf '[peers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------- stopping what we start

# Installs and the harness run in the background and are waited for, so that
# Ctrl-C (or SIGTERM) interrupts the wait at once and the EXIT trap runs.
install_pid=""
harness_pid=""
scratch=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $install_pid ]]; then
    kill -TERM "$install_pid" 2>/dev/null || true   # timeout passes it on to pip
  fi
  if [[ -n $harness_pid ]] && kill -0 "$harness_pid" 2>/dev/null; then
    kill -TERM "$harness_pid" 2>/dev/null || true   # it stops its server and saves
    wait "$harness_pid" 2>/dev/null || true
  fi
  if [[ -n $scratch ]]; then
    # Safety net for a harness that died first: the process groups it started
    # (listed in live-groups), Ray, and anything else naming the scratch folder.
    if [[ -s $scratch/live-groups ]]; then
      while read -r pgid; do
        kill -KILL -- "-$pgid" 2>/dev/null || true
      done <"$scratch/live-groups"
    fi
    if [[ -x $CACHE/rayserve/bin/ray ]] && pgrep -f "$scratch" >/dev/null; then
      "$CACHE/rayserve/bin/ray" stop --force >/dev/null 2>&1 || true
    fi
    for pid in $(pgrep -f "$scratch" || true); do
      kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$scratch"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT
trap 'say terminated; exit 143' TERM

# ------------------------------------------------------------ preconditions

[[ -x $INFERD ]] || { echo "inferd binary not found at $INFERD (cargo build --release, or set INFERD)" >&2; exit 1; }
if [[ -z $load ]]; then
  if "$INFERD" bench --help >/dev/null 2>&1; then load=inferd; else load=wrk; fi
fi
case $load in
  inferd) "$INFERD" bench --help >/dev/null 2>&1 || { echo "$INFERD has no 'bench' command; use --load wrk" >&2; exit 1; } ;;
  wrk) command -v wrk >/dev/null || { echo "wrk is needed for --load wrk (apt-get install wrk)" >&2; exit 1; } ;;
  *) echo "--load must be inferd or wrk" >&2; exit 2 ;;
esac

# --------------------------------------------------- virtual environments

# The venv each server runs in.
venv_of() {
  case $1 in
    inferd) echo "" ;;
    kserve|kserve-onnx) echo kserve ;;
    pytriton|pytriton-onnx) echo pytriton ;;
    mlserver|rayserve|onnxruntime) echo "$1" ;;
    *) echo "unknown server: $1 (known: $all_servers)" >&2; return 1 ;;
  esac
}

# Create $CACHE/NAME from requirements-NAME.txt unless a venv built from the
# same pins with the same Python is already there.
ensure_venv() {
  local name=$1 req=$here/requirements-$1.txt venv=$CACHE/$1 stamp started
  stamp="$(sha256sum <"$req" | cut -c1-16) python-$("$PYTHON" -c 'import platform; print(platform.python_version())')"
  if [[ -f $venv/.inferd-peers-pins && $(<"$venv/.inferd-peers-pins") == "$stamp" ]]; then
    return 0
  fi
  say "installing $name into $venv (pins: ${req#"$repo"/})"
  started=$SECONDS
  rm -rf "$venv"
  mkdir -p "$CACHE"
  ("$PYTHON" -m venv "$venv" &&
    exec timeout "$INSTALL_TIMEOUT" "$venv/bin/pip" install --quiet --no-input -r "$req") \
    >"$CACHE/$name.install.log" 2>&1 &
  install_pid=$!
  if ! wait "$install_pid"; then
    install_pid=""
    say "install of $name failed; last lines of $CACHE/$name.install.log:"
    tail -n 15 "$CACHE/$name.install.log" >&2
    rm -rf "$venv"
    return 1
  fi
  install_pid=""
  "$venv/bin/pip" freeze --all >"$venv/.inferd-peers-freeze"
  echo "$stamp" >"$venv/.inferd-peers-pins"
  say "installed $name in $((SECONDS - started)) s ($(du -sh "$venv" | cut -f1))"
}

ensure_venv tools
failed_installs=()
needed=()
for server in ${servers//,/ }; do
  v=$(venv_of "$server")
  [[ -n $v && ! " ${needed[*]} " =~ " $v " ]] && needed+=("$v")
done
for v in "${needed[@]}"; do
  ensure_venv "$v" || failed_installs+=("$v")
done

# ------------------------------------------------------------- scratch + models

scratch=$(mktemp -d "${TMPDIR:-/tmp}/inferd-peers.XXXXXX")
mkdir -p "$scratch/models"
"$CACHE/tools/bin/python" "$here/prepare_models.py" \
  --onnx examples/models/iris/model.onnx --expected examples/models/iris/expected.json \
  --out "$scratch/models"

if ((setup_only)); then
  say "setup done; venvs in $CACHE: $(cd "$CACHE" && du -sh -- */ | awk '{sub("/", "", $2); printf "%s%s %s", sep, $2, $1; sep = ", "}')"
  exit 0
fi

mkdir -p "$here/results"
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
say "measuring $servers with $load, ${DURATION}s per step after ${WARMUP}s warm-up at $CONCURRENCY connections"
"$PYTHON" "$here/harness.py" \
  --servers "$servers" \
  --failed-installs "$(IFS=,; echo "${failed_installs[*]}")" \
  --cache "$CACHE" --scratch "$scratch" --inferd "$INFERD" --load "$load" \
  --duration "$DURATION" --warmup "$WARMUP" --concurrency "$CONCURRENCY" \
  --start-timeout "$START_TIMEOUT" --quiet-wait "$QUIET_WAIT" \
  --json "$here/results/$stamp.json" --markdown "$here/results/$stamp.md" &
harness_pid=$!
wait "$harness_pid"
harness_pid=""
cat "$here/results/$stamp.md"
say "results: ${here#"$repo"/}/results/$stamp.json"
