#!/usr/bin/env bash
# Before and after: the `rooms` scenario at a fixed rate against another
# revision's chat-node and this tree's, interleaved, each run on a fresh
# node pinned to core 0 with the harness on core 1. Prints deliveries/s,
# p50/p99 send-to-receive, ack p99 and the node's CPU time per delivery
# over the last 10 s of each run (from /proc). Benchmark only on a quiet
# machine: no build, no other test.
#
#   scripts/bench-ab.sh REV                 5.27 msg/s per user, 3 rounds
#   RATE=10.33 ROUNDS=2 scripts/bench-ab.sh REV
#   SCENARIO=idle scripts/bench-ab.sh REV   memory per idle connection
#                                           (CONNECTIONS, default 10000)
#   SCENARIO=history scripts/bench-ab.sh REV   pages/s of 50 readers (the
#                                           standard set's history run)
#   SCENARIO=reconnect scripts/bench-ab.sh REV seconds until every client
#                                           caught up (the standard set's)
#   NODE_ENV="CHAT__ACTORS__SESSIONS_SLEEP=false" ...   extra settings for
#                                           this tree's node only
#
# REV is built once into target/ab-REV (a worktree under it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REV=${1:?usage: scripts/bench-ab.sh REV}
RATE=${RATE:-5.27}
ROUNDS=${ROUNDS:-3}
SCENARIO=${SCENARIO:-rooms}
CONNECTIONS=${CONNECTIONS:-10000}
read -r -a NODE_ENV <<<"${NODE_ENV:-}"
SECRET="ab-secret-$(date +%s)-0123456789abcdef"

old_dir=$ROOT/target/ab-$REV
if [ ! -x "$old_dir/target/release/chat-node" ]; then
  rm -rf "$old_dir/src"
  git worktree add -f "$old_dir/src" "$REV" >/dev/null
  (cd "$old_dir/src" && CARGO_TARGET_DIR="$old_dir/target" cargo build --release -q -p chat-node -p chat-bench)
  git worktree remove --force "$old_dir/src"
fi
cargo build --release -q -p chat-node -p chat-bench

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null; }

