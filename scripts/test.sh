#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, then every test of every crate
# against real servers on loopback, and the web app in headless Chromium
# against a real two-node cluster. Installs what it needs first.
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    for people changing code: formatting, lints,
#                              layers, unit tests and the node suites on the
#                              embedded store (no CQL server, no browser,
#                              no Go builds); a few minutes
#   scripts/test.sh -p chat-node --test chat   extra args go to `cargo test`
#
# A real CQL server (scripts/cql.sh: Apache Cassandra 5.0 from Maven Central)
# runs for the whole suite; SCYLLA_NODES names it and CHAT_REQUIRE_SCYLLA
# makes every ScyllaDB test fail rather than skip without it. The storage
# conformance suite runs on both backends, and the node suites that prove
# the guarantees (order, retry dedupe, paging, catch-up, kill -9, bad input,
# clusters: failover, partitions, membership; the message lifecycle) run a
# second time on nodes on ScyllaDB; the cluster suite (clients spread over three chat nodes) runs a
# third time on a 3-node CQL cluster with replication factor 3 and QUORUM.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# A one-off build (CI's fresh clone) gains nothing from incremental caches,
# which doubled the target directory (13 GB) and once filled CI's disk.
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

if [ "${1:-}" = "--quick" ]; then
  command -v redis-server >/dev/null 2>&1 || {
    echo "redis-server not found: run scripts/test.sh once (it installs it), or apt-get install redis-server" >&2
    exit 1
  }
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings
  log "module layers (scripts/layers.sh, and its own check: scripts/layers_test.py)"
  bash scripts/layers.sh
  python3 scripts/layers_test.py
  log "unit tests, the protocol's and the embedded store's suites, the node suites on the embedded store"
  cargo test --workspace --lib --bins
  cargo test -p chat-protocol --tests
  cargo test -p chat-storage --test embedded --test replicated
  cargo test -p chat-node --test chat --test guarantees --test http_api --test lifecycle \
    --test abuse --test abuse_limits --test hostile --test hostile_pages --test hostile_auth --test notifications --test blocking \
    --test profiles --test account_security --test roles --test reports --test oidc --test media --test search --test search_durability
  exit 0
fi

