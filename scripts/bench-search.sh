#!/usr/bin/env bash
# What search costs at a million messages: a fresh release node (embedded
# store) pinned to core 0, the harness (bench/src/bin/search.rs) on core 1.
# The harness sends MESSAGES messages into 1000 groups over the WebSocket
# API, waits until all are searchable (the live path: outbox to index) and
# runs 2000 searches one at a time as members of ~50 groups each; it prints
# indexing messages/s, the server's CPU per message, and query p50/p99 per
# kind of query. BACKEND=opensearch keeps the index in OpenSearch
# (scripts/opensearch.sh, its JVM on core 0 beside the node: both are the
# server). Benchmark only on a quiet machine.
#
#   scripts/bench-search.sh
#   BACKEND=opensearch scripts/bench-search.sh
#   MESSAGES=100000 scripts/bench-search.sh      # a quicker pass
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BACKEND=${BACKEND:-embedded}
MESSAGES=${MESSAGES:-1000000}
SECRET=bench-search-secret-0123456789abcdef

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p chat-node -p chat-bench
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chat-search-bench.XXXXXX")
NODE_PID=""
cleanup() {
  [ -z "$NODE_PID" ] || kill "$NODE_PID" 2>/dev/null || true
  bash scripts/opensearch.sh --dir "$RUN_DIR/os" stop >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
env=(
  "CHAT__AUTH__JWT_SECRET=$SECRET"
  "CHAT__AUTH__REQUIRE_SESSION=false"
  "CHAT__LIMITS__SENDS_PER_SECOND=1000000"
  "CHAT__LIMITS__SEND_BURST=1000000"
  "CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0"
  "RUST_LOG=warn"
)
PIDS=()
if [ "$BACKEND" = opensearch ]; then
  OS_ENV=$(CHAT_OPENSEARCH_HEAP=1g taskset -c 0 bash scripts/opensearch.sh start --dir "$RUN_DIR/os")
  env+=("CHAT__SEARCH__BACKEND=opensearch" "CHAT__SEARCH__OPENSEARCH__URL=$(echo "$OS_ENV" | sed -n 's/^OPENSEARCH_URL=//p')")
fi
env "${env[@]}" taskset -c 0 "$ROOT/target/release/chat-node" \
  --http "127.0.0.1:$PORT" --data-dir "$RUN_DIR/data" >"$RUN_DIR/node.log" 2>&1 &
NODE_PID=$!
PIDS+=(--pid "$NODE_PID")
[ "$BACKEND" != opensearch ] || PIDS+=(--pid "$(cat "$RUN_DIR/os/opensearch.pid")")
for _ in $(seq 1 400); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$NODE_PID" 2>/dev/null || { cat "$RUN_DIR/node.log" >&2; exit 1; }
  sleep 0.05
done
echo "backend=$BACKEND messages=$MESSAGES"
taskset -c 1 "$ROOT/target/release/search-bench" --node "127.0.0.1:$PORT" "${PIDS[@]}" \
  --jwt-secret "$SECRET" --messages "$MESSAGES" ${OUT:+--out "$OUT"}
echo "index on disk: $(du -sh "$RUN_DIR/data/search" 2>/dev/null | cut -f1) (embedded), store $(du -sh "$RUN_DIR/data" | cut -f1)"
