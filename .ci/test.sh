#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine:
#   bash .ci/test.sh [pytest args]
# Creates .venv, installs siocluster with its test extra, installs redis-server
# (apt) and the Node test client (npm) when missing, then runs ruff, mypy, import-linter and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# System packages the tests use: redis-server and rabbitmq-server (adapter
# tests; the broker is started per test session on free ports), node + npm (the
# official socket.io-client), chromium (the example page, headless), haproxy
# (a real PROXY-protocol sender in front of the cluster).
apt_install() {  # apt_install COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ] && return 0
  shift
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $*"
    (apt-get install -y -qq "$@" >/dev/null 2>&1) ||
      (apt-get update -qq && apt-get install -y -qq "$@" >/dev/null) ||
      echo "could not install $*; the tests that need it will say so" >&2
  else
    echo "$* missing and cannot be installed here (need root and apt-get)" >&2
  fi
}
apt_install redis-server redis-server
apt_install node nodejs npm
apt_install chromium chromium
apt_install haproxy haproxy
apt_install rabbitmq-server rabbitmq-server

for dir in tests/js bench/node examples/chat examples/fastapi-chat; do
  if [ -f "$dir/package.json" ] && [ ! -d "$dir/node_modules" ]; then
    (cd "$dir" && { npm ci --no-audit --no-fund --silent || npm install --no-audit --no-fund --silent; })
  fi
done

.venv/bin/ruff check supervisor balancer worker tests bench examples
.venv/bin/mypy --strict
.venv/bin/lint-imports  # supervisor -> worker -> balancer (pyproject [tool.importlinter])
exec .venv/bin/python -m pytest "$@"
