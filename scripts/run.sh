#!/usr/bin/env bash
# Runs one chat node on the embedded defaults of cluster.toml
# (http://127.0.0.1:8080, data in ./data/node-1), serving the web app at /
# (built first when missing or stale). Extra flags go to chat-node:
#   scripts/run.sh --http 127.0.0.1:9000 --data-dir /tmp/chat
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/web.sh
exec cargo run --release -p chat-node -- --config cluster.toml "$@"
