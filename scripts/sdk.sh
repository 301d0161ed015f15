#!/usr/bin/env bash
# Builds the TypeScript SDK (sdk/ts/dist: ESM and type declarations):
# `npm ci` from its lock file when needed, then `npm run build`, which
# type-checks first. Its wire types (sdk/ts/src/protocol.ts) are generated
# from the Rust protocol crate; `cargo test -p chat-protocol` fails when
# they are out of date.
set -euo pipefail
cd "$(dirname "$0")/../sdk/ts"
# shellcheck source=scripts/lib/npm.sh
. ../../scripts/lib/npm.sh
npm_ready
npm run --silent build
