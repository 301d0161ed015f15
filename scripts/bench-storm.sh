#!/usr/bin/env bash
# A reconnect storm on a local 3-node cluster (Redis presence; the embedded
# store, or STORAGE=scylla on a local CQL server): CLIENTS clients (default
# 30,000) in groups of GROUP, each sending RATE messages a second, from three
# harness processes (`chat-bench --scenario storm`; a process may hold at
# most `ulimit -n` descriptors, 20,000 here), each spread over all three
# nodes. Once all have joined and WARM_S seconds passed:
#
#   MODE=kill     node 3 is killed with SIGKILL: its third of the clients
#                 reconnect to the other two at once and catch up (default)
#   MODE=restart  all three nodes are stopped (SIGTERM, drained) and started
#                 again: every client reconnects and catches up
#
# then AFTER_S more seconds of traffic. Prints a line per second (clients
# open, dropped and caught up; each node's resident memory; Redis commands,
# the nodes' store reads and store write batches per second) and the time
# from the first drop until the last dropped client caught up, per client
# percentiles, and the clients that never came back. Nodes, Redis and the
# harnesses share the machine's two cores: this shows whether a storm is
# absorbed and what it costs, not a peak. Several minutes.
#
#   scripts/bench-storm.sh
#   MODE=restart scripts/bench-storm.sh
#   CLIENTS=3000 STORAGE=scylla scripts/bench-storm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS="${CLIENTS:-30000}"; GROUP="${GROUP:-10}"; RATE="${RATE:-0.01}"
# Each node's connection cap (listen.max_connections): the two survivors of
# a kill must hold every client between them.
MAX_CONNECTIONS="${MAX_CONNECTIONS:-$((CLIENTS * 55 / 100))}"
MODE="${MODE:-kill}"; STORAGE="${STORAGE:-embedded}"
WARM_S="${WARM_S:-10}"; AFTER_S="${AFTER_S:-60}"
SECRET=bench-storm-jwt-secret-0123456789abcdef
COOKIE=bench-storm-cookie-0123456789
OUT=bench/results
mkdir -p "$OUT"
case "$MODE" in kill | restart) ;; *) echo "MODE must be kill or restart" >&2; exit 1 ;; esac
per=$(((CLIENTS + 2) / 3))
limit=$(ulimit -n)
[ "$per" -le $((limit - 500)) ] || { echo "each harness holds $per connections; ulimit -n is $limit" >&2; exit 1; }
cargo build --release -q -p chat-node -p chat-bench
BENCH=target/release/chat-bench
BIN=target/release/chat-node
tmp=$(mktemp -d)
node_pids=("" "" "")
others=()
cleanup() {
  local p
  # The nodes' data is thrown away: no drain.
  for p in "${node_pids[@]}"; do [ -z "$p" ] || kill -KILL "$p" 2>/dev/null || true; done
  for p in "${others[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${others[@]}" "${node_pids[@]}"; do [ -z "$p" ] || wait "$p" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  [ "$STORAGE" != scylla ] || bash scripts/cql.sh stop --dir "$tmp/cql" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

REDIS_PORT=16491
http_port() { echo $((18381 + $1)); }
cluster_port() { echo $((19381 + $1)); }
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$tmp/redis.log" 2>&1 &
others+=($!)
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
storage_env=()
if [ "$STORAGE" = scylla ]; then
  nodes=$(bash scripts/cql.sh start --dir "$tmp/cql" | sed -n 's/^SCYLLA_NODES=//p')
  # LEASE_MS: the nodes' lease on the database (storage.scylla.lease_ms).
  # The default 1 s lapses here while 30,000 clients set up at once (the
  # CQL server shares the two cores: a renewal waits longer than its term).
  storage_env=(CHAT__STORAGE__BACKEND=scylla "CHAT__STORAGE__SCYLLA__NODES=[\"$nodes\"]"
    CHAT__STORAGE__SCYLLA__KEYSPACE=chat_storm CHAT__SEARCH__BACKEND=off
    "CHAT__STORAGE__SCYLLA__LEASE_MS=${LEASE_MS:-3000}")
fi
seeds="[\"127.0.0.1:$(cluster_port 0)\",\"127.0.0.1:$(cluster_port 1)\",\"127.0.0.1:$(cluster_port 2)\"]"

start_node() { # index 0..2: node-1..node-3, on its data directory
  local i=$1
  env CHAT__NODE__NAME="node-$((i + 1))" CHAT__NODE__ID=$((i + 1)) CHAT__NODE__DATA_DIR="$tmp/node-$i" \
    CHAT__LISTEN__HTTP="127.0.0.1:$(http_port "$i")" CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0 \
    CHAT__LISTEN__MAX_CONNECTIONS="$MAX_CONNECTIONS" \
    CHAT__CLUSTER__LISTEN="127.0.0.1:$(cluster_port "$i")" CHAT__CLUSTER__SEEDS="$seeds" \
    CHAT__CLUSTER__COOKIE="$COOKIE" CHAT__PRESENCE__BACKEND=redis \
    CHAT__PRESENCE__REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    CHAT__AUTH__JWT_SECRET="$SECRET" CHAT__AUTH__REQUIRE_SESSION=false \
    "${storage_env[@]}" "$BIN" --config cluster.toml >>"$tmp/node-$i.log" 2>&1 &
  node_pids[i]=$!
  echo $! >"$tmp/node-$i.pid" # for the sampler, a subshell
}
wait_ready() {
  local i
  for i in 0 1 2; do
    until curl -fsS "http://127.0.0.1:$(http_port "$i")/readyz" >/dev/null 2>&1; do
      kill -0 "${node_pids[$i]}" 2>/dev/null || { tail -20 "$tmp/node-$i.log" >&2; exit 1; }
      sleep 0.1
    done
  done
}
for i in 0 1 2; do start_node "$i"; done
wait_ready
urls="http://127.0.0.1:$(http_port 0),http://127.0.0.1:$(http_port 1),http://127.0.0.1:$(http_port 2)"

harness=()
for i in 0 1 2; do
  "$BENCH" --target chat --scenario storm --nodes "$urls" --users "$per" --group-size "$GROUP" \
    --rate "$RATE" --duration $((WARM_S + AFTER_S)) --source-ips "127.0.0.$((2 * i + 11)),127.0.0.$((2 * i + 12))" \
    --setup-timeout 600 --jwt-secret "$SECRET" --quiet --json "$tmp/storm-$i.json" >"$tmp/storm-$i.log" 2>&1 &
  harness+=($!)
done
others+=("${harness[@]}")
t0=$(date +%s)
until [ "$(grep -l "storm: all" "$tmp"/storm-*.log 2>/dev/null | wc -l)" -eq 3 ]; do
  for p in "${harness[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "a harness ended early:" >&2; for f in "$tmp"/storm-*.log; do tail -n 5 "$f" >&2; done; exit 1; }
  done
  [ $(($(date +%s) - t0)) -lt 900 ] || { echo "not all joined within 15 minutes" >&2; exit 1; }
  sleep 1
done
echo "all $((3 * per)) clients joined after $(($(date +%s) - t0)) s" >&2

metric() { # port name: the sum of a metric's samples on that node (0 when down)
  { curl -fsS -m 1 "http://127.0.0.1:$1/metrics" 2>/dev/null || true; } | awk -v n="$2" '$1 == n {s += $2} END {print s + 0}'
}
rss_mib() { awk '/^VmRSS:/ {printf "%d", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
redis_commands() { { redis-cli -p "$REDIS_PORT" INFO stats 2>/dev/null || true; } | awk -F: '/^total_commands_processed:/ {n = $2 + 0} END {print n + 0}'; }
sample() { # one line: unix ms, RSS of each node, Redis commands, store reads, store batches, database requests
  local i pid rss="" reads=0 batches=0 requests=0
  for i in 0 1 2; do
    pid=$(cat "$tmp/node-$i.pid")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then rss="$rss $(rss_mib "$pid")"; else rss="$rss 0"; fi
    reads=$((reads + $(metric "$(http_port "$i")" chat_store_read_latency_seconds_count)))
    batches=$((batches + $(metric "$(http_port "$i")" chat_store_batch_size_count)))
    requests=$((requests + $(metric "$(http_port "$i")" chat_store_requests_total)))
  done
  echo "$(date +%s%3N)$rss $(redis_commands) $reads $batches $requests"
}
( while true; do sample; sleep 1; done ) >"$tmp/samples.txt" &
others+=($!)
sleep "$WARM_S"
event_ms=$(date +%s%3N)
if [ "$MODE" = kill ]; then
  echo "== killing node-3 (SIGKILL)" >&2
  kill -9 "${node_pids[2]}"
  wait "${node_pids[2]}" 2>/dev/null || true
  node_pids[2]=""
else
  echo "== restarting every node (SIGTERM, then started again)" >&2
  for i in 0 1 2; do kill -TERM "${node_pids[$i]}"; done
  for i in 0 1 2; do wait "${node_pids[$i]}" 2>/dev/null || true; node_pids[i]=""; done
  down_ms=$(date +%s%3N)
  for i in 0 1 2; do start_node "$i"; done
  wait_ready
  echo "nodes stopped in $((down_ms - event_ms)) ms, all ready again after $(($(date +%s%3N) - event_ms)) ms" >&2
fi
for p in "${harness[@]}"; do wait "$p" || { echo "a harness failed:" >&2; for f in "$tmp"/storm-*.log; do tail -n 20 "$f" >&2; done; exit 1; }; done
refused=0
for i in 0 1 2; do refused=$((refused + $(metric "$(http_port "$i")" chat_connections_refused_total))); done
echo "connections refused at a full node (listen.max_connections = $MAX_CONNECTIONS): $refused" >&2
python3 - "$tmp" "$event_ms" "$MODE" "$OUT/storm-$MODE-$STORAGE.json" "$((3 * per))" <<'PY' | tee "$OUT/storm-$MODE-$STORAGE.txt"
import json, sys
tmp, event_ms, mode, out, clients = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
runs = [json.load(open(f"{tmp}/storm-{i}.json")) for i in range(3)]
storms = [r["reconnect"] for r in runs]
# A line cut short (the script stopped mid-sample) is left out.
samples = [list(map(int, l.split())) for l in open(f"{tmp}/samples.txt") if len(l.split()) == 8]
# Harness timelines: "t=..s at_ms=.. open=.. dropped=.. caught_up=.. failed=.."
lines = {}
for r in runs:
    for note in r["notes"]:
        if not note.startswith("t="):
            continue
        kv = dict(p.split("=") for p in note.split())
        sec = (int(kv["at_ms"]) - event_ms) // 1000
        row = lines.setdefault(sec, [0, 0, 0, 0])
        for k, key in enumerate(("open", "dropped", "caught_up", "failed")):
            row[k] += int(kv[key])
print(f"{'s':>4} {'open':>6} {'dropped':>7} {'caught up':>9} {'failed':>6}  RSS MiB node-1/2/3   Redis cmd/s  store reads/s  write batches/s  DB requests/s")
prev = None
by_sec = {}
for s in samples:
    by_sec[(s[0] - event_ms) // 1000] = s
peak = [0, 0, 0]
before = None
for sec in sorted(k for k in set(lines) | set(by_sec) if k >= -5):
    s = by_sec.get(sec)
    h = lines.get(sec)
    rates = ""
    if s and prev:
        dt = max(1, s[0] - prev[0]) / 1000
        # A node that restarted counts from 0 again: no negative rates.
        rate = lambda k: max(0, s[k] - prev[k]) / dt
        rates = f"{rate(4):11.0f}  {rate(5):13.0f}  {rate(6):15.0f}  {rate(7):13.0f}"
    if s:
        if sec < 0:
            before = s[1:4]
        else:
            peak = [max(a, b) for a, b in zip(peak, s[1:4])]
        prev = s
    rss = "/".join(str(x) for x in s[1:4]) if s else "-"
    h = h or ["-"] * 4
    print(f"{sec:>4} {h[0]:>6} {h[1]:>7} {h[2]:>9} {h[3]:>6}  {rss:>20}  {rates}")
dropped = sum(s["clients"] for s in storms)
caught = sum(s["caught_up"] for s in storms)
failed = sum(s["failed"] for s in storms)
windows = []
for r in runs:
    for note in r["notes"]:
        if note.startswith("window "):
            kv = dict(p.split("=") for p in note.split()[1:])
            if int(kv["first_drop_us"]) > 0:
                windows.append((int(kv["first_drop_us"]), int(kv["last_caught_up_us"])))
first = min(w[0] for w in windows) if windows else 0
last = max(w[1] for w in windows) if windows else 0
p50 = max(s["catch_up_ms"]["p50"] for s in storms)
p99 = max(s["catch_up_ms"]["p99"] for s in storms)
summary = {
    "mode": mode, "clients": clients, "dropped": dropped, "caught_up": caught, "failed": failed,
    "all_caught_up_s": (last - first) / 1e6, "from_event_s": (last / 1000 - event_ms) / 1000,
    "per_client_p50_ms_max_of_harnesses": p50, "per_client_p99_ms_max_of_harnesses": p99,
    "rss_mib_before": before, "rss_mib_peak_after": peak,
}
print(json.dumps(summary, indent=1))
json.dump(summary, open(out, "w"), indent=1)
PY
