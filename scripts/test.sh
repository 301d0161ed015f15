#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, then every test of every crate
# against real servers on loopback. Installs what it needs first.
#
#   scripts/test.sh            everything
#   scripts/test.sh -p chat-node --test chat   extra args go to `cargo test`
#
# The ScyllaDB backend does not exist yet; scripts/cql.sh starts the real CQL
# server (Apache Cassandra 5.0) its conformance run will use.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# Real servers the tests start on free loopback ports.
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
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
  log "module layers (scripts/layers.sh)"
  bash scripts/layers.sh
fi

echo "note: no ScyllaDB backend exists yet, so no CQL conformance run; the embedded and replicated stores' conformance runs below"

log "cargo test"
cargo test --workspace "$@"
