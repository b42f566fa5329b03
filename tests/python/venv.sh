#!/usr/bin/env bash
# Makes or updates the Python venv of the client test suite and prints its
# interpreter's path (the only thing written to stdout):
#
#   INFERD_TEST_PYTHON=$(tests/python/venv.sh)
#
# The venv lives at ${INFERD_TEST_VENV:-$HOME/.cache/inferd-test-venv}.
# requirements.txt is installed only when it (or the Python that made the
# venv) changed since the last successful install; its hash is kept in the
# venv. Several callers at once wait for each other on a lock file.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
requirements=$here/requirements.txt
venv=${INFERD_TEST_VENV:-$HOME/.cache/inferd-test-venv}
python=${PYTHON:-python3}

fail() {
  echo "tests/python/venv.sh: $*" >&2
  exit 1
}

command -v "$python" >/dev/null 2>&1 ||
  fail "$python not found; install Python 3.9 or later (Debian: apt-get install python3 python3-venv)"
# Debian's python3 ships venv without ensurepip; python3-venv adds it.
"$python" -c 'import ensurepip, venv' >/dev/null 2>&1 ||
  fail "'$python -m venv' cannot make a venv with pip here (no ensurepip); on Debian/Ubuntu: apt-get install python3-venv"

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

# What the installed venv must match: the requirements and the Python itself.
want=$( (cat "$requirements"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)
stamp=$venv/.inferd-requirements.sha256

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "tests/python/venv.sh: installing $requirements into $venv" >&2
rm -f "$stamp"
# A venv made by another Python (or half made) is made anew.
if ! [ -x "$venv/bin/python" ] ||
  ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version != sys.argv[1])' \
    "$("$python" -c 'import sys; print(sys.version)')" >/dev/null 2>&1; then
  "$python" -m venv --clear "$venv" >"$log" 2>&1 ||
    { cat "$log" >&2; fail "'$python -m venv $venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"; }
fi
PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install -q -r "$requirements" >"$log" 2>&1 ||
  { tail -n 40 "$log" >&2; fail "pip install -r $requirements failed (output above)"; }
echo "$want" >"$stamp"
echo "$venv/bin/python"
