#!/usr/bin/env bash
# Runs the standard benchmark set and prints our numbers against the
# baselines as ratios (bench/README.md explains what each number means):
#
#   rooms      against chat-node, the Socket.IO + Redis baseline, the ceiling
#              server and Centrifugo, identical parameters: first one window
#              at each fixed rate of ROOMS_FIXED_RATES (server CPU time per
#              delivery, from /proc), then ramped to each one's peak and run
#              at half of it; and the fixed windows against the ceiling
#              fsyncing each message (`ceiling-server --journal`), the floor
#              of any server that fsyncs its history
#   idle       against chat-node, the ceiling, Socket.IO and Centrifugo:
#              memory per idle connection
#   burst      against chat-node: one hot conversation
#   history    against chat-node and Centrifugo: pages per second
#   reconnect  against chat-node and Centrifugo: every client drops at once,
#              comes back and catches up; against the ceiling (nothing to
#              catch up) as the floor of the connections alone
#
# About 10 minutes on a 2-core machine once built (the first run also builds
# Centrifugo from source with Go: scripts/centrifugo.sh). Everything runs on
# loopback; every server it starts is stopped on exit. Results:
# bench/results/latest.json (every run in full, plus the comparison).
#
#   scripts/bench.sh                 the standard set
#   scripts/bench.sh --storage scylla   the standard set, then rooms and
#                                    history again against a node on a local
#                                    one-node CQL server (scripts/cql.sh,
#                                    pinned with the server: the server side
#                                    is the node and its database)
#   scripts/bench.sh --storage scylla --only-storage   only those two
#   scripts/bench.sh --only-socketio   chat's Socket.IO endpoint (target
#                                    chat-socketio) against its native path
#                                    and the Socket.IO baseline: memory per
#                                    idle connection, and server CPU per
#                                    delivery at the fixed rates; results in
#                                    bench/results/socketio.json
#   BENCH_QUICK=1 scripts/bench.sh   a three-minute pass that checks the wiring (numbers meaningless)
#
# Knobs (environment): ROOMS_USERS, ROOMS_GROUP, ROOMS_RATE, ROOMS_RATE_SCYLLA, ROOMS_STEPS,
# ROOMS_FIXED_RATES (comma-separated msgs/s per user, default 1,2.5,5.27),
# FIXED_S (seconds per fixed-rate window), IDLE_CONNECTIONS, BENCH_PIN=0 (do
# not pin servers and harness to separate cores), SIO_PROCS (Socket.IO
# processes sharing rooms through Redis), BENCH_CENTRIFUGO=0 (no Centrifugo),
# CENTRIFUGO_MEMORY_TUNING=0 (its free edition's memory options off).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

STORAGE=${BENCH_STORAGE:-embedded}
ONLY_STORAGE=0
ONLY_SOCKETIO=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --storage) STORAGE=$2; shift 2 ;;
    # Only the runs against the node on ScyllaDB (with --storage scylla).
    --only-storage) ONLY_STORAGE=1; shift ;;
    --only-socketio) ONLY_SOCKETIO=1; shift ;;
    *) printf 'bench.sh: unknown argument %s\n' "$1" >&2; exit 2 ;;
  esac
done
case "$STORAGE" in embedded | scylla) ;; *) printf 'bench.sh: --storage embedded|scylla\n' >&2; exit 2 ;; esac

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }

QUICK=${BENCH_QUICK:-0}
CORES=$(nproc 2>/dev/null || echo 1)
if [ "$QUICK" = 1 ]; then
  ROOMS_USERS=${ROOMS_USERS:-200}; ROOMS_STEPS=${ROOMS_STEPS:-2}; STEP_S=2; HALF_S=3
  IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-1000}; SHORT_S=3; FIXED_S=${FIXED_S:-2}
else
  ROOMS_USERS=${ROOMS_USERS:-1000}; ROOMS_STEPS=${ROOMS_STEPS:-12}; STEP_S=4; HALF_S=10
  IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}; SHORT_S=10; FIXED_S=${FIXED_S:-10}
fi
# Server CPU per delivery is compared at these offered rates (msgs/s per
# user), the same for every target and below every target's saturation on
# the project's machine; the summary compares the 5.27 window (or the
# highest one every target kept up with).
ROOMS_FIXED_RATES=${ROOMS_FIXED_RATES:-1,2.5,5.27}
WITH_CENTRIFUGO=${BENCH_CENTRIFUGO:-1}
CF_TUNING=${CENTRIFUGO_MEMORY_TUNING:-1}
ROOMS_GROUP=${ROOMS_GROUP:-10}
ROOMS_RATE=${ROOMS_RATE:-0.5}
SIO_PROCS=${SIO_PROCS:-1}
JWT_SECRET="bench-secret-$(date +%s)-$RANDOM-$RANDOM-$RANDOM"

