#!/usr/bin/env bash
# Run the FastAPI chat example on a siocluster: ./run.sh [siocluster run options...]
# Defaults: 2 workers on port 8000. Options given here pass through and win,
# e.g. ./run.sh --workers 4 --port 9000 --log-level debug
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"

if [[ ! -f "$HERE/node_modules/socket.io-client/dist/socket.io.min.js" ]]; then
    "$HERE/setup.sh"
fi
if ! "$PYTHON" -c "import supervisor.cli" >/dev/null 2>&1 || ! command -v siocluster >/dev/null 2>&1
then
    "$PYTHON" -m pip install -e "$ROOT"
fi
if ! "$PYTHON" -c "import fastapi" >/dev/null 2>&1; then
    "$PYTHON" -m pip install "fastapi>=0.110,<0.166"
fi

# Defaults go in only where neither the caller nor the environment chose: a CLI flag
# would outrank SIOCLUSTER_* variables (and config.toml), so don't pass one blindly.
given() {
    local flag=$1 short=$2 arg
    shift 2
    for arg in "$@"; do
        [[ $arg == "$flag" || $arg == "$flag="* || $arg == "$short" || $arg == "$short"?* ]] \
            && return 0
    done
    return 1
}
defaults=()
if ! given --workers -w "$@" && [[ -z ${SIOCLUSTER_CLUSTER_WORKERS:-} ]]; then
    defaults+=(--workers 2)
fi
if ! given --port -p "$@" && [[ -z ${SIOCLUSTER_BALANCER_PORT:-} ]]; then
    defaults+=(--port 8000)
fi

cd "$HERE"
exec siocluster run main:app "${defaults[@]}" "$@"
