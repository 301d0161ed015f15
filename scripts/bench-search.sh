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
. scripts/lib/bench-node.sh
RUN_DIR=$(bench_run_dir search)
on_exit 'bash scripts/opensearch.sh --dir "$RUN_DIR/os" stop'
PORT=$(free_port)
env=(
  "CHAT__AUTH__JWT_SECRET=$SECRET"
  "CHAT__AUTH__REQUIRE_SESSION=false"
  "CHAT__LIMITS__SENDS_PER_SECOND=1000000"
  "CHAT__LIMITS__SEND_BURST=1000000"
  "CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0"
  "CHAT__AUTH__THROTTLE__REGISTRATIONS_PER_HOUR=1000000"
  "CHAT__AUTH__THROTTLE__REGISTRATION_BURST=1000000"
  "RUST_LOG=warn"
)
PIDS=()
if [ "$BACKEND" = opensearch ]; then
  OS_ENV=$(CHAT_OPENSEARCH_HEAP=1g taskset -c 0 bash scripts/opensearch.sh start --dir "$RUN_DIR/os")
  env+=("CHAT__SEARCH__BACKEND=opensearch" "CHAT__SEARCH__OPENSEARCH__URL=$(echo "$OS_ENV" | sed -n 's/^OPENSEARCH_URL=//p')")
fi
start_node "$PORT" "$RUN_DIR/data" "${env[@]}"
PIDS+=(--pid "$NODE_PID")
[ "$BACKEND" != opensearch ] || PIDS+=(--pid "$(cat "$RUN_DIR/os/opensearch.pid")")
echo "backend=$BACKEND messages=$MESSAGES"
taskset -c 1 "$ROOT/target/release/search-bench" --node "127.0.0.1:$PORT" "${PIDS[@]}" \
  --jwt-secret "$SECRET" --messages "$MESSAGES" ${OUT:+--out "$OUT"}
echo "index on disk: $(du -sh "$RUN_DIR/data/search" 2>/dev/null | cut -f1) (embedded), store $(du -sh "$RUN_DIR/data" | cut -f1)"
