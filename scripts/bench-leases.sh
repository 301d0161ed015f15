#!/usr/bin/env bash
# What conversation leases cost the database: lightweight transactions per
# second as the active conversations grow (bench/src/bin/leases.rs), against
# a fresh local CQL server (scripts/cql.sh, the servers' default periodic
# commit log unless CQL_COMMITLOG says otherwise), stopped on exit.
# Arguments go to lease-bench; without any:
#   --conversations 1000,10000,100000 --scheme claims
#
#   scripts/bench-leases.sh
#   scripts/bench-leases.sh --conversations 1000,10000 --scheme both --out /tmp/leases.json
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -gt 0 ] || set -- --conversations 1000,10000,100000 --scheme claims

cargo build --release -p chat-bench --bin lease-bench
tmp=$(mktemp -d)
cleanup() {
  bash scripts/cql.sh stop --dir "$tmp/cql" || true
  rm -rf "$tmp"
}
trap cleanup EXIT

nodes=$(CQL_COMMITLOG=${CQL_COMMITLOG:-periodic} bash scripts/cql.sh start --dir "$tmp/cql" \
  | sed -n 's/^SCYLLA_NODES=//p' | tail -1)
[ -n "$nodes" ] || { echo "the CQL server did not start" >&2; exit 1; }
echo "SCYLLA_NODES=$nodes"
target/release/lease-bench --scylla "$nodes" "$@"