# With two cores or more, the server under test gets core 0 and the harness
# the others, so neither steals the other's CPU and every server is measured
# on the same single core: deliveries per core, Node.js's one thread against
# ours. BENCH_PIN=0 lets the servers use every core (and share with the harness).
PIN=${BENCH_PIN:-1}
if [ "$PIN" = 1 ] && [ "$CORES" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPUS=0
  HARNESS_CPUS=1
  [ "$CORES" -gt 2 ] && HARNESS_CPUS=1-$((CORES - 1))
  # taskset execs the command: $! of a background launch is the server's pid.
  ON_SERVER=(taskset -c "$SERVER_CPUS")
  ON_HARNESS=(taskset -c "$HARNESS_CPUS")
  PIN_NOTE="server pinned to cpu $SERVER_CPUS, harness to cpu $HARNESS_CPUS"
  SERVER_CORES=1
else
  ON_SERVER=()
  ON_HARNESS=()
  PIN_NOTE="no pinning: servers and harness share $CORES cores"
  SERVER_CORES=$CORES
fi

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chat-bench.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  [ ! -d "$RUN_DIR/cql" ] || bash "$ROOT/scripts/cql.sh" stop --dir "$RUN_DIR/cql" || true
  rm -rf "$RUN_DIR/data" "$RUN_DIR/cql"
  echo "bench.sh: logs of this run in $RUN_DIR" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each idle connection is a file on both ends.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge $((IDLE_CONNECTIONS + 1000)) ] ||
  echo "warning: ulimit -n is $(ulimit -n); idle with $IDLE_CONNECTIONS connections may fail" >&2

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}

