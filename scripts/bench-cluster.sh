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
#   STORAGE=scylla scripts/bench-cluster.sh   both runs on one local CQL
#                         server (scripts/cql.sh, production commit log): no
#                         replication between nodes, one lease per conversation
#
# Besides the tables it prints each run's server-side CPU seconds per
# delivery (every chat-node and the CQL server, from /proc) and, on
# ScyllaDB, the lightweight transactions the leases cost (from /metrics).
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${USERS:-300}"; GROUP="${GROUP:-10}"; RATE="${RATE:-2}"
STORAGE="${STORAGE:-embedded}"
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
  [ ! -d "$tmp/cql" ] || bash scripts/cql.sh stop --dir "$tmp/cql" || true
  rm -rf "$tmp"
}
trap cleanup EXIT

storage_env=()
cql_pid=""
if [ "$STORAGE" = scylla ]; then
  nodes=$(CQL_COMMITLOG=periodic bash scripts/cql.sh start --dir "$tmp/cql" | sed -n 's/^SCYLLA_NODES=//p')
  cql_pid=$(cat "$tmp/cql/node1/pid")
  export SCYLLA_NODES=$nodes
  storage_env=(CHAT__STORAGE__BACKEND=scylla "CHAT__STORAGE__SCYLLA__NODES=[\"$nodes\"]" CHAT__SEARCH__BACKEND=off)
fi

# CPU seconds (user + system) of the given pids, from /proc.
cpu_s() {
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" '{ print t + ($14 + $15) / hz }' "/proc/$p/stat")
  done
  echo "$total"
}
# Server CPU per delivery of a finished run: CPU seconds spent / deliveries.
per_delivery() { # cpu_before cpu_after json
  python3 - "$@" <<'PY'
import json, sys
before, after, path = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
run = json.load(open(path))
delivered = sum(s.get("deliveries", 0) for s in run.get("steps", [])) + (run.get("half_peak") or {}).get("deliveries", 0)
if delivered:
    print(f"server CPU per delivery: {(after - before) / delivered * 1e6:.1f} us ({after - before:.1f} s for {delivered} deliveries, warm-up excluded from the count)")
PY
}
leases() { # ports...: the lease transactions the nodes made
  local p acquired=0 renewed=0 v
  for p in "$@"; do
    v=$(curl -fsS "http://127.0.0.1:$p/metrics" | awk '/^chat_leases_acquired_total /{print $2}')
    acquired=$(python3 -c "print(int($acquired + ${v:-0}))")
    v=$(curl -fsS "http://127.0.0.1:$p/metrics" | awk '/^chat_lease_renewals_total /{print $2}')
    renewed=$(python3 -c "print(int($renewed + ${v:-0}))")
  done
  echo "leases: $acquired taken, $renewed renewals (lightweight transactions), none per message"
}

rooms() {
  "$BENCH" --target chat --scenario rooms --nodes "$1" --users "$USERS" \
    --group-size "$GROUP" --rate "$RATE" --ramp 8 --step 3 --duration 5 \
    --warmup 1 --jwt-secret "$SECRET" --quiet --json "$2"
}

echo "== one node" >&2
CHAT__AUTH__JWT_SECRET=$SECRET CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0 CHAT__AUTH__REQUIRE_SESSION=false \
  env "${storage_env[@]}" target/release/chat-node --config cluster.toml \
  --http 127.0.0.1:18190 --data-dir "$tmp/single" >"$tmp/single.log" 2>&1 &
single=$!
until curl -fsS http://127.0.0.1:18190/readyz >/dev/null 2>&1; do sleep 0.1; done
before=$(cpu_s "$single" $cql_pid)
rooms http://127.0.0.1:18190 "$OUT/cluster-bench-single.json"
per_delivery "$before" "$(cpu_s "$single" $cql_pid)" "$OUT/cluster-bench-single.json"
[ "$STORAGE" != scylla ] || leases 18190
kill -TERM "$single"; wait "$single" || true

echo "== three nodes" >&2
BIN=target/release/chat-node DATA="$tmp/cluster" BASE_HTTP=18180 BASE_CLUSTER=19180 \
  REDIS_PORT=16390 CHAT_JWT_SECRET=$SECRET CHAT__AUTH__REQUIRE_SESSION=false \
  CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0 STORAGE=$STORAGE scripts/cluster.sh >"$tmp/cluster.out" 2>&1 &
pids+=($!)
until grep -q "cluster of 3 nodes up" "$tmp/cluster.out" 2>/dev/null; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$tmp/cluster.out" >&2; exit 1; }
  sleep 0.2
done
node_pids=$(pgrep -f "chat-node --config cluster.toml" | tr '\n' ' ')
before=$(cpu_s $node_pids $cql_pid)
rooms http://127.0.0.1:18181,http://127.0.0.1:18182,http://127.0.0.1:18183 \
  "$OUT/cluster-bench-three.json"
per_delivery "$before" "$(cpu_s $node_pids $cql_pid)" "$OUT/cluster-bench-three.json"
[ "$STORAGE" != scylla ] || leases 18181 18182 18183
