# Sourced by the single-node benchmarks (bench-media.sh, bench-search.sh):
# a fresh release node pinned to core 0, stopped (with what the script
# started beside it) when the script exits.
#
#   RUN_DIR=$(bench_run_dir name)     a temporary directory, removed at exit
#   on_exit "command"                 also run at exit
#   PORT=$(free_port)
#   start_node PORT DATA_DIR ENV...   sets NODE_PID; waits for /readyz

BENCH_EXIT=()
NODE_PID=""
bench_cleanup() {
  [ -z "$NODE_PID" ] || kill "$NODE_PID" 2>/dev/null || true
  local c
  for c in "${BENCH_EXIT[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
  [ -z "${RUN_DIR:-}" ] || rm -rf "$RUN_DIR"
}
trap bench_cleanup EXIT

on_exit() { BENCH_EXIT+=("$1"); }

bench_run_dir() { mktemp -d "${TMPDIR:-/tmp}/chat-$1-bench.XXXXXX"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_node() {
  local port=$1 data=$2
  shift 2
  env "$@" taskset -c 0 "$ROOT/target/release/chat-node" \
    --http "127.0.0.1:$port" --data-dir "$data" >"$RUN_DIR/node.log" 2>&1 &
  NODE_PID=$!
  local _
  for _ in $(seq 1 400); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$NODE_PID" 2>/dev/null || { cat "$RUN_DIR/node.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "chat-node not ready within 20 s" >&2
  exit 1
}
