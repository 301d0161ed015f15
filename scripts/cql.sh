#!/usr/bin/env bash
# A real CQL server on loopback for the ScyllaDB backend's tests: one Apache
# Cassandra 5.0 node started with plain `java` from Maven Central's
# cassandra-all jars (the scylla driver speaks to Cassandra and ScyllaDB
# alike; ScyllaDB cannot be installed here). Installs Java 17 and Maven if
# missing, and caches the jars (about 70 MB) in ~/.cache/chat-cql.
#
#   scripts/cql.sh start DIR [PORT]   data and logs in DIR; prints the
#                                     address once the node answers CQL
#   scripts/cql.sh stop DIR           stops the node started in DIR
#
# PORT defaults to a free one; the node's gossip port is another free one.
# Ready means the log said "Starting listening for CQL clients" and the port
# accepts connections; a start that takes over 120 s fails with the log.
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

start() {
  local dir=$1 port=${2:-$(free_port)}
  local gossip
  gossip=$(free_port)
  install
  mkdir -p "$dir/data" "$dir/logs" "$dir/tmp"
  dir=$(cd "$dir" && pwd)
  # Unknown keys are fatal to Cassandra: only what a test node needs. One
  # token, given, because token allocation costs over a minute at first boot.
  cat >"$dir/cassandra.yaml" <<EOF
cluster_name: chat-test
num_tokens: 1
initial_token: -9223372036854775808
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $gossip
native_transport_port: $port
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$gossip"
auto_bootstrap: false
commitlog_sync: periodic
commitlog_sync_period: 10000ms
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
auto_snapshot: false
EOF
  # cassandra-all ships no logback configuration: without one it logs DEBUG.
  cat >"$dir/logback.xml" <<'EOF'
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %logger{20}: %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
EOF
  java -Xms512m -Xmx512m -Xss256k -XX:+UseG1GC -XX:ActiveProcessorCount=2 \
    -Djava.net.preferIPv4Stack=true "${JPMS[@]}" \
    -Dcassandra-foreground=yes -Dcassandra.config="file://$dir/cassandra.yaml" \
    -Dcassandra.storagedir="$dir/data" -Dcassandra.logdir="$dir/logs" \
    -Dlogback.configurationFile="$dir/logback.xml" -Djava.io.tmpdir="$dir/tmp" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=1000 \
    -cp "$CACHE/lib/*" org.apache.cassandra.service.CassandraDaemon >"$dir/cassandra.log" 2>&1 &
  echo $! >"$dir/pid"
  local i
  for i in $(seq 1200); do
    if grep -q "Starting listening for CQL clients" "$dir/cassandra.log" 2>/dev/null &&
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "127.0.0.1:$port"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      tail -40 "$dir/cassandra.log" >&2
      die "the CQL server exited while starting"
    fi
    sleep 0.1
  done
  tail -40 "$dir/cassandra.log" >&2
  stop "$dir"
  die "the CQL server did not answer within 120 s"
}

stop() {
  local dir=$1 pid
  [ -f "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "${1:-}" in
  start) start "${2:?usage: scripts/cql.sh start DIR [PORT]}" "${3:-}" ;;
  stop) stop "${2:?usage: scripts/cql.sh stop DIR}" ;;
  *) die "usage: scripts/cql.sh start DIR [PORT] | stop DIR" ;;
esac
