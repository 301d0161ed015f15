#!/usr/bin/env bash
# Checks the layering inside every crate of the workspace: a module may use
# (`crate::x`, `super::x`, a root re-export of x's items...) only modules of a
# lower layer, never its own layer or a higher one, and the files inside one
# module may not use each other in a circle; so there is no import cycle.
# Crates give this for free between them (Cargo refuses cycles); inside a
# crate this script does. A module that is in no layer fails too: place
# every new module. Test code (`#[cfg(test)]` items, `tests.rs` files and the
# `testing` module, compiled only for tests) may use stand-ins from any layer
# and is not checked.
#
# The reading is scripts/layers.py (how paths are resolved: its docstring);
# scripts/layers_test.py checks that it catches each kind of bad import.
#
#   scripts/layers.sh        exits 1 and names each bad import and circle
#   python3 scripts/layers.py --graph bench    what each file of bench/ uses
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0

# check CRATE_DIR "layer 0 modules" "layer 1 modules" ...
check() {
  python3 scripts/layers.py "$@" || failed=1
}

# protocol/: leaves; the objects and the codecs; what holds objects and the
# limits on them; the client frames; a request to a conversation, local or
# remote; the frames between nodes.
check protocol \
  "error ids media" \
  "codec message notify people presence" \
  "conversation held limits" \
  "frame" \
  "request" \
  "peer"

# storage/: what the store keeps, by kind; leases over history; the two
# backends and the conformance suite (which sees only the trait); the
# replicated store over the embedded one.
check storage \
  "accounts conversations credentials history logins media moderation notifications outbox people profiles relations reports" \
  "leases access" \
  "conformance embedded scylladb" \
  "replicated"

# presence/: the Redis backend over the trait in lib.rs (its files: config
# and state at the bottom, then the commands, reads, writes and tasks that
# work on the shared state, and redis.rs, the face, over all of them).
check presence \
  "redis"

# search/: the configuration and the reading of queries; the embedded
# index over them; the contract (which sees only the trait in lib.rs).
check search \
  "config query" \
  "embedded opensearch" \
  "conformance"

# media/: the configuration, links and sniffing; the object store and the
# images (each over the configuration and the error in lib.rs).
check media \
  "config links sniff" \
  "blobs images"

# actors/: leaves; connection handles; messages; shared tables; interest;
# fan-out; the actors and the dispatcher; the composition; the Router.
check actors \
  "error events maps media placement metrics rate telemetry tuning" \
  "conn" \
  "msg" \
  "cluster leases running watchers" \
  "interest" \
  "fanout" \
  "catch_up" \
  "conversation session dispatch" \
  "services" \
  "router"

# node/: auth and the process's memory; config; client TLS; membership, HTTP errors and health probes; the shared
# state; the handlers; the admin API (on the handlers' auth); starting and
# serving; the operators' commands (on the store as the node opens it).
check node \
  "auth gate memory origin" \
  "config" \
  "tls" \
  "membership error listener health notifier telemetry" \
  "media search" \
  "app" \
  "http ws web" \
  "admin avatars notifications oidc people relations roles security socketio uploads" \
  "profiles" \
  "downloads results" \
  "dead_letters reports" \
  "serve" \
  "operator reindex"

# bench/: leaves (timed bodies, the command line, what clients read,
# sockets, reactions, statistics, the machine, the ceiling server, the push
# service of notification runs, chat frames as Socket.IO packets); the
# client of each target, tokens and CPU windows; one connection to any
# target, and reports; the scenarios.
check bench \
  "body ceiling cli client_sio incoming net push_sink reactions stats sys" \
  "auth centrifugo client cpu socketio" \
  "conn report" \
  "scenario"

# testkit/: the waiting helpers and most servers in lib.rs; the Redis
# Cluster (which uses lib.rs's free_port) under nothing.
check testkit \
  "redis_cluster"

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "layers: ok"
