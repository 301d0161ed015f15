#!/usr/bin/env bash
# A deterministic figure for regressions: chat-node's instructions per
# delivery in a fixed, small `rooms` run, counted by valgrind's callgrind
# (instructions executed in user space by every thread of the node), so the
# figure does not move with the machine's load the way CPU time does.
#
#   scripts/bench-instructions.sh
#   USERS=200 GROUP=10 RATE=0.25 SECS=10 scripts/bench-instructions.sh
#
# What it does: builds the release chat-node and chat-bench, starts the node
# under `valgrind --tool=callgrind --instr-atstart=no` (a fresh data
# directory, durability sync), connects USERS clients in groups of GROUP,
# sends RATE msgs/s per user for a warm-up, then counts the node's
# instructions over one window of SECS seconds: the harness turns
# callgrind's instrumentation on just before the window opens
# (`--hook-open`) and dumps the counts once the window's last deliveries
# are in (`--hook-settled`). Prints instructions per delivery (and per
# message), and writes them with the run to OUT (bench/results/instructions.json).
#
# Under callgrind the node runs tens of times slower: keep RATE low enough
# that the window keeps up (the table shows `ok`: everything accepted and
# delivered; latency is not judged, valgrind's is not the node's). Compare
# figures of the same parameters only. Hardware counters (`perf stat -e instructions`)
# would be faster, but they are not available in every VM (they are not on
# the project's machine), and the two do not count the same thing: this
# script uses callgrind only, so figures stay comparable. Installs valgrind
# (Debian package) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
USERS=${USERS:-200}
GROUP=${GROUP:-10}
RATE=${RATE:-0.25}
SECS=${SECS:-10}
WARMUP=${WARMUP:-5}
OUT=${OUT:-bench/results/instructions.json}
SECRET="instr-secret-$(date +%s)-0123456789abcdef"

die() { printf 'bench-instructions.sh: %s\n' "$*" >&2; exit 1; }

if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
  command -v apt-get >/dev/null || die "valgrind is needed (callgrind)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind >/dev/null ||
    die "could not install valgrind"
fi

# BIN=DIR: another build's chat-node and chat-bench (e.g. target/ab-REV of
# scripts/bench-ab.sh), to count a revision against this one.
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p chat-node -p chat-bench
  BIN=$ROOT/target/release
fi

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chat-instr.XXXXXX")
NODE_PID=""
cleanup() {
  if [ -n "$NODE_PID" ]; then
    kill "$NODE_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$NODE_PID" 2>/dev/null || true
  fi
  rm -rf "$RUN_DIR/data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$RUN_DIR/data"
# As scripts/bench.sh starts it (the per-user send limit raised, tokens
# minted by the harness), under callgrind with instrumentation off until the
# window: start-up, connects and warm-up run at valgrind's lighter speed.
# `valgrind ... &` in a script: $! is the node's (valgrind's) pid.
CHAT__AUTH__JWT_SECRET=$SECRET \
  CHAT__LIMITS__SENDS_PER_SECOND=10000 CHAT__LIMITS__SEND_BURST=10000 \
  CHAT__LIMITS__REACTIONS_PER_SECOND=10000 CHAT__LIMITS__REACTION_BURST=10000 \
  CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0 CHAT__AUTH__REQUIRE_SESSION=false RUST_LOG=warn \
  env ${NODE_ENV:-} valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$RUN_DIR/callgrind.out" \
  "$BIN/chat-node" --http "127.0.0.1:$PORT" --data-dir "$RUN_DIR/data" \
  >"$RUN_DIR/node.log" 2>&1 &
NODE_PID=$!
for _ in $(seq 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$NODE_PID" 2>/dev/null || die "chat-node under valgrind exited (log: $RUN_DIR/node.log)"
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || die "chat-node did not listen within 60 s"

echo "chat-node $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes') under callgrind;" \
  "rooms: $USERS users in groups of $GROUP, $RATE msgs/s per user, $SECS s counted" >&2
"$BIN/chat-bench" --target chat --nodes "http://127.0.0.1:$PORT" --jwt-secret "$SECRET" \
  --scenario rooms --users "$USERS" --group-size "$GROUP" --fixed-rates "$RATE" \
  --fixed-step "$SECS" --warmup "$WARMUP" --setup-timeout 300 --pid "$NODE_PID" --quiet \
  --slo-ms 60000 \
  --hook-open "callgrind_control --instr=on $NODE_PID >/dev/null" \
  --hook-settled "callgrind_control --dump $NODE_PID >/dev/null && callgrind_control --instr=off $NODE_PID >/dev/null" \
  --label "chat-node under callgrind (instructions counted in the window only)" \
  --json "$RUN_DIR/run.json"

# The dump of the window is the first numbered file (callgrind.out.1); the
# file without a number is written at exit.
dump=""
for _ in $(seq 50); do
  dump=$(find "$RUN_DIR" -maxdepth 1 -name 'callgrind.out*.[0-9]*' | sort -V | head -1)
  [ -n "$dump" ] && [ -s "$dump" ] && break
  sleep 0.2
done
[ -n "$dump" ] && [ -s "$dump" ] || die "no callgrind dump of the window in $RUN_DIR"
mkdir -p "$(dirname "$OUT")"
python3 - "$dump" "$RUN_DIR/run.json" "$OUT" "$USERS" "$GROUP" "$RATE" "$SECS" <<'PY'
import json, sys
dump, run_path, out, users, group, rate, secs = sys.argv[1:]
ir = None
for line in open(dump):
    if line.startswith("summary:") or (ir is None and line.startswith("totals:")):
        ir = int(line.split()[1])
if ir is None:
    sys.exit(f"no instruction total in {dump}")
run = json.load(open(run_path))
step = run["fixed"][0]
deliveries, messages = step["deliveries"], step["accepted"]
if not deliveries:
    sys.exit("the window had no deliveries")
result = {
    "tool": "callgrind (valgrind), instructions executed by every thread of chat-node",
    "users": int(users), "group_size": int(group), "rate_per_user": float(rate), "window_s": float(secs),
    "instructions": ir, "deliveries": deliveries, "messages": messages,
    "instructions_per_delivery": ir / deliveries,
    "instructions_per_message": ir / messages if messages else None,
    "window_kept_up": step["kept_up"],
    "run": run,
}
json.dump(result, open(out, "w"), indent=2)
print(f"instructions per delivery: {ir / deliveries:,.0f}  "
      f"({ir:,} instructions for {deliveries:,} deliveries of {messages:,} messages; "
      f"{ir / max(messages, 1):,.0f} per message)")
if not step["kept_up"]:
    print("warning: the window did not keep up under callgrind (see the table): lower RATE",
          file=sys.stderr)
print(f"wrote {out}")
PY
