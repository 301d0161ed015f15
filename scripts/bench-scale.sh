#!/usr/bin/env bash
# Many idle connections on one machine: a local 3-node cluster
# (scripts/cluster.sh, Redis presence) holds CONNECTIONS idle WebSocket
# connections (default 50,000), one harness process per node (a process may
# hold at most `ulimit -n` descriptors, 20,000 here), each from its own pair
# of loopback source addresses; then, on top of them, a `rooms` run over the
# three nodes (and the same run before, on the bare cluster, to compare).
# Prints each node's memory per idle connection, what they cost Redis while
# idle, and the rooms latency. Nodes, Redis and harnesses share the machine's
# cores: this shows what holding that many costs and that traffic still
# flows, not a peak.
#
#   scripts/bench-scale.sh
#   CONNECTIONS=30000 ROOMS_RATE=2 scripts/bench-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS="${CONNECTIONS:-50000}"
ROOMS_USERS="${ROOMS_USERS:-1000}"; ROOMS_GROUP="${ROOMS_GROUP:-10}"; ROOMS_RATE="${ROOMS_RATE:-1}"
HOLD_S="${HOLD_S:-90}"
SECRET=bench-scale-jwt-secret-0123456789abcdef
OUT=bench/results
mkdir -p "$OUT"
cargo build --release -q -p chat-node -p chat-bench
BENCH=target/release/chat-bench
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

per_node=$(((CONNECTIONS + 2) / 3))
limit=$(ulimit -n)
if [ "$per_node" -gt $((limit - 500)) ]; then
  echo "each node and harness holds $per_node connections; ulimit -n is $limit" >&2
  exit 1
fi

BIN=target/release/chat-node DATA="$tmp/cluster" BASE_HTTP=18280 BASE_CLUSTER=19280 \
  REDIS_PORT=16490 CHAT_JWT_SECRET=$SECRET CHAT__AUTH__REQUIRE_SESSION=false \
  CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0 scripts/cluster.sh >"$tmp/cluster.out" 2>&1 &
pids+=($!)
until grep -q "cluster of 3 nodes up" "$tmp/cluster.out" 2>/dev/null; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$tmp/cluster.out" >&2; exit 1; }
  sleep 0.2
done
ports=(18281 18282 18283)
node_pid() { # port: the process listening on it
  ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}
open_connections() {
  local total=0 p v
  for p in "${ports[@]}"; do
    v=$(curl -fsS "http://127.0.0.1:$p/metrics" | awk '/^chat_connections_open /{print $2}')
    total=$((total + ${v%.*}))
  done
  echo "$total"
}

