#!/usr/bin/env bash
# Runs a local 3-node cluster plus a Redis server, all on loopback, in the
# foreground; Ctrl-C (or SIGTERM) drains the nodes and stops Redis.
#
#   scripts/cluster.sh              # nodes on http://127.0.0.1:8081..8083
#   NODES=5 scripts/cluster.sh      # any number of nodes
#   BASE_HTTP=9080 BASE_CLUSTER=9900 REDIS_PORT=6390 scripts/cluster.sh
#   STORAGE=scylla scripts/cluster.sh              # history in one shared CQL
#                                                  # server (scripts/cql.sh)
#   STORAGE=scylla CQL_NODES=3 scripts/cluster.sh  # ... a 3-node one, RF 3
#   STORAGE=scylla SCYLLA_NODES=10.0.0.5:9042 scripts/cluster.sh  # yours
#   ADMIN=alice scripts/cluster.sh   # who may use the admin console (/admin);
#                                    # default "admin", its account made at
#                                    # start with ADMIN_PASSWORD (default
#                                    # "admin-password")
#   PROMETHEUS=0 scripts/cluster.sh  # no Prometheus even when installed
#   TRACES=1 scripts/cluster.sh      # every send traced to an OpenTelemetry
#                                    # Collector (deploy/otelcol, needs Go),
#                                    # written to data/cluster/traces.jsonl
#
# Node N listens for clients on BASE_HTTP+N and for peers on BASE_CLUSTER+N,
# keeps its data in data/cluster/node-N, and lists every node as a seed. Logs
# go to data/cluster/node-N.log. Installs redis-server if it is missing.
# With STORAGE=scylla the nodes keep nothing they need on disk: history,
# accounts and the JWT secret are in the keyspace `chat_local`, and nothing
# is replicated between nodes (docs/cluster.md).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES="${NODES:-3}"
BASE_HTTP="${BASE_HTTP:-8080}"
BASE_CLUSTER="${BASE_CLUSTER:-9000}"
REDIS_PORT="${REDIS_PORT:-6390}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
DATA="${DATA:-data/cluster}"
STORAGE="${STORAGE:-embedded}"
CQL_NODES="${CQL_NODES:-1}"
# Dev defaults: every node must share these. Set your own outside a laptop.
COOKIE="${CHAT_CLUSTER_COOKIE:-local-cluster-cookie-change-me}"
SECRET="${CHAT_JWT_SECRET:-local-cluster-jwt-secret-change-me-0123456789}"

if ! command -v redis-server >/dev/null; then
  echo "installing redis-server" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null; fi
fi

bash scripts/web.sh
if [ -z "${BIN:-}" ]; then
  cargo build --release -p chat-node
  BIN=target/release/chat-node
fi
mkdir -p "$DATA"

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping: draining nodes" >&2
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  [ -z "${CQL_DIR:-}" ] || bash scripts/cql.sh stop --dir "$CQL_DIR" || true
  echo "stopped" >&2
}
trap stop INT TERM EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no >"$DATA/redis.log" 2>&1 &
pids+=($!)
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done

storage_env=()
case "$STORAGE" in
  embedded) ;;
  scylla)
    if [ -z "${SCYLLA_NODES:-}" ]; then
      CQL_DIR=$DATA/cql
      echo "starting $CQL_NODES CQL node(s) (scripts/cql.sh)" >&2
      SCYLLA_NODES=$(bash scripts/cql.sh start --nodes "$CQL_NODES" --dir "$CQL_DIR" |
        sed -n 's/^SCYLLA_NODES=//p')
    fi
    list=$(printf '"%s",' ${SCYLLA_NODES//,/ })
    # Search is OpenSearch's on ScyllaDB (none here): off.
    storage_env=(CHAT__STORAGE__BACKEND=scylla "CHAT__STORAGE__SCYLLA__NODES=[${list%,}]" CHAT__SEARCH__BACKEND=off
      CHAT__STORAGE__SCYLLA__KEYSPACE=chat_local
      "CHAT__STORAGE__SCYLLA__REPLICATION_FACTOR=$CQL_NODES")
    echo "history in ScyllaDB/CQL at $SCYLLA_NODES" >&2
    ;;
  *) echo "STORAGE must be embedded or scylla" >&2; exit 1 ;;
esac

seeds=""
for i in $(seq 1 "$NODES"); do
  seeds="$seeds\"127.0.0.1:$((BASE_CLUSTER + i))\","
done
seeds="[${seeds%,}]"

# Every node publishes every node's URL (GET /v1/cluster/nodes): the web
# app served by one fails over to the others, and may connect only to them.
published=""
for i in $(seq 1 "$NODES"); do
  published="$published\"http://127.0.0.1:$((BASE_HTTP + i))\","
done
published="[${published%,}]"

ADMIN="${ADMIN:-admin}"
ADMIN_PASSWORD="${ADMIN_PASSWORD:-admin-password}"
# The admin's name is reserved (registration refuses it): its account is
# made here, once, in node 1's store, which the other nodes copy when they
# join (or in the shared keyspace).
if ! made=$(printf '%s\n' "$ADMIN_PASSWORD" |
  env CHAT__NODE__NAME=node-1 CHAT__NODE__ID=1 CHAT__NODE__DATA_DIR="$DATA/node-1" \
    CHAT__CLUSTER__LISTEN="127.0.0.1:$((BASE_CLUSTER + 1))" \
    CHAT__CLUSTER__SEEDS="$seeds" CHAT__CLUSTER__COOKIE="$COOKIE" \
    CHAT__PRESENCE__BACKEND=redis CHAT__PRESENCE__REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    CHAT__AUTH__JWT_SECRET="$SECRET" CHAT__ADMIN__USERS="[\"$ADMIN\"]" \
    "${storage_env[@]}" "$BIN" --config cluster.toml admin create-user "$ADMIN" 2>&1); then
  case "$made" in
    *"exists already"*) ;;
    *) echo "making the admin's account failed: $made" >&2; exit 1 ;;
  esac
