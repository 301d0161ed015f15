#!/usr/bin/env bash
# What notifications cost: the `rooms` scenario with a share of each room's
# members offline, each with a Web Push subscription at a push service the
# harness runs (chat-bench --offline-share; it answers 201 like a real one),
# against a node with the notification worker off and then on. Each run is
# a fresh node pinned to core 0 with the harness on core 1. Prints, per
# fixed rate: live deliveries/s, pushes/s, the node's CPU per delivery, and
# the CPU per push (what the run with notifications spent over the run
# without, divided by the pushes); then each run's peak live deliveries/s
# (p99 <= 50 ms) and their ratio: the outbox must not lower it by more than
# 10 %. Benchmark only on a quiet machine: no build, no other test.
#
#   scripts/bench-notify.sh
#   USERS=1000 GROUP=10 OFFLINE=0.3 FIXED=1,2.5 RATE=2 RAMP=8 scripts/bench-notify.sh
#
# Results: bench/results/notify-{off,on}.json (chat-bench's reports) and the
# push counters the node exported at the end of each run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
USERS=${USERS:-1000}
GROUP=${GROUP:-10}
OFFLINE=${OFFLINE:-0.3}
FIXED=${FIXED:-1,2.5}
RATE=${RATE:-2}
RAMP=${RAMP:-8}
OUT_DIR=${OUT_DIR:-bench/results}
SECRET="notify-secret-$(date +%s)-0123456789abcdef"

cargo build --release -q -p chat-node -p chat-bench
BIN=$ROOT/target/release
mkdir -p "$OUT_DIR"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

NODE_PID=""
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chat-notify.XXXXXX")
cleanup() {
  [ -z "$NODE_PID" ] || kill "$NODE_PID" 2>/dev/null || true
  rm -rf "$RUN_DIR/data"
}
trap cleanup EXIT

run() { # on|off
  local mode=$1 port
  port=$(free_port)
  rm -rf "$RUN_DIR/data"
  env CHAT__AUTH__JWT_SECRET="$SECRET" CHAT__AUTH__REQUIRE_SESSION=false \
    CHAT__LIMITS__SENDS_PER_SECOND=10000 CHAT__LIMITS__SEND_BURST=10000 \
    CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0 \
    CHAT__NOTIFICATIONS__ENABLED="$([ "$mode" = on ] && echo true || echo false)" \
    CHAT__NOTIFICATIONS__PUSH__ALLOW_LOOPBACK_HTTP=true RUST_LOG=warn \
    taskset -c 0 "$BIN/chat-node" --http "127.0.0.1:$port" --data-dir "$RUN_DIR/data" \
    >"$RUN_DIR/node-$mode.log" 2>&1 &
  NODE_PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  echo "== notifications $mode: $USERS users in groups of $GROUP, $OFFLINE of each offline with push" >&2
  taskset -c 1 "$BIN/chat-bench" --target chat --nodes "http://127.0.0.1:$port" --jwt-secret "$SECRET" \
    --scenario rooms --users "$USERS" --group-size "$GROUP" --offline-share "$OFFLINE" \
    --fixed-rates "$FIXED" --rate "$RATE" --ramp "$RAMP" --step 4 --no-half-peak \
    --pid "$NODE_PID" --server-cores 1 --source-ips 127.0.0.1,127.0.0.2 --quiet --json "$OUT_DIR/notify-$mode.json" >&2
  # The node's own count of what it pushed, dropped and failed.
  (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3) |
    grep '^chat_notifications_.*push' >"$OUT_DIR/notify-$mode.metrics" || true
  kill "$NODE_PID" 2>/dev/null || true
  wait "$NODE_PID" 2>/dev/null || true
  NODE_PID=""
}

run off
run on

python3 - "$OUT_DIR" <<'PY'
import json, sys
out = sys.argv[1]
off, on = (json.load(open(f"{out}/notify-{m}.json")) for m in ("off", "on"))
print("rate/user  deliveries/s off   on   pushes/s  us/delivery off   on   us per push")
for a, b in zip(off["fixed"], on["fixed"]):
    pushes = b.get("pushes_per_s") or 0
    ca, cb = a.get("server_cpu_s"), b.get("server_cpu_s")
    per_push = "-"
    if ca is not None and cb is not None and b.get("pushes"):
        # CPU seconds over the same window length, the difference spread over the pushes.
        extra = cb / b["cpu_window_s"] - ca / a["cpu_window_s"]
        per_push = f"{extra * 1e6 / pushes:.1f}"
    f = lambda v: "-" if v is None else f"{v:.2f}"
    print(f"{a['rate_per_user']:>9.2f} {a['deliveries_per_s']:>16.0f} {b['deliveries_per_s']:>5.0f} "
          f"{pushes:>9.0f} {f(a.get('server_cpu_us_per_delivery')):>15} "
          f"{f(b.get('server_cpu_us_per_delivery')):>5} {per_push:>13}")
pa, pb = off.get("peak"), on.get("peak")
if pa and pb:
    print(f"peak live deliveries/s: off {pa['deliveries_per_s']:.0f}, on {pb['deliveries_per_s']:.0f} "
          f"({(pb['deliveries_per_s'] / pa['deliveries_per_s'] - 1) * 100:+.1f} %), "
          f"pushes/s at the on peak {pb.get('pushes_per_s') or 0:.0f}")
else:
    print("a run found no peak: see the reports")
for m in ("off", "on"):
    print(f"node counters, {m}: " + ", ".join(l.strip() for l in open(f"{out}/notify-{m}.metrics")))
PY
