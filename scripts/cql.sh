#!/usr/bin/env bash
# A real CQL server on loopback for the ScyllaDB backend: Apache Cassandra
# 5.0, started with plain `java` from Maven Central's cassandra-all jars (the
# scylla driver speaks to ScyllaDB and Cassandra alike; ScyllaDB itself cannot
# be installed on these machines). Installs Java 17 and Maven if missing, and
# caches the jars (about 70 MB) in ~/.cache/chat-cql.
#
#   scripts/cql.sh start [--nodes N] [--dir DIR] [--port P] [--write-timeout-ms MS]
#       starts N nodes (default 1) on 127.0.0.1 .. 127.0.0.N, all on port P
#       (default: a free one), waits until each answers CQL (and, N > 1,
#       has seen every other up in gossip), and prints as
#       its last line SCYLLA_NODES=host:port[,host:port...]; MS sets the
#       servers' write_request_timeout (default: theirs, 2000)
#   scripts/cql.sh stop [--dir DIR]        stops every node
#   scripts/cql.sh kill I [--dir DIR]      SIGKILLs node I (1-based)
#   scripts/cql.sh restart I [--dir DIR]   starts node I again on its data
#                                          (and waits until it sees the
#                                          running others up)
#
# CQL_HEAP: each node's Java heap (default 512m); a server holding many
# keyspaces needs more (each table keeps state on the heap).
#
# Commits are fsynced before they are acknowledged (commitlog_sync: group,
# which shares one fsync among the writes of a millisecond, as the embedded
# store's group commit does): a test kills single nodes with SIGKILL and
# expects acknowledged writes back. Lightweight transactions use Paxos v2
# (two round trips instead of four). (Cassandra and ScyllaDB default to a periodic fsync every 10 s, so
# in production it is the replication factor that makes a write survive the
# loss of a node.)
#
# DIR (default $TMPDIR/chat-cql) holds each node's data, logs and pid. A
# node is ready when its log says "Starting listening for CQL clients" and
# its port accepts connections; a start over 120 s fails with the log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VERSION=5.0.8
CACHE=${CHAT_CQL_CACHE:-$HOME/.cache/chat-cql}/cassandra-$VERSION

die() { printf 'cql.sh: %s\n' "$*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

install() {
  local need=()
  command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || need+=(maven)
  if [ "${#need[@]}" -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  # Cassandra 5.0 runs on Java 11 and 17 only.
  local major
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ "$major" = 17 ] || [ "$major" = 11 ] || die "Cassandra 5.0 needs Java 11 or 17, found $major"
  if [ ! -f "$CACHE/complete" ]; then
    mkdir -p "$CACHE"
    mvn -q -B -f "$ROOT/scripts/cql/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$CACHE/lib" >&2
    touch "$CACHE/complete"
  fi
}

# Cassandra 5.0's conf/jvm17-server.options: the JDK internals it reaches.
JPMS=(
  -Djdk.attach.allowAttachSelf=true
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
  --add-exports java.sql/java.sql=ALL-UNNAMED
  --add-exports java.base/java.lang.ref=ALL-UNNAMED
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
  --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
  --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
  --add-opens java.base/java.lang.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.io=ALL-UNNAMED
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
  --add-opens java.base/java.nio=ALL-UNNAMED
  -Dio.netty.tryReflectionSetAccessible=true
)

# Node I's evenly spaced token of an N-node ring (one token each: token
# allocation of the stock configuration costs over a minute at first boot).
token() { python3 -c "import sys; i, n = int(sys.argv[1]), int(sys.argv[2]); print(-2**63 + (i - 1) * (2**64 // n))" "$1" "$2"; }

# CQL_COMMITLOG=periodic: the servers' default (fsync every 10 s, durability
# from replication), for benchmarks that compare with production settings.
commitlog_sync() {
  case "${CQL_COMMITLOG:-group}" in
    group) printf 'commitlog_sync: group\ncommitlog_sync_group_window: 1ms' ;;
    periodic) printf 'commitlog_sync: periodic\ncommitlog_sync_period: 10000ms' ;;
    *) die "CQL_COMMITLOG must be group or periodic" ;;
  esac
}

# --write-timeout-ms: replicas drop a write older than this, so a node
# that took over a dead node's conversations waits this long for the dead
# node's last writes (the failover test runs a server of its own at 1 s).
write_timeout() {
  [ -z "$write_timeout_ms" ] || printf 'write_request_timeout: %sms' "$write_timeout_ms"
}

configure() {
  local dir=$1 i=$2 n=$3 port=$4 gossip=$5
  local home=$dir/node$i
  mkdir -p "$home/data" "$home/logs" "$home/tmp"
  # Unknown keys are fatal to Cassandra: only what a test node needs.
  cat >"$home/cassandra.yaml" <<EOF
cluster_name: chat-test
num_tokens: 1
initial_token: $(token "$i" "$n")
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
listen_address: 127.0.0.$i
rpc_address: 127.0.0.$i
storage_port: $gossip
native_transport_port: $port
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$gossip"
auto_bootstrap: false
$(commitlog_sync)
paxos_variant: v2
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
auto_snapshot: false
$(write_timeout)
EOF
  # cassandra-all ships no logback configuration: without one it logs DEBUG.
  cat >"$home/logback.xml" <<'EOF'
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %logger{20}: %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
EOF
}