# Real servers the tests start on free loopback ports.
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
# scripts/layers.sh reads the crates' imports with a Python script; the
# push-service stand-in of the notification tests runs in a virtualenv.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# The web app's tests: Debian's chromium (driven by playwright-core from
# npm), with an emoji font so that screenshots show reactions.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need_apt+=(fonts-noto-color-emoji)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
# A test reads the node's listen backlog with ss.
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
# The shipped alert rules and dashboard are checked against a real one.
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing ${need_apt[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if [ "$#" -eq 0 ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings
  log "module layers (scripts/layers.sh, and its own check: scripts/layers_test.py)"
  bash scripts/layers.sh
  python3 scripts/layers_test.py
fi

# The traces test sends to a real OpenTelemetry Collector, built from the Go
# module proxy (deploy/otelcol; cached after the first build, ~2 min).
if ! command -v go >/dev/null 2>&1; then
  echo "go not found: the OpenTelemetry Collector (deploy/otelcol) needs Go 1.26" >&2
  exit 1
fi
log "the OpenTelemetry Collector (scripts/otelcol.sh build)"
bash scripts/otelcol.sh build
# The bench's smoke test drives a real Centrifugo (v6.9.1, go install; cached).
log "Centrifugo for the bench's smoke test (scripts/centrifugo.sh build)"
bash scripts/centrifugo.sh build

# The notification tests mail through a real SMTP server (Mailpit, go
# install; cached) and push to a stand-in that decrypts with Python's
# http-ece (a cached virtualenv).
log "Mailpit and the push-service stand-in (scripts/mailpit.sh, scripts/push-service.sh)"
bash scripts/mailpit.sh build
bash scripts/push-service.sh python
# The OpenID Connect sign-in tests run a real provider (NAV's
# mock-oauth2-server from Maven Central, on Java 17; cached).
log "the OpenID Connect provider (scripts/oidc.sh install)"
bash scripts/oidc.sh install
# The search tests run a real OpenSearch (one node from Maven Central's
# jars, on the Java 25 JDK; cached).
log "OpenSearch for the search tests (scripts/opensearch.sh install)"
bash scripts/opensearch.sh install

log "starting a CQL server (scripts/cql.sh)"
CQL_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chat-test-cql.XXXXXX")
OUT=$(mktemp "${TMPDIR:-/tmp}/chat-test-out.XXXXXX")
CQL3_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chat-test-cql3.XXXXXX")
S3_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chat-test-s3.XXXXXX")
OS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chat-test-opensearch.XXXXXX")
cleanup() {
  local status=$?
  # A test that failed on the database (a timeout, an unavailable replica)
  # is diagnosed from the servers' own account: their warnings and GC pauses.
  if [ "$status" -ne 0 ]; then
    for f in "$CQL_DIR"/node*/cassandra.log "$CQL3_DIR"/node*/cassandra.log; do
      [ -f "$f" ] || continue
      echo "== the CQL server's warnings, $f (last 40)"
      grep -E '^(WARN|ERROR)|GCInspector' "$f" | tail -40 || true
    done
  fi
  bash scripts/cql.sh stop --dir "$CQL_DIR" || true
  bash scripts/cql.sh stop --dir "$CQL3_DIR" || true
  bash scripts/s3.sh --dir "$S3_DIR" stop || true
  bash scripts/opensearch.sh --dir "$OS_DIR" stop || true
  rm -rf "$CQL_DIR" "$CQL3_DIR" "$S3_DIR" "$OS_DIR" "$OUT"
}
trap cleanup EXIT
# The media tests keep files in a real S3 store (s3s-fs from crates.io,
# which checks signatures; built once, cached), one for the whole run.
log "an S3 store for the media tests (scripts/s3.sh)"
S3_ENV=$(bash scripts/s3.sh start --dir "$S3_DIR")
eval "export $(echo "$S3_ENV" | tr '\n' ' ')"
echo "$S3_ENV" | head -1
log "OpenSearch for the search tests (scripts/opensearch.sh)"
OPENSEARCH_URL=$(bash scripts/opensearch.sh start --dir "$OS_DIR" | sed -n 's/^OPENSEARCH_URL=//p')
[ -n "$OPENSEARCH_URL" ] || { echo "OpenSearch did not start" >&2; exit 1; }
export OPENSEARCH_URL
echo "OPENSEARCH_URL=$OPENSEARCH_URL"
# The suite's server holds every keyspace the suites make (each some 35
# tables, whose per-table state lives on the heap): with 512 MiB it ran out
# of heap late in the run (CI: OutOfMemoryError in a mutation thread, a
# 662 ms full GC, and writes timing out at 2 s with no reply).
SCYLLA_NODES=$(CQL_HEAP=1536m bash scripts/cql.sh start --dir "$CQL_DIR" | sed -n 's/^SCYLLA_NODES=//p' | tail -1)
[ -n "$SCYLLA_NODES" ] || { echo "the CQL server did not start" >&2; exit 1; }
export SCYLLA_NODES CHAT_REQUIRE_SCYLLA=1
echo "SCYLLA_NODES=$SCYLLA_NODES"

if [ "$#" -eq 0 ]; then
  # The rolling-upgrade test (node/tests/upgrade.rs) runs nodes of the
  # release this one upgrades from: that revision of this repository,
  # built once per revision into target/previous (no debug info: smaller).
  PREVIOUS=$(tr -d '[:space:]' < deploy/PREVIOUS_RELEASE)
  log "the previous release $PREVIOUS, for the rolling-upgrade test"
  if [ "$(cat target/previous/built 2>/dev/null)" != "$PREVIOUS" ] || [ ! -x target/previous/debug/chat-node ]; then
    # A shallow clone lacks it: deepen (or fetch that commit) first.
    git cat-file -e "$PREVIOUS^{commit}" 2>/dev/null ||
      git fetch --quiet --unshallow 2>/dev/null || git fetch --quiet origin "$PREVIOUS" || true
    git cat-file -e "$PREVIOUS^{commit}" 2>/dev/null ||
      { echo "the previous release $PREVIOUS is not in this clone (deploy/PREVIOUS_RELEASE)" >&2; exit 1; }
    rm -rf target/previous/src
    mkdir -p target/previous/src
    git archive "$PREVIOUS" | tar -x -C target/previous/src
    CARGO_PROFILE_DEV_DEBUG=0 CARGO_TARGET_DIR="$PWD/target/previous" \
      cargo build --locked -p chat-node --manifest-path target/previous/src/Cargo.toml
    echo "$PREVIOUS" > target/previous/built
  fi
  export CHAT_PREVIOUS_NODE_BIN="$PWD/target/previous/debug/chat-node" CHAT_REQUIRE_PREVIOUS=1
fi

log "cargo test"
cargo test --workspace "$@" 2>&1 | tee "$OUT"

if [ "$#" -eq 0 ]; then
  log "the web app in a real browser (web/tests, chromium + playwright-core)"
  bash scripts/web.sh
  cargo build -p chat-node
  (cd web && CHAT_NODE_BIN="$PWD/../target/debug/chat-node" node --test tests/) 2>&1 | tee -a "$OUT"
  log "the TypeScript SDK (sdk/ts): its build, and its tests against real nodes"
  bash scripts/sdk.sh
  (cd sdk/ts && CHAT_NODE_BIN="$PWD/../../target/debug/chat-node" node --test test/) 2>&1 | tee -a "$OUT"
fi

if [ "$#" -eq 0 ]; then
  log "node suites on the ScyllaDB backend (CHAT_TEST_STORAGE=scylla)"
  CHAT_TEST_STORAGE=scylla cargo test -p chat-node \
    --test guarantees --test chat --test http_api --test abuse --test abuse_limits --test cluster --test cluster_failover --test cluster_protocol \
    --test cluster_admin --test cluster_telemetry --test lifecycle \
    --test live_delivery --test hostile_pages --test notifications --test notifications_mail --test notifications_webhooks \
    --test notifications_cluster --test blocking --test profiles --test account_security --test roles \
    --test reports --test oidc --test media --test media_s3 \
    2>&1 | tee -a "$OUT"
  CHAT_TEST_STORAGE=scylla cargo test -p chat-node --test process kill_9 2>&1 | tee -a "$OUT"

  # On ScyllaDB, search is OpenSearch's (an index on one node's disk would
  # hold only what that node indexed): the search suites on it run here.
  log "the search suite on OpenSearch (CHAT_TEST_SEARCH=opensearch), on both stores"
  CHAT_TEST_SEARCH=opensearch cargo test -p chat-node --test search --test search_durability 2>&1 | tee -a "$OUT"
  CHAT_TEST_SEARCH=opensearch CHAT_TEST_STORAGE=scylla cargo test -p chat-node --test search --test search_durability 2>&1 | tee -a "$OUT"

  log "storage conformance, per backend"
  for backend in embedded scylla; do
    passed=$(grep -c "^test $backend::check_.* ok$" "$OUT" || true)
    failed=$(grep -c "^test $backend::check_.* FAILED$" "$OUT" || true)
    echo "$backend: $passed conformance checks passed, $failed failed"
    [ "$passed" -gt 0 ] && [ "$failed" -eq 0 ] || exit 1
  done

  log "chat nodes over a 3-node CQL cluster (replication factor 3, QUORUM)"
  bash scripts/cql.sh stop --dir "$CQL_DIR"
  SCYLLA_NODES=$(bash scripts/cql.sh start --nodes 3 --dir "$CQL3_DIR" | sed -n 's/^SCYLLA_NODES=//p' | tail -1)
  [ -n "$SCYLLA_NODES" ] || { echo "the 3-node CQL cluster did not start" >&2; exit 1; }
  echo "SCYLLA_NODES=$SCYLLA_NODES"
  CHAT_TEST_STORAGE=scylla CHAT_TEST_SCYLLA_RF=3 cargo test -p chat-node --test cluster \
    --test cluster_failover --test cluster_protocol --test cluster_admin --test cluster_telemetry
fi
