#!/usr/bin/env bash
# Builds the web app (web/dist) when it is missing or older than its sources:
# `npm ci` from the lock file the first time, then `npm run build`.
# Used by scripts/run.sh, scripts/cluster.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/../web"
# shellcheck source=scripts/lib/npm.sh
. ../scripts/lib/npm.sh
# The app talks to the nodes through the SDK: built first.
bash ../scripts/sdk.sh >/dev/null
npm_ready
stale=0
# Two pages (the chat app and the admin console) from one build.
if [ ! -f dist/index.html ] || [ ! -f dist/admin.html ]; then
  stale=1
elif [ -n "$(find src index.html admin.html package.json vite.config.ts tsconfig.json ../sdk/ts/dist -newer dist/index.html -print -quit)" ]; then
  stale=1
fi
if [ "$stale" -eq 1 ]; then
  npm run --silent build
fi
