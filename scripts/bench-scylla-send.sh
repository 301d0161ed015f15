#!/usr/bin/env bash
# What a send costs a chat node on ScyllaDB, apart from what it costs the
# database: one release node pinned to core 0; the CQL server
# (scripts/cql.sh with the production commit log, fsync every 10 s) and the
# harness on core 1. The rooms scenario (USERS in groups of GROUP) at each
# of RATES messages per second per user, SECS seconds each; then the same on
# the embedded store (its own fsynced journal, on core 0 with the node) to
# compare. Per window: the node's CPU per send and per delivery, the CQL
# server's CPU per send, and the requests the node sent the database per
# send (chat_store_requests_total, counted by its driver). About 3 minutes.
#
#   scripts/bench-scylla-send.sh
#   USERS=400 RATES=1,2 scripts/bench-scylla-send.sh
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${USERS:-200}"; GROUP="${GROUP:-10}"; RATES="${RATES:-4,1,2,4}"; SECS="${SECS:-10}"
SECRET=bench-scylla-send-jwt-secret-0123456789abcdef
PORT=18395
OUT=bench/results
mkdir -p "$OUT"
cargo build --release -q -p chat-node -p chat-bench
tmp=$(mktemp -d)
node=""
cleanup() {
  [ -z "$node" ] || { kill -TERM "$node" 2>/dev/null; wait "$node" 2>/dev/null; } || true
  bash scripts/cql.sh stop --dir "$tmp/cql" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== starting the CQL server on core 1" >&2
cql=$(CQL_COMMITLOG=periodic taskset -c 1 bash scripts/cql.sh start --dir "$tmp/cql" | sed -n 's/^SCYLLA_NODES=//p')
cql_pid=$(cat "$tmp/cql/node1/pid")

# The node's database requests when a window opens and once it settled.
count="curl -fsS http://127.0.0.1:$PORT/metrics | awk -v r=\"\$CHAT_BENCH_RATE\" -v w=%s '\$1 == \"chat_store_requests_total\" {print w, r, \$2 + 0}' >>$tmp/requests.txt"
# shellcheck disable=SC2059
hook_open=$(printf "$count" open)
# shellcheck disable=SC2059
hook_settled=$(printf "$count" settled)

run() { # label json env...
  local label=$1 json=$2
  shift 2
  : >"$tmp/requests.txt"
  env CHAT__AUTH__JWT_SECRET="$SECRET" CHAT__AUTH__REQUIRE_SESSION=false \
    CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0 "$@" taskset -c 0 target/release/chat-node \
    --http "127.0.0.1:$PORT" --data-dir "$tmp/$label" >"$tmp/$label.log" 2>&1 &
  node=$!
  until curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    kill -0 "$node" 2>/dev/null || { tail -20 "$tmp/$label.log" >&2; exit 1; }
    sleep 0.1
  done
  local pids=$node
  [ "$label" != scylla ] || pids="$node,$cql_pid"
  echo "== $label: $USERS users in groups of $GROUP at $RATES msg/s each" >&2
  taskset -c 1 target/release/chat-bench --target chat --scenario rooms \
    --nodes "http://127.0.0.1:$PORT" --users "$USERS" --group-size "$GROUP" \
    --fixed-rates "$RATES" --fixed-step "$SECS" --warmup 2 --pid "$pids" --server-cores 1 \
    --hook-open "$hook_open" --hook-settled "$hook_settled" \
    --jwt-secret "$SECRET" --quiet --json "$json"
  cp "$tmp/requests.txt" "$tmp/$label.requests"
  kill -TERM "$node"
  wait "$node" || true
  node=""
}

run scylla "$OUT/scylla-send.json" CHAT__STORAGE__BACKEND=scylla \
  "CHAT__STORAGE__SCYLLA__NODES=[\"$cql\"]" CHAT__SEARCH__BACKEND=off
# Search off on both: a node on ScyllaDB indexes into OpenSearch or not at
# all, and the embedded index would add its own work to the embedded run.
run embedded "$OUT/scylla-send-embedded.json" CHAT__SEARCH__BACKEND=off

python3 - "$OUT/scylla-send.json" "$tmp/scylla.requests" "$OUT/scylla-send-embedded.json" \
  "$tmp/embedded.requests" <<'PY' | tee "$OUT/scylla-send.txt"
import json, sys
args = sys.argv[1:]
for path, requests_path in zip(args[::2], args[1::2]):
    run = json.load(open(path))
    counts = {}
    for line in open(requests_path):
        what, rate, n = line.split()
        counts.setdefault(rate, {})[what] = float(n)
    label = "ScyllaDB" if "embedded" not in path else "embedded"
    print(f"{label}:")
    for step in run.get("fixed") or run["steps"]:
        sent, delivered = step["accepted"], step["cpu_window_deliveries"]
        by_pid = step.get("server_cpu_s_by_pid") or []
        if not sent or not by_pid:
            continue
        rate = step["rate_per_user"]
        c = next((v for k, v in counts.items() if abs(float(k) - rate) < 1e-9), {})
        requests = (c.get("settled", 0) - c.get("open", 0)) / sent if c else float("nan")
        line = (f"  {rate:g} msg/s/user: {step['accepted_per_s']:.0f} sends/s, "
                f"node {by_pid[0] / sent * 1e6:.0f} us CPU per send "
                f"({by_pid[0] / max(delivered, 1) * 1e6:.1f} per delivery)")
        if len(by_pid) > 1:
            line += f", CQL server {by_pid[1] / sent * 1e6:.0f} us per send, {requests:.2f} requests per send"
        line += f"; ack p99 {step['ack_ms']['p99']:.1f} ms, harness {step.get('harness_cpu_share') or 0:.0%} of its core"
        print(line)
PY
