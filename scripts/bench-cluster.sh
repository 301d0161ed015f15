#!/usr/bin/env bash
# Cross-node numbers: the `rooms` scenario against one chat-node, then against
# a local 3-node cluster (scripts/cluster.sh) with clients spread over the
# three nodes, so most deliveries cross nodes and every write is replicated.
# Same parameters for both; prints both tables. About 2 minutes once built.
#
# On one machine the three nodes share its cores with each other and with the
# harness: this measures what routing and replication cost, not scale-out.
#
#   scripts/bench-cluster.sh
#   USERS=600 RATE=1 scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${USERS:-300}"; GROUP="${GROUP:-10}"; RATE="${RATE:-2}"
SECRET=bench-cluster-jwt-secret-0123456789abcdef
OUT=bench/results
mkdir -p "$OUT"
cargo build --release -p chat-node -p chat-bench
BENCH=target/release/chat-bench
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

rooms() {
  "$BENCH" --target chat --scenario rooms --nodes "$1" --users "$USERS" \
    --group-size "$GROUP" --rate "$RATE" --ramp 8 --step 3 --duration 5 \
    --warmup 1 --jwt-secret "$SECRET" --quiet --json "$2"
}

echo "== one node" >&2
CHAT__AUTH__JWT_SECRET=$SECRET CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0 CHAT__AUTH__REQUIRE_SESSION=false target/release/chat-node --config cluster.toml \
  --http 127.0.0.1:18190 --data-dir "$tmp/single" >"$tmp/single.log" 2>&1 &
single=$!
until curl -fsS http://127.0.0.1:18190/readyz >/dev/null 2>&1; do sleep 0.1; done
rooms http://127.0.0.1:18190 "$OUT/cluster-bench-single.json"
kill -TERM "$single"; wait "$single" || true

echo "== three nodes" >&2
BIN=target/release/chat-node DATA="$tmp/cluster" BASE_HTTP=18180 BASE_CLUSTER=19180 \
  REDIS_PORT=16390 CHAT_JWT_SECRET=$SECRET CHAT__AUTH__REQUIRE_SESSION=false \
  CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0 scripts/cluster.sh >"$tmp/cluster.out" 2>&1 &
pids+=($!)
until grep -q "cluster of 3 nodes up" "$tmp/cluster.out" 2>/dev/null; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$tmp/cluster.out" >&2; exit 1; }
  sleep 0.2
done
rooms http://127.0.0.1:18181,http://127.0.0.1:18182,http://127.0.0.1:18183 \
  "$OUT/cluster-bench-three.json"
