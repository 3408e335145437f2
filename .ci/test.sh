#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine:
#   bash .ci/test.sh [pytest args]
# Creates .venv, installs siocluster with its test extra, installs redis-server
# (apt) and the Node test client (npm) when missing, then runs ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server"
    (apt-get install -y -qq redis-server >/dev/null 2>&1) ||
      (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)
  else
    echo "redis-server is missing and cannot be installed here (need root and apt-get)" >&2
  fi
fi

for dir in tests/js examples/chat; do
  if [ -f "$dir/package.json" ] && [ ! -d "$dir/node_modules" ]; then
    (cd "$dir" && { npm ci --no-audit --no-fund --silent || npm install --no-audit --no-fund --silent; })
  fi
done

.venv/bin/ruff check supervisor balancer worker tests bench examples
.venv/bin/mypy --strict
exec .venv/bin/python -m pytest "$@"
