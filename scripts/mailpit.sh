#!/usr/bin/env bash
# Mailpit, the real SMTP server the notification tests send mail to (and
# read it back from through its HTTP API): built once with `go install` from
# the Go module proxy and cached.
#
#   scripts/mailpit.sh build    prints the binary's path (building it first:
#                               about 2.5 min of CPU, once)
#
# The tests run it themselves on free loopback ports:
#   mailpit --smtp 127.0.0.1:PORT --listen 127.0.0.1:PORT --disable-version-check
# (without that flag it asks an outside host for updates). Its web UI assets
# are not in the Go module; the tests use only the API.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${MAILPIT_VERSION:-v1.33.1}
MODULE=github.com/axllent/mailpit
CACHE=${CHAT_MAILPIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chat-cluster/mailpit}

die() { printf 'mailpit.sh: %s\n' "$*" >&2; exit 1; }

build() {
  local dir=$CACHE/$VERSION bin
  bin=$dir/mailpit
  if [ -x "$bin" ]; then
    echo "$bin"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go not found: Mailpit $VERSION needs Go"
  mkdir -p "$dir"
  exec 9>"$dir/lock"
  flock 9
  if [ ! -x "$bin" ]; then
    printf 'mailpit.sh: building Mailpit %s into %s (first build: a few minutes)\n' \
      "$VERSION" "$dir" >&2
    local start=$SECONDS tmp
    tmp=$(mktemp -d "$dir/build.XXXXXX")
    GOBIN=$tmp nice -n 10 go install -trimpath -ldflags="-s -w" "$MODULE@$VERSION" >&2 ||
      { rm -rf "$tmp"; die "go install $MODULE@$VERSION failed"; }
    [ -x "$tmp/mailpit" ] || { rm -rf "$tmp"; die "go install made no mailpit binary"; }
    mv -f "$tmp/mailpit" "$bin"
    rm -rf "$tmp"
    printf 'mailpit.sh: built in %d s\n' "$((SECONDS - start))" >&2
  fi
  exec 9>&-
  echo "$bin"
}

case "${1:-}" in
  build) build ;;
  *) echo "usage: scripts/mailpit.sh build" >&2; exit 2 ;;
esac
