#!/usr/bin/env bash
# The standard set's reconnect storm against chat-node and Centrifugo only,
# interleaved: ROUNDS pairs, a fresh server for each run, the server pinned
# to core 0 and the harness to core 1. Faster than the whole standard set
# (scripts/bench.sh) when only the reconnect is in question; there,
# Centrifugo's reconnect runs after its history run on the same process,
# here each run starts fresh. Benchmark only on a quiet machine.
#
#   scripts/bench-reconnect.sh            3 rounds
#   ROUNDS=6 scripts/bench-reconnect.sh
#
# Prints, per run: seconds until every client caught up, per-client p50 and
# p99, the server's CPU per client, and the harness's share of its core
# (over 70 %: HARNESS-BOUND, and the seconds of that run do not count).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECRET="reconnect-secret-$(date +%s)-0123456789abcdef"
cargo build --release -q -p chat-node -p chat-bench
CF_BIN=$(bash scripts/centrifugo.sh build | tail -1)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ARGS=(--scenario reconnect --users 1000 --group-size 10 --rate 1 --warmup 2 --duration 10
  --source-ips 127.0.0.1,127.0.0.2)
for _ in $(seq "$ROUNDS"); do
  for target in chat centrifugo; do
    port=$(free_port)
    dir=$(mktemp -d)
    if [ "$target" = chat ]; then
      env CHAT__AUTH__JWT_SECRET="$SECRET" CHAT__LIMITS__SENDS_PER_SECOND=10000 \
        CHAT__LIMITS__SEND_BURST=10000 CHAT__AUTH__REQUIRE_SESSION=false \
        CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0 RUST_LOG=warn \
        taskset -c 0 target/release/chat-node --http "127.0.0.1:$port" --data-dir "$dir/data" \
        >"$dir/log" 2>&1 &
    else
      bash scripts/centrifugo.sh config --port "$port" --secret "$SECRET" --memory-tuning 1 \
        --out "$dir/centrifugo.json"
      GOMAXPROCS=1 taskset -c 0 "$CF_BIN" -c "$dir/centrifugo.json" >"$dir/log" 2>&1 &
    fi
    pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    taskset -c 1 target/release/chat-bench --target "$target" --nodes "http://127.0.0.1:$port" \
      --jwt-secret "$SECRET" "${ARGS[@]}" --pid "$pid" --quiet --json "$dir/run.json" >/dev/null
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    python3 - "$target" "$dir/run.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[2]))["reconnect"]
print(f"{sys.argv[1]:>10}: {c['caught_up']}/{c['clients']} caught up in {c['all_caught_up_s']:.3f} s, "
      f"per client p50 {c['catch_up_ms']['p50']:.0f} p99 {c['catch_up_ms']['p99']:.0f} ms; "
      f"server CPU {c.get('server_cpu_ms_per_client') or 0:.3f} ms per client, "
      f"harness {100 * (c.get('harness_cpu_share') or 0):.0f}% of its core"
      f"{' HARNESS-BOUND' if c.get('harness_bound') else ''}")
PY
    rm -rf "$dir"
  done
done