wait_port() { # port seconds what
  local i
  for i in $(seq $(($2 * 10))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$3 did not listen on 127.0.0.1:$1 within $2 s (log in $RUN_DIR)"
}

stop() { # pid
  kill "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

apt_install() {
  command -v apt-get >/dev/null || return 1
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

log "build (release)"
cargo build --release -p chat-node -p chat-bench
BIN=$ROOT/target/release
BENCH=("${ON_HARNESS[@]}" "$BIN/chat-bench")

log "baseline dependencies"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm || die "Node.js and npm are needed for the Socket.IO baseline"
fi
SIO_DIR=$ROOT/bench/baselines/socketio
if [ ! -d "$SIO_DIR/node_modules/socket.io" ] || [ "$SIO_DIR/package-lock.json" -nt "$SIO_DIR/node_modules" ]; then
  (cd "$SIO_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi
if ! command -v redis-server >/dev/null; then
  apt_install redis-server || echo "warning: could not install redis-server" >&2
fi
CF_BIN=""
CF_SKIPPED=""
if [ "$WITH_CENTRIFUGO" = 1 ]; then
  # Built from source with `go install` (Go 1.26, the Go module proxy),
  # cached per version; the first build takes a few minutes, under nice.
  if CF_BIN=$(bash scripts/centrifugo.sh build | tail -1) && [ -x "$CF_BIN" ]; then
    CF_VERSION=$("$CF_BIN" version 2>/dev/null | awk '{print $2}')
  else
    CF_BIN=""
    CF_SKIPPED="scripts/centrifugo.sh build failed (Go 1.26 and the Go module proxy are needed)"
    echo "warning: Centrifugo is skipped: $CF_SKIPPED" >&2
  fi
else
  CF_SKIPPED="BENCH_CENTRIFUGO=0"
fi

# --- servers ---------------------------------------------------------------
CHAT_PID=""
CHAT_ENV=()
start_chat() {
  CHAT_PORT=$(free_port)
  mkdir -p "$RUN_DIR/data"
  local dir
  dir=$(mktemp -d "$RUN_DIR/data/node.XXXXXX")
  # Fresh data dir, default durability (sync). The per-user send limit is
  # raised so ramps measure the node's capacity, not its rate limiter; the
  # harness holds every connection from two addresses and mints its users'
  # tokens (naming no login).
  CHAT__AUTH__JWT_SECRET=$JWT_SECRET \
    CHAT__LIMITS__SENDS_PER_SECOND=10000 CHAT__LIMITS__SEND_BURST=10000 \
    CHAT__LIMITS__REACTIONS_PER_SECOND=10000 CHAT__LIMITS__REACTION_BURST=10000 \
    CHAT__LISTEN__MAX_CONNECTIONS_PER_IP=0 CHAT__AUTH__REQUIRE_SESSION=false \
    RUST_LOG=${RUST_LOG:-warn} \
    env "${CHAT_ENV[@]}" "${ON_SERVER[@]}" "$BIN/chat-node" --http "127.0.0.1:$CHAT_PORT" --data-dir "$dir" \
    >>"$RUN_DIR/chat-node.log" 2>&1 &
  CHAT_PID=$!
  PIDS+=("$CHAT_PID")
  wait_port "$CHAT_PORT" 60 chat-node
}

REDIS_PORT=""
REDIS_PID=""
if command -v redis-server >/dev/null; then
  REDIS_PORT=$(free_port)
  "${ON_SERVER[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    >"$RUN_DIR/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_port "$REDIS_PORT" 20 redis-server
fi

SIO_PORTS=()
SIO_PIDS=()
start_socketio() {
  local i port
  for i in $(seq "$SIO_PROCS"); do
    port=$(free_port)
    PORT=$port REDIS_URL=${REDIS_PORT:+redis://127.0.0.1:$REDIS_PORT} \
      "${ON_SERVER[@]}" node "$SIO_DIR/server.js" >>"$RUN_DIR/socketio-$i.log" 2>&1 &
    PIDS+=("$!")
    SIO_PIDS+=("$!")
    SIO_PORTS+=("$port")
    wait_port "$port" 30 "socket.io baseline"
  done
  sleep 0.5
  SIO_ADAPTER=$(grep -ho 'adapter=[a-z]*' "$RUN_DIR"/socketio-*.log | sort -u | tr '\n' ' ')
  if grep -q 'adapter=memory' "$RUN_DIR"/socketio-*.log; then
    echo "WARNING: the Socket.IO baseline runs WITHOUT the Redis adapter (see $RUN_DIR/socketio-1.log)" >&2
  fi
}

stop_socketio() {
  local pid
  for pid in "${SIO_PIDS[@]}"; do stop "$pid"; done
  SIO_PORTS=()
  SIO_PIDS=()
}

# Memory per idle connection, on one fresh socket.io process: a V8 heap
# grown by an earlier run would hide the cost of new connections.
bench_socketio_idle() { # idle args...
  SIO_PROCS=1 start_socketio
  EXTRA_LABEL="1 socket.io process, $SIO_ADAPTER" \
    bench idle-socketio --target socketio --nodes "http://127.0.0.1:${SIO_PORTS[0]}" \
    --pid "${SIO_PIDS[0]}" "$@"
  stop_socketio
}

# Rooms on SIO_PROCS fresh socket.io processes. Its server side is the
# processes and, with the Redis adapter, the Redis every broadcast goes
# through: the CPU of all of them is counted.
bench_socketio_rooms() { # rooms args...
  start_socketio
  local pids note="server CPU: socket.io"
  pids=$(nodes_of "${SIO_PIDS[@]}")
  if [ -n "$REDIS_PID" ] && ! grep -q 'adapter=memory' "$RUN_DIR"/socketio-*.log; then
    pids="$pids,$REDIS_PID"
    note="server CPU: socket.io + redis-server"
  fi
  EXTRA_LABEL="$SIO_PROCS socket.io process(es), $SIO_ADAPTER; $note" \
    bench rooms-socketio --target socketio --nodes "$(csv_urls "${SIO_PORTS[@]}")" \
    --pid "$pids" "$@"
  stop_socketio
}

CEIL_PID=""
start_ceiling() { # [--journal DIR]
  CEIL_PORT=$(free_port)
  "${ON_SERVER[@]}" "$BIN/ceiling-server" --listen "127.0.0.1:$CEIL_PORT" "$@" >"$RUN_DIR/ceiling.log" 2>&1 &
  CEIL_PID=$!
  PIDS+=("$CEIL_PID")
  wait_port "$CEIL_PORT" 20 ceiling-server
}

CF_PID=""
CF_LABEL=""
start_centrifugo() {
  CF_PORT=$(free_port)
  bash scripts/centrifugo.sh config --port "$CF_PORT" --secret "$JWT_SECRET" \
    --memory-tuning "$CF_TUNING" --out "$RUN_DIR/centrifugo.config.json"
  # Go's scheduler gets the cores the server is pinned to.
  GOMAXPROCS=$SERVER_CORES "${ON_SERVER[@]}" "$CF_BIN" -c "$RUN_DIR/centrifugo.config.json" \
    >>"$RUN_DIR/centrifugo.log" 2>&1 &
  CF_PID=$!
  PIDS+=("$CF_PID")
  wait_port "$CF_PORT" 30 centrifugo
  local tuning="memory tuning on (websocket.read_buffer_size 1024, use_write_buffer_pool)"
  [ "$CF_TUNING" = 1 ] || tuning="memory tuning off"
  CF_LABEL="centrifugo ${CF_VERSION:-?} free edition, memory engine (history in RAM, no fsync), JSON protocol, GOMAXPROCS=$SERVER_CORES, $tuning"
}

nodes_of() { local IFS=,; echo "$*"; }
csv_urls() { local p out=(); for p in "$@"; do out+=("http://127.0.0.1:$p"); done; nodes_of "${out[@]}"; }

ROOMS_BASE=(--scenario rooms --users "$ROOMS_USERS" --group-size "$ROOMS_GROUP" --warmup 2
  --slo-ms 50 --source-ips 127.0.0.1,127.0.0.2)
ROOMS_SHAPE=("${ROOMS_BASE[@]}" --ramp "$ROOMS_STEPS" --ramp-factor 1.4 --step "$STEP_S"
  --duration "$HALF_S")
ROOMS_FIXED_WINDOWS=(--fixed-rates "$ROOMS_FIXED_RATES" --fixed-step "$FIXED_S")
ROOMS=("${ROOMS_SHAPE[@]}" --rate "$ROOMS_RATE" "${ROOMS_FIXED_WINDOWS[@]}")
# The fixed-rate windows alone, for the ceiling keeping a journal: its CPU
# per delivery is what matters there, not its peak.
ROOMS_FIXED=("${ROOMS_BASE[@]}" "${ROOMS_FIXED_WINDOWS[@]}")
# A node with its database on one core peaks lower: its ramp starts lower.
ROOMS_SCYLLA=("${ROOMS_SHAPE[@]}" --rate "${ROOMS_RATE_SCYLLA:-0.1}")
# Every client drops at once after a window of rooms traffic, comes back and
# catches up (chat: history after; Centrifugo: subscribe with recovery).
RECONNECT=(--scenario reconnect --users "$ROOMS_USERS" --group-size "$ROOMS_GROUP" --rate 1
  --warmup 2 --duration "$SHORT_S" --source-ips 127.0.0.1,127.0.0.2)
JSONS=()
FAILED=()
bench() { # name args...: a failed run is reported, the others still run
  local name=$1; shift
  log "$name"
  if "${BENCH[@]}" "$@" --json "$RUN_DIR/$name.json" --server-cores "$SERVER_CORES" --label "$PIN_NOTE${EXTRA_LABEL:+; $EXTRA_LABEL}"; then
    JSONS+=("$RUN_DIR/$name.json")
  else
    FAILED+=("$name")
  fi
}

T0=$(date +%s)

if [ "$ONLY_SOCKETIO" = 1 ]; then
  # Each on a fresh server, idle first (its RSS baseline a server that has
  # done nothing), then the fixed-rate windows alone (CPU per delivery).
  SIO_IDLE=(--scenario idle --connections "$IDLE_CONNECTIONS" --duration 3 --prewarm --source-ips 127.0.0.1,127.0.0.2)
  for target in chat chat-socketio; do
    start_chat
    bench "idle-$target" --target "$target" --nodes "http://127.0.0.1:$CHAT_PORT" --jwt-secret "$JWT_SECRET" \
      --pid "$CHAT_PID" "${SIO_IDLE[@]}"
    stop "$CHAT_PID"
    start_chat
    bench "rooms-$target" --target "$target" --nodes "http://127.0.0.1:$CHAT_PORT" --jwt-secret "$JWT_SECRET" \
      --pid "$CHAT_PID" "${ROOMS_FIXED[@]}"
    stop "$CHAT_PID"
  done
  bench_socketio_idle "${SIO_IDLE[@]}"
  SIO_PROCS=1 bench_socketio_rooms "${ROOMS_FIXED[@]}"
  log "summary (runs took $(($(date +%s) - T0)) s)"
  mkdir -p bench/results
  [ "${#JSONS[@]}" -gt 0 ] || die "every run failed"
  # Its own table: the standard summary compares one chat target.
  python3 scripts/lib/socketio_table.py bench/results/socketio.json "${JSONS[@]}"
  [ "${#FAILED[@]}" -eq 0 ] || die "these runs failed (see above): ${FAILED[*]}"
  exit 0
fi

if [ "$ONLY_STORAGE" = 0 ]; then
# idle first, on a fresh node, so its RSS baseline is a node that has done nothing.
start_chat
bench idle-chat --target chat --nodes "http://127.0.0.1:$CHAT_PORT" --scenario idle \
  --connections "$IDLE_CONNECTIONS" --duration 3 --pid "$CHAT_PID" --prewarm \
  --jwt-secret "$JWT_SECRET" --source-ips 127.0.0.1,127.0.0.2
stop "$CHAT_PID"

start_chat
bench rooms-chat --target chat --nodes "http://127.0.0.1:$CHAT_PORT" --jwt-secret "$JWT_SECRET" \
  --pid "$CHAT_PID" "${ROOMS[@]}"
bench burst-chat --target chat --nodes "http://127.0.0.1:$CHAT_PORT" --jwt-secret "$JWT_SECRET" \
  --scenario burst --users 100 --rate 2 --warmup 2 --duration "$SHORT_S"
bench history-chat --target chat --nodes "http://127.0.0.1:$CHAT_PORT" --jwt-secret "$JWT_SECRET" \
  --pid "$CHAT_PID" --scenario history --users 50 --group-size 5 --prefill 1000 --page-size 50 --warmup 2 \
  --duration "$SHORT_S"
bench reconnect-chat --target chat --nodes "http://127.0.0.1:$CHAT_PORT" --jwt-secret "$JWT_SECRET" --pid "$CHAT_PID" \
  "${RECONNECT[@]}"
stop "$CHAT_PID"
fi

if [ "$STORAGE" = scylla ]; then
  log "a local CQL server (scripts/cql.sh), pinned with the node"
  # The servers' default commit log (fsync every 10 s; in production a write
  # is durable by its replicas): what a deployment measures. The test server
  # fsyncs before acknowledging instead (scripts/cql.sh).
  NODES=$(CQL_COMMITLOG=periodic "${ON_SERVER[@]}" bash scripts/cql.sh start --dir "$RUN_DIR/cql" |
    sed -n 's/^SCYLLA_NODES=//p')
  [ -n "$NODES" ] || die "the CQL server did not start"
  CHAT_ENV=(CHAT__STORAGE__BACKEND=scylla "CHAT__STORAGE__SCYLLA__NODES=[\"$NODES\"]" CHAT__SEARCH__BACKEND=off
    "CHAT__STORAGE__SCYLLA__KEYSPACE=chat_bench_$(date +%s)")
  start_chat
  # A JIT-compiled server is measured warm: throwaway passes of sends and
  # reads first (its JIT and its caches warm over tens of seconds).
  "${BENCH[@]}" --target chat --nodes "http://127.0.0.1:$CHAT_PORT" --jwt-secret "$JWT_SECRET" \
    --scenario rooms --users "$ROOMS_USERS" --group-size "$ROOMS_GROUP" --rate 0.3 \
    --warmup 5 --duration "${CQL_WARMUP_S:-40}" --source-ips 127.0.0.1,127.0.0.2 --quiet \
    >/dev/null 2>&1 || echo "warning: the CQL warm-up pass of sends failed" >&2
  "${BENCH[@]}" --target chat --nodes "http://127.0.0.1:$CHAT_PORT" --jwt-secret "$JWT_SECRET" \
    --scenario history --users 20 --group-size 5 --prefill 200 --page-size 50 --warmup 1 \
    --duration 10 --quiet >/dev/null 2>&1 || echo "warning: the CQL warm-up pass of reads failed" >&2
  EXTRA_LABEL="node and its CQL server (commitlog periodic) share the server core" \
    bench rooms-chat-scylla --target chat --storage scylla --nodes "http://127.0.0.1:$CHAT_PORT" \
    --jwt-secret "$JWT_SECRET" "${ROOMS_SCYLLA[@]}"
  EXTRA_LABEL="node and its CQL server (commitlog periodic) share the server core" \
    bench history-chat-scylla --target chat --storage scylla --nodes "http://127.0.0.1:$CHAT_PORT" \
    --jwt-secret "$JWT_SECRET" --scenario history --users 50 --group-size 5 --prefill 1000 \
    --page-size 50 --warmup 2 --duration "$SHORT_S"
  stop "$CHAT_PID"
  bash scripts/cql.sh stop --dir "$RUN_DIR/cql"
  CHAT_ENV=()
fi

if [ "$ONLY_STORAGE" = 0 ]; then
IDLE=(--scenario idle --connections "$IDLE_CONNECTIONS" --duration 3 --prewarm --source-ips 127.0.0.1,127.0.0.2)
start_ceiling
bench idle-ceiling --target ceiling --nodes "http://127.0.0.1:$CEIL_PORT" --pid "$CEIL_PID" "${IDLE[@]}"
stop "$CEIL_PID"

start_ceiling
bench rooms-ceiling --target ceiling --nodes "http://127.0.0.1:$CEIL_PORT" --pid "$CEIL_PID" "${ROOMS[@]}"
stop "$CEIL_PID"

# The floor under a reconnect: the ceiling keeps no history and answers each
# catch-up with an empty page, so its storm is the connections alone.
start_ceiling
bench reconnect-ceiling --target ceiling --nodes "http://127.0.0.1:$CEIL_PORT" --pid "$CEIL_PID" \
  "${RECONNECT[@]}"
stop "$CEIL_PID"

# The floor for a server that fsyncs its history: the ceiling appending
# each message to a file and fsyncing it (group commit, as chat-node's
# store does) before the fan-out. Its data goes where chat-node's does.
start_ceiling --journal "$RUN_DIR/ceiling-journal"
EXTRA_LABEL="ceiling-server --journal: each message fsynced before its fan-out" \
  bench rooms-ceiling-journal --target ceiling --storage journal \
  --nodes "http://127.0.0.1:$CEIL_PORT" --pid "$CEIL_PID" "${ROOMS_FIXED[@]}"
stop "$CEIL_PID"
rm -rf "$RUN_DIR/ceiling-journal"

bench_socketio_idle "${IDLE[@]}"
bench_socketio_rooms "${ROOMS[@]}"

if [ -n "$CF_BIN" ]; then
  log "Centrifugo: $(bash scripts/centrifugo.sh version), memory engine"
  # Beside its numbers: what it does not do that chat-node does.
  echo "fairness: Centrifugo's memory engine keeps history in RAM only (the last" \
    "history_size publications per channel, nothing fsynced) where chat-node fsyncs" \
    "every message before its ok; free edition; JSON protocol v2" >&2
  # Fresh processes, as for the others: idle first, then rooms, then
  # history and reconnect together.
  start_centrifugo
  EXTRA_LABEL=$CF_LABEL bench idle-centrifugo --target centrifugo \
    --nodes "http://127.0.0.1:$CF_PORT" --jwt-secret "$JWT_SECRET" --pid "$CF_PID" "${IDLE[@]}"
  stop "$CF_PID"
  start_centrifugo
  EXTRA_LABEL=$CF_LABEL bench rooms-centrifugo --target centrifugo \
    --nodes "http://127.0.0.1:$CF_PORT" --jwt-secret "$JWT_SECRET" --pid "$CF_PID" "${ROOMS[@]}"
  stop "$CF_PID"
  start_centrifugo
  EXTRA_LABEL=$CF_LABEL bench history-centrifugo --target centrifugo \
    --nodes "http://127.0.0.1:$CF_PORT" --jwt-secret "$JWT_SECRET" --pid "$CF_PID" \
    --scenario history --users 50 --group-size 5 --prefill 1000 --page-size 50 --warmup 2 \
    --duration "$SHORT_S"
  EXTRA_LABEL=$CF_LABEL bench reconnect-centrifugo --target centrifugo \
    --nodes "http://127.0.0.1:$CF_PORT" --jwt-secret "$JWT_SECRET" --pid "$CF_PID" "${RECONNECT[@]}"
  stop "$CF_PID"
  echo "Centrifugo: burst is not run against it (the standard set runs burst against chat-node only)" >&2
else
  echo "Centrifugo: not run ($CF_SKIPPED)" >&2
fi
fi

log "summary (runs took $(($(date +%s) - T0)) s)"
mkdir -p bench/results
[ "${#JSONS[@]}" -gt 0 ] || die "every run failed"
"$BIN/chat-bench" summary --out bench/results/latest.json "${JSONS[@]}"
if [ "${#FAILED[@]}" -gt 0 ]; then
  die "these runs failed (see above): ${FAILED[*]}"
fi
