#!/usr/bin/env bash
# What a cluster costs itself as it grows, with nothing to do: membership,
# heartbeats, pings and ractor_cluster's process groups between idle nodes.
# For each size (3, 6 and 12 by default) it starts that many release nodes
# on this machine (scripts/cluster.sh: embedded store, Redis presence), waits
# until every node serves with all the others, lets formation traffic pass,
# then measures a window: each node's CPU (utime + stime from /proc) and
# resident memory, and the bytes sent over every node-to-node connection
# (the kernel's per-socket bytes_sent, from `ss -ti`, so ractor_cluster's own
# traffic counts too).
#
#   scripts/bench-growth.sh                 # 3 6 12 nodes, 30 s windows
#   SIZES="3 6" WINDOW=20 scripts/bench-growth.sh
#   OUT=bench/results/growth.json scripts/bench-growth.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES="${SIZES:-3 6 12}"
WINDOW="${WINDOW:-30}"
SETTLE="${SETTLE:-10}"
BASE_HTTP="${BASE_HTTP:-18300}"
BASE_CLUSTER="${BASE_CLUSTER:-19300}"
REDIS_PORT="${REDIS_PORT:-16399}"
OUT="${OUT:-}"

cargo build --release -p chat-node
BIN=target/release/chat-node
tmp=$(mktemp -d)
cluster_pid=""
cleanup() {
  if [ -n "$cluster_pid" ]; then kill -TERM "$cluster_pid" 2>/dev/null || true; wait "$cluster_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

results=()
for n in $SIZES; do
  data="$tmp/n$n"
  mkdir -p "$data"
  # Small footprint per node: idle nodes, as many as the machine holds.
  NODES=$n BIN=$BIN DATA=$data BASE_HTTP=$BASE_HTTP BASE_CLUSTER=$BASE_CLUSTER \
    REDIS_PORT=$REDIS_PORT PROMETHEUS=0 \
    bash scripts/cluster.sh >"$data/cluster.out" 2>&1 &
  cluster_pid=$!
  until grep -q "cluster of $n nodes up" "$data/cluster.out" 2>/dev/null; do
    kill -0 "$cluster_pid" 2>/dev/null || { echo "the $n-node cluster did not start:" >&2; tail -20 "$data/cluster.out" >&2; exit 1; }
    sleep 0.5
  done
  for i in $(seq 1 "$n"); do
    until [ "$(curl -fsS "http://127.0.0.1:$((BASE_HTTP + i))/v1/cluster" 2>/dev/null |
      python3 -c 'import json,sys; print(len(json.load(sys.stdin)["serving_nodes"]))' 2>/dev/null)" = "$n" ]; do
      sleep 0.5
    done
  done
  sleep "$SETTLE"
  pids=$(for i in $(seq 1 "$n"); do pgrep -f -- "--config cluster.toml" | while read -r p; do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "CHAT__NODE__NAME=node-$i" && echo "$p"; done; done | tr '\n' ' ')
  row=$(python3 - "$n" "$WINDOW" "$BASE_CLUSTER" $pids <<'PY'
import json, os, re, subprocess, sys, time
n, window, base = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
pids = [int(p) for p in sys.argv[4:]]
ports = {base + i for i in range(1, n + 1)}
hz = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0

def link_bytes():
    out = subprocess.run(["ss", "-tinH", "state", "established"], capture_output=True, text=True).stdout
    total, conns, cur = 0, 0, None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            parts = line.split()
            local, peer = parts[-2], parts[-1]
            lp, pp = int(local.rsplit(":", 1)[1]), int(peer.rsplit(":", 1)[1])
            cur = lp in ports or pp in ports
        elif cur:
            m = re.search(r"bytes_sent:(\d+)", line)
            if m:
                total += int(m.group(1))
                conns += 1
    return total, conns

c0 = [cpu(p) for p in pids]
b0, conns = link_bytes()
t0 = time.monotonic()
time.sleep(window)
dt = time.monotonic() - t0
c1 = [cpu(p) for p in pids]
b1, _ = link_bytes()
links = n * (n - 1) // 2
cpu_pct = [100 * (b - a) / dt for a, b in zip(c0, c1)]
print(json.dumps({
    "nodes": n,
    "window_s": round(dt, 1),
    "sockets": conns,
    "cpu_pct_per_node_mean": round(sum(cpu_pct) / len(cpu_pct), 3),
    "cpu_pct_per_node_max": round(max(cpu_pct), 3),
    "rss_mib_per_node_mean": round(sum(rss(p) for p in pids) / len(pids) / 2**20, 1),
    "bytes_per_s_per_node": round((b1 - b0) / dt / n),
    "bytes_per_s_per_link": round((b1 - b0) / dt / links),
    "links": links,
}))
PY
)
  echo "$row"
  results+=("$row")
  kill -TERM "$cluster_pid"; wait "$cluster_pid" 2>/dev/null || true; cluster_pid=""
done
if [ -n "$OUT" ]; then
  printf '%s\n' "${results[@]}" | python3 -c 'import json,sys; json.dump([json.loads(l) for l in sys.stdin], open(sys.argv[1], "w"), indent=1)' "$OUT"
fi