run() { # label bin_dir
  local label=$1 bin=$2 port dir pid sampler out
  port=$(free_port)
  dir=$(mktemp -d)
  out=$(mktemp -d)
  # Keys a build does not know are errors: set only those it knows.
  local env=(CHAT__AUTH__JWT_SECRET="$SECRET" CHAT__LIMITS__SENDS_PER_SECOND=10000
    CHAT__LIMITS__SEND_BURST=10000 CHAT__LIMITS__REACTIONS_PER_SECOND=10000
    CHAT__LIMITS__REACTION_BURST=10000 RUST_LOG=warn)
  local defaults
  defaults=$("$bin/chat-node" default-config 2>/dev/null || true)
  grep -q '^require_session' <<<"$defaults" && env+=(CHAT__AUTH__REQUIRE_SESSION=false)
  grep -q '^max_connections_per_ip' <<<"$defaults" && env+=(CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0)
  [ "$label" = tree ] && env+=("${NODE_ENV[@]}")
  env "${env[@]}" taskset -c 0 "$bin/chat-node" --http "127.0.0.1:$port" --data-dir "$dir" \
    >"$out/node.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  if [ "$SCENARIO" = idle ]; then
    # A fresh node that has done nothing: its RSS before and with the
    # connections open, over their number.
    taskset -c 1 "$bin/chat-bench" --target chat --nodes "http://127.0.0.1:$port" --jwt-secret "$SECRET" \
      --scenario idle --connections "$CONNECTIONS" --duration 3 --pid "$pid" --prewarm \
      --source-ips 127.0.0.1,127.0.0.2 --quiet --json "$out/run.json" >/dev/null
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    python3 - "$label" "$out" <<'PY'
import json, sys
label, out = sys.argv[1], sys.argv[2]
m = json.load(open(f"{out}/run.json"))["memory"]
print(f"{label:>6}: {m['kib_per_connection']:.2f} KiB per idle connection "
      f"(RSS {m['rss_before'] / 2**20:.0f} -> {m['rss_after'] / 2**20:.0f} MiB)")
PY
    rm -rf "$dir" "$out"
    return
  fi
  if [ "$SCENARIO" = history ] || [ "$SCENARIO" = reconnect ]; then
    # The standard set's parameters (scripts/bench.sh).
    local args=(--scenario history --users 50 --group-size 5 --prefill 1000 --page-size 50
      --warmup 2 --duration 10)
    [ "$SCENARIO" = history ] || args=(--scenario reconnect --users 1000 --group-size 10
      --rate 1 --warmup 2 --duration 10 --source-ips 127.0.0.1,127.0.0.2)
    taskset -c 1 "$bin/chat-bench" --target chat --nodes "http://127.0.0.1:$port" --jwt-secret "$SECRET" \
      "${args[@]}" --pid "$pid" --quiet --json "$out/run.json" >/dev/null
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    python3 - "$label" "$out" "$SCENARIO" <<'PY'
import json, sys
label, out, scenario = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(open(f"{out}/run.json"))
if scenario == "history":
    h = r["history"]
    us, share = h.get("server_cpu_us_per_page"), h.get("harness_cpu_share")
    window = (f", {us:.1f} us node CPU per page, harness {100 * share:.0f}% of its core"
              f"{' HARNESS-BOUND' if h.get('harness_bound') else ''}") if us and share else ""
    print(f"{label:>6}: {h['pages_per_s']:.0f} pages/s, p50 {h['latency_ms']['p50']:.2f} "
          f"p99 {h['latency_ms']['p99']:.2f} ms, errors {h['errors']}{window}")
else:
    c = r["reconnect"]
    print(f"{label:>6}: all {c['caught_up']}/{c['clients']} caught up in {c['all_caught_up_s']:.3f} s, "
          f"per client p50 {c['catch_up_ms']['p50']:.0f} p99 {c['catch_up_ms']['p99']:.0f} ms, "
          f"failed {c['failed']}; server CPU {c.get('server_cpu_ms_per_client') or 0:.2f} ms per client, "
          f"harness {100 * (c.get('harness_cpu_share') or 0):.0f}% of its core"
          f"{' HARNESS-BOUND' if c.get('harness_bound') else ''}")
PY
    rm -rf "$dir" "$out"
    return
  fi
  (while kill -0 "$pid" 2>/dev/null; do echo "$(date +%s.%N) $(cpu_ticks "$pid")"; sleep 0.25; done) >"$out/cpu" &
  sampler=$!
  taskset -c 1 "$bin/chat-bench" --target chat --nodes "http://127.0.0.1:$port" --jwt-secret "$SECRET" \
    --scenario rooms --users 1000 --group-size 10 --rate "$RATE" --warmup 3 --duration 10 \
    --source-ips 127.0.0.1,127.0.0.2 --quiet --json "$out/run.json" >/dev/null
  local ended
  ended=$(date +%s.%N)
  kill "$sampler" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  python3 - "$label" "$ended" "$out" <<'PY'
import json, sys
label, ended, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
samples = [tuple(map(float, l.split())) for l in open(f"{out}/cpu") if len(l.split()) == 2]
at = lambda t: min(samples, key=lambda s: abs(s[0] - t))
a, b = at(ended - 10.5), at(ended - 0.5)
cpu, secs = (b[1] - a[1]) / 100, b[0] - a[0]
step = json.load(open(f"{out}/run.json"))["steps"][-1]
us = cpu / (step["deliveries_per_s"] * secs) * 1e6
print(f"{label:>6}: {step['deliveries_per_s']:.0f} deliveries/s, p50 {step['latency_ms']['p50']:.2f} "
      f"p99 {step['latency_ms']['p99']:.2f} ack p99 {step['ack_ms']['p99']:.2f} ms; "
      f"node {100 * cpu / secs:.0f}% of its core = {us:.2f} us per delivery")
# Where the tail was: the worst tenths of a second of sending (the chat-bench
# of the tree reports them; an older one does not).
worst = step.get("worst_ms_by_tenth") or []
if worst:
    over = sum(1 for w in worst if w > 5)
    print(f"        worst tenth of a second {max(worst):.1f} ms; {over} of {len(worst)} tenths over 5 ms")
PY
  rm -rf "$dir" "$out"
}

if [ "$SCENARIO" = idle ]; then
  echo "idle, $CONNECTIONS connections; $REV vs this tree" >&2
elif [ "$SCENARIO" != rooms ]; then
  echo "$SCENARIO (the standard set's parameters); $REV vs this tree" >&2
else
  echo "rooms, 1000 users in groups of 10, $RATE msg/s per user; $REV vs this tree" >&2
fi
for _ in $(seq "$ROUNDS"); do
  run "$REV" "$old_dir/target/release"
  run "tree" "$ROOT/target/release"
done