launch() {
  local dir=$1 i=$2
  local home=$dir/node$i port ring_delay=1000 heap=${CQL_HEAP:-512m}
  port=$(cat "$dir/port")
  [ "$(cat "$dir/nodes")" -eq 1 ] || ring_delay=5000
  : >"$home/cassandra.log"
  java -Xms"$heap" -Xmx"$heap" -Xss256k -XX:+UseG1GC -XX:ActiveProcessorCount=2 \
    -Djava.net.preferIPv4Stack=true "${JPMS[@]}" \
    -Dcassandra-foreground=yes -Dcassandra.config="file://$home/cassandra.yaml" \
    -Dcassandra.storagedir="$home/data" -Dcassandra.logdir="$home/logs" \
    -Dlogback.configurationFile="$home/logback.xml" -Djava.io.tmpdir="$home/tmp" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=$ring_delay \
    -cp "$CACHE/lib/*" org.apache.cassandra.service.CassandraDaemon >"$home/cassandra.log" 2>&1 &
  echo $! >"$home/pid"
  local _
  for _ in $(seq 1200); do
    if grep -q "Starting listening for CQL clients" "$home/cassandra.log" 2>/dev/null &&
      (exec 3<>"/dev/tcp/127.0.0.$i/$port") 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$(cat "$home/pid")" 2>/dev/null; then
      tail -40 "$home/cassandra.log" >&2
      die "CQL node $i exited while starting"
    fi
    sleep 0.1
  done
  tail -40 "$home/cassandra.log" >&2
  die "CQL node $i did not answer within 120 s"
}

# Waits until node I has marked every other running node of DIR up in
# gossip. Answering CQL is not enough in a cluster: a coordinator that has
# not heard from its peers yet counts only itself alive, and a QUORUM write
# (or a schema change at replication factor 3) fails with "Cannot achieve
# consistency level". Nodes stopped on purpose (no pid file) are not
# waited for.
wait_peers_up() {
  local dir=$1 i=$2 n j missing _
  n=$(cat "$dir/nodes")
  for _ in $(seq 1200); do
    missing=""
    for j in $(seq "$n"); do
      [ "$j" != "$i" ] && [ -f "$dir/node$j/pid" ] || continue
      grep -q "InetAddress /127.0.0.$j:[0-9]* is now UP" "$dir/node$i/cassandra.log" 2>/dev/null ||
        missing="$missing $j"
    done
    [ -n "$missing" ] || return 0
    sleep 0.1
  done
  die "CQL node $i did not see node(s)$missing up within 120 s"
}

start() {
  local dir=$1 n=$2 port=$3
  install
  [ -n "$port" ] || port=$(free_port)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  stop "$dir"
  echo "$n" >"$dir/nodes"
  echo "$port" >"$dir/port"
  local gossip i nodes=()
  gossip=$(free_port)
  for i in $(seq "$n"); do
    configure "$dir" "$i" "$n" "$port" "$gossip"
    launch "$dir" "$i" || { stop "$dir"; exit 1; }
    nodes+=("127.0.0.$i:$port")
  done
  if [ "$n" -gt 1 ]; then
    for i in $(seq "$n"); do
      wait_peers_up "$dir" "$i" || { stop "$dir"; exit 1; }
    done
  fi
  (IFS=,; echo "SCYLLA_NODES=${nodes[*]}")
}

stop_node() {
  local home=$1 pid
  [ -f "$home/pid" ] || return 0
  pid=$(cat "$home/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$home/pid"
}

stop() {
  local dir=$1 home
  for home in "$dir"/node*; do
    [ ! -d "$home" ] || stop_node "$home"
  done
}

kill_node() {
  local home=$1/node$2
  [ -f "$home/pid" ] || die "node $2 is not running in $1"
  kill -9 "$(cat "$home/pid")" 2>/dev/null || true
  rm -f "$home/pid"
}

restart_node() {
  local dir=$1 i=$2
  [ -f "$dir/node$i/cassandra.yaml" ] || die "no node $i in $dir"
  [ ! -f "$dir/node$i/pid" ] || die "node $i is running"
  launch "$dir" "$i"
  wait_peers_up "$dir" "$i"
  echo "SCYLLA_NODE=127.0.0.$i:$(cat "$dir/port")"
}

cmd=${1:-}
[ "$#" -eq 0 ] || shift
index=""
case "$cmd" in
  kill | restart)
    index=${1:?usage: scripts/cql.sh $cmd I [--dir DIR]}
    shift
    ;;
esac
dir=${TMPDIR:-/tmp}/chat-cql nodes=1 port="" write_timeout_ms=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --write-timeout-ms)
      write_timeout_ms=$2
      [[ $write_timeout_ms =~ ^[0-9]+$ ]] || die "--write-timeout-ms takes milliseconds"
      shift 2
      ;;
    *) die "unknown argument $1" ;;
  esac
done
case "$cmd" in
  start) start "$dir" "$nodes" "$port" ;;
  stop) stop "$dir" ;;
  kill) kill_node "$dir" "$index" ;;
  restart) restart_node "$dir" "$index" ;;
  *) die "usage: scripts/cql.sh start [--nodes N] [--dir DIR] [--port P] [--write-timeout-ms MS] | stop [--dir DIR] | kill I [--dir DIR] | restart I [--dir DIR]" ;;
esac
