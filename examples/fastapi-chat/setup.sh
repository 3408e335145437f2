#!/usr/bin/env bash
# Install the official Socket.IO browser client that main.py serves from /vendor/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v npm >/dev/null 2>&1; then
    echo "setup.sh: npm is required to install socket.io-client (e.g. apt-get install npm)" >&2
    exit 1
fi
if [[ -f package-lock.json ]]; then
    npm ci --no-audit --no-fund
else
    npm install --no-audit --no-fund
fi