fi
trace_env=()
if [ "${TRACES:-0}" = 1 ]; then
  OTLP_PORT="${OTLP_PORT:-4318}"
  bash scripts/otelcol.sh run --http "127.0.0.1:$OTLP_PORT" --grpc "127.0.0.1:$((OTLP_PORT - 1))" \
    --file "$DATA/traces.jsonl" >"$DATA/otelcol.log" 2>&1 &
  otel_pid=$!
  trace_env=(CHAT__TELEMETRY__OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" CHAT__TELEMETRY__SAMPLING_RATIO=1.0)
fi

for i in $(seq 1 "$NODES"); do
  CHAT__NODE__NAME="node-$i" CHAT__NODE__ID="$i" CHAT__NODE__DATA_DIR="$DATA/node-$i" \
  CHAT__LISTEN__HTTP="127.0.0.1:$((BASE_HTTP + i))" \
  CHAT__CLUSTER__LISTEN="127.0.0.1:$((BASE_CLUSTER + i))" \
  CHAT__CLUSTER__SEEDS="$seeds" CHAT__CLUSTER__COOKIE="$COOKIE" \
  CHAT__PRESENCE__BACKEND=redis CHAT__PRESENCE__REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
  CHAT__AUTH__JWT_SECRET="$SECRET" \
  CHAT__ADMIN__USERS="[\"$ADMIN\"]" CHAT__WEB__NODES="$published" \
    env "${storage_env[@]}" "${trace_env[@]}" "$BIN" --config cluster.toml >"$DATA/node-$i.log" 2>&1 &
  pids+=($!)
done

for i in $(seq 1 "$NODES"); do
  until curl -fsS "http://127.0.0.1:$((BASE_HTTP + i))/readyz" >/dev/null 2>&1; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "node-$i exited; its log:" >&2; tail -20 "$DATA/node-$i.log" >&2; exit 1
    fi
    sleep 0.2
  done
  echo "node-$i ready: http://127.0.0.1:$((BASE_HTTP + i))  (cluster view: /v1/cluster)"
done
# The nodes are pids[1..NODES] above; the Collector joins the list after.
[ -z "${otel_pid:-}" ] || pids+=("$otel_pid")
echo "cluster of $NODES nodes up; Redis on 127.0.0.1:$REDIS_PORT. Ctrl-C stops it."
echo "web app: http://127.0.0.1:$((BASE_HTTP + 1))/ (on any node; reconnects to another when its own goes)"
echo "admin console: http://127.0.0.1:$((BASE_HTTP + 1))/admin (sign in as \"$ADMIN\", password \"$ADMIN_PASSWORD\")"
if [ "${TRACES:-0}" = 1 ]; then
  echo "traces: every send, to the Collector on 127.0.0.1:$OTLP_PORT, written to $DATA/traces.jsonl"
fi
# Prometheus with the shipped alert rules, scraping these nodes (when
# installed: apt-get install prometheus); the dashboard to import into
# Grafana is deploy/grafana/chat-cluster.json.
if [ "${PROMETHEUS:-1}" = 1 ] && command -v prometheus >/dev/null 2>&1; then
  targets=""
  for i in $(seq 1 "$NODES"); do targets="$targets${targets:+, }\"127.0.0.1:$((BASE_HTTP + i))\""; done
  sed -e "s|^      - targets: .*|      - targets: [$targets]|" \
      -e "s|^  - alerts.yml|  - $PWD/deploy/prometheus/alerts.yml|" \
      deploy/prometheus/prometheus.yml >"$DATA/prometheus.yml"
  prometheus --config.file="$DATA/prometheus.yml" --storage.tsdb.path="$DATA/prometheus" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >"$DATA/prometheus.log" 2>&1 &
  pids+=($!)
  echo "Prometheus: http://127.0.0.1:$PROMETHEUS_PORT (alerts: /alerts; dashboard: deploy/grafana/chat-cluster.json)"
else
  echo "Prometheus: not installed (apt-get install prometheus), then rerun for metrics and alerts"
fi
wait -n "${pids[@]}" || true
echo "a process exited; stopping the cluster" >&2
