#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine:
#   bash .ci/test.sh [pytest args]
# Creates .venv and installs siocluster with its test extra, while apt installs
# the system packages the tests use when they are missing; then the Node
# packages (npm ci); then ruff, mypy, import-linter and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# The venv and pip run while apt works: they need neither apt nor each other's output.
pip_log=$(mktemp)
(
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
) >"$pip_log" 2>&1 &
pip_pid=$!

# System packages the tests use: redis-server and rabbitmq-server (adapter
# tests; the broker is started per test session on free ports), node + npm (the
# official socket.io-client), chromium (the example page, headless), haproxy
# (a real PROXY-protocol sender and round-robin balancer in front of clusters).
# One apt-get run for all that are missing.
packages=()
need() {  # need COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ] && return 0
  shift
  packages+=("$@")
}
need redis-server redis-server
need node nodejs npm
need chromium chromium
need haproxy haproxy
need rabbitmq-server rabbitmq-server
if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${packages[*]}"
    (apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1) ||
      (apt-get update -qq && apt-get install -y -qq "${packages[@]}" >/dev/null) ||
      echo "could not install ${packages[*]}; the tests that need them will say so" >&2
  else
    echo "${packages[*]} missing and cannot be installed here (need root and apt-get)" >&2
  fi
fi

# npm needs node (apt); the four projects install side by side.
npm_pids=()
for dir in tests/js bench/node examples/chat examples/fastapi-chat; do
  if [ -f "$dir/package.json" ] && [ ! -d "$dir/node_modules" ] && command -v npm >/dev/null; then
    (cd "$dir" && { npm ci --no-audit --no-fund --silent ||
                    npm install --no-audit --no-fund --silent; }) &
    npm_pids+=($!)
  fi
done
for pid in ${npm_pids[@]+"${npm_pids[@]}"}; do
  wait "$pid" || echo "npm install failed in one of the Node projects; its tests will say so" >&2
done

if ! wait "$pip_pid"; then
  cat "$pip_log" >&2
  echo "pip install -e '.[test]' failed" >&2
  exit 1
fi
rm -f "$pip_log"

.venv/bin/ruff check supervisor balancer worker tests bench examples
.venv/bin/mypy --strict
.venv/bin/lint-imports  # supervisor -> worker -> balancer (pyproject [tool.importlinter])
# Two pytest processes (pytest-xdist), a test file per process at a time, so a
# module's cluster and brokers stay in one process: the suite mostly waits on
# real clusters, brokers and timeouts, and two processes take the wall clock
# from about 19 to about 11 minutes on 2 cores.  SIOCLUSTER_TEST_PROCESSES=0
# runs it in one process; arguments given here come last and win.
exec .venv/bin/python -m pytest -n "${SIOCLUSTER_TEST_PROCESSES:-2}" --dist loadfile "$@"
