#!/usr/bin/env bash
# Tree runtimes: inferd's native tree engine vs onnxruntime vs the libraries'
# own predict, one thread each, batch sizes 1, 16, 256 (see benches/trees.py).
#
#   benches/trees.sh [seconds per measurement, default 2]
#
# Makes (once) a venv with examples/requirements-trees.txt at
# ~/.cache/inferd-trees-venv, builds the engine's bench program in release
# mode, trains the models at run time and prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-2}
VENV=${INFERD_TREES_VENV:-$HOME/.cache/inferd-trees-venv}
TARGET=${CARGO_TARGET_DIR:-target}
WORK=${INFERD_TREES_BENCH_DIR:-$(mktemp -d)}

if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r examples/requirements-trees.txt
fi
cargo build --release -q -p inferd-trees --example bench
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
"$VENV/bin/python" benches/trees.py "$TARGET/release/examples/bench" "$WORK" "$SECONDS_PER"
