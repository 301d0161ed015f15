#!/usr/bin/env bash
# Builds the TypeScript SDK (sdk/ts/dist: ESM and type declarations) when it
# is missing or older than its sources: `npm ci` from its lock file when
# needed, then `npm run build`, which type-checks first. Its wire types (sdk/ts/src/protocol.ts) are generated
# from the Rust protocol crate; `cargo test -p chat-protocol` fails when
# they are out of date.
set -euo pipefail
cd "$(dirname "$0")/../sdk/ts"
# shellcheck source=scripts/lib/npm.sh
. ../../scripts/lib/npm.sh
npm_ready
if [ ! -f dist/index.js ] || [ ! -f dist/index.d.ts ] ||
  [ -n "$(find src package.json tsconfig.json tsup.config.ts -newer dist/index.js -print -quit)" ]; then
  npm run --silent build
fi