rooms() { # source addresses, json
  "$BENCH" --target chat --scenario rooms \
    --nodes http://127.0.0.1:18281,http://127.0.0.1:18282,http://127.0.0.1:18283 \
    --users "$ROOMS_USERS" --group-size "$ROOMS_GROUP" --rate "$ROOMS_RATE" --warmup 2 --duration 10 \
    --source-ips "$1" --jwt-secret "$SECRET" --quiet --json "$2"
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
node_ticks() { local t=0 p; for p in "${ports[@]}"; do t=$((t + $(ticks "$(node_pid "$p")"))); done; echo $t; }
hz=$(getconf CLK_TCK)
b0=$(node_ticks); sleep 10; b1=$(node_ticks)
bare_idle="the bare cluster, idle: the three nodes $(( (b1 - b0) * 1000 / hz / 10 )) ms of CPU per second"
echo "$bare_idle" >&2

echo "== rooms on the bare cluster: $ROOMS_USERS users in groups of $ROOMS_GROUP, $ROOMS_RATE msg/s each" >&2
rooms 127.0.0.9,127.0.0.10 "$OUT/scale-rooms-bare.json"

echo "== $CONNECTIONS idle connections over 3 nodes ($per_node each)" >&2
idle=()
for i in 0 1 2; do
  pid=$(node_pid "${ports[$i]}")
  [ -n "$pid" ] || { echo "no chat-node on ${ports[$i]}" >&2; cat "$tmp/cluster.out" >&2; exit 1; }
  "$BENCH" --target chat --scenario idle --nodes "http://127.0.0.1:${ports[$i]}" \
    --connections "$per_node" --duration "$HOLD_S" --prewarm --pid "$pid" \
    --source-ips "127.0.0.$((2 * i + 1)),127.0.0.$((2 * i + 2))" --setup-timeout 300 \
    --jwt-secret "$SECRET" --quiet --json "$tmp/idle-$i.json" >"$tmp/idle-$i.log" 2>&1 &
  idle+=($!)
done
t0=$(date +%s)
until [ "$(open_connections)" -ge $((per_node * 3)) ]; do
  for p in "${idle[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "an idle harness ended early:" >&2; cat "$tmp"/idle-*.log >&2; exit 1; }
  done
  [ $(($(date +%s) - t0)) -lt 600 ] || { echo "not all connected within 10 minutes" >&2; exit 1; }
  sleep 1
done
echo "all $((per_node * 3)) connected after $(($(date +%s) - t0)) s" >&2

# What holding them costs Redis: commands and CPU over 10 s of idleness.
redis_pid=$(ss -ltnpH "sport = :16490" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
redis_commands() { redis-cli -p 16490 INFO stats | awk -F: '/^total_commands_processed:/{print $2+0}'; }
c0=$(redis_commands); k0=$(ticks "$redis_pid"); n0=$(node_ticks); sleep 10
c1=$(redis_commands); k1=$(ticks "$redis_pid"); n1=$(node_ticks)
redis_idle="while $((per_node * 3)) connections idle: Redis $(((c1 - c0) / 10)) commands/s and \
$(( (k1 - k0) * 1000 / hz / 10 )) ms of CPU per second, the three nodes $(( (n1 - n0) * 1000 / hz / 10 )) ms of CPU per second"
echo "$redis_idle" >&2

echo "== rooms on top of them" >&2
rooms 127.0.0.7,127.0.0.8 "$OUT/scale-rooms.json"
rooms_end=$(date +%s)
held=$(open_connections)
for p in "${idle[@]}"; do wait "$p"; done
if [ $((rooms_end - t0)) -ge "$HOLD_S" ]; then
  echo "warning: the rooms run ended after the idle connections' hold began to end; raise HOLD_S" >&2
fi
python3 - "$tmp" "$OUT" "$held" "$per_node" "$bare_idle" "$redis_idle" <<'PY'
import json, sys
tmp, out, held, per_node = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print(sys.argv[5])
print(sys.argv[6])
total_before = total_after = conns = 0
for i in range(3):
    r = json.load(open(f"{tmp}/idle-{i}.json"))
    m = r["memory"]
    total_before += m["rss_before"]; total_after += m["rss_after"]; conns += m["connections"]
    print(f"node-{i + 1}: {m['connections']} idle connections, RSS {m['rss_before'] / 2**20:.0f} -> "
          f"{m['rss_after'] / 2**20:.0f} MiB: {m['kib_per_connection']:.2f} KiB per connection, "
          f"{m['dropped']} dropped")
print(f"cluster: {conns} idle connections, {(total_after - total_before) / conns / 1024:.2f} KiB per "
      f"connection; {held} open at the end of the rooms run ({3 * per_node} expected)")
for name, what in (("scale-rooms-bare", "rooms, bare cluster"), ("scale-rooms", "rooms on top of them")):
    step = json.load(open(f"{out}/{name}.json"))["steps"][-1]
    lat = step["latency_ms"]
    print(f"{what}: {step['deliveries_per_s']:.0f} deliveries/s, p50 {lat['p50']:.2f} ms, "
          f"p99 {lat['p99']:.2f} ms, ack p99 {step['ack_ms']['p99']:.2f} ms")
PY
