#!/usr/bin/env bash
# Centrifugo, the open-source real-time server, as a baseline of the bench
# (scripts/bench.sh, bench/tests/smoke.rs): built from source with
# `go install` from the Go module proxy (no prebuilt binary is downloaded).
# Needs Go 1.26.
#
#   scripts/centrifugo.sh build
#       prints the binary's path as its last line; builds it only when it is
#       missing (the first build is heavy: several minutes on 2 cores from a
#       cold Go cache, under nice)
#   scripts/centrifugo.sh config --port PORT --secret SECRET [--out FILE]
#                                [--memory-tuning 0|1] [--history-size N]
#       writes the bench's configuration (JSON, v6 key names) to FILE (or
#       stdout): memory engine, one namespace `chat` that clients may
#       subscribe, publish and read history in, HS256 connection tokens
#       signed with SECRET, no pings during a run
#   scripts/centrifugo.sh version
#       the version this script builds (CENTRIFUGO_VERSION overrides it)
#
# The binary is cached per version in
# ${XDG_CACHE_HOME:-$HOME/.cache}/chat-cluster/centrifugo/VERSION/centrifugo;
# CHAT_CENTRIFUGO_CACHE overrides the folder. Concurrent builds are serialized
# with flock. Modules come to Go's usual GOMODCACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${CENTRIFUGO_VERSION:-v6.9.1}
MODULE=github.com/centrifugal/centrifugo/v6
CACHE=${CHAT_CENTRIFUGO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chat-cluster/centrifugo}

die() { printf 'centrifugo.sh: %s\n' "$*" >&2; exit 1; }

build() {
  local dir=$CACHE/$VERSION bin
  bin=$dir/centrifugo
  if [ -x "$bin" ]; then
    echo "$bin"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go not found: Centrifugo $VERSION needs Go 1.26 or newer"
  mkdir -p "$dir"
  exec 9>"$dir/lock"
  flock 9
  if [ ! -x "$bin" ]; then
    printf 'centrifugo.sh: building Centrifugo %s into %s (first build: several minutes)\n' \
      "$VERSION" "$dir" >&2
    local start=$SECONDS tmp
    tmp=$(mktemp -d "$dir/build.XXXXXX")
    # go install puts the binary, named after the module's last element
    # (`centrifugo`: v6 is a major-version suffix), into GOBIN.
    # The version stamp its release builds carry (`centrifugo version`).
    GOBIN=$tmp nice -n 10 go install -trimpath \
      -ldflags="-s -w -X $MODULE/internal/build.Version=${VERSION#v}" "$MODULE@$VERSION" >&2 ||
      { rm -rf "$tmp"; die "go install $MODULE@$VERSION failed"; }
    [ -x "$tmp/centrifugo" ] || { rm -rf "$tmp"; die "go install made no centrifugo binary"; }
    mv -f "$tmp/centrifugo" "$bin"
    rm -rf "$tmp"
    printf 'centrifugo.sh: built in %d s\n' "$((SECONDS - start))" >&2
  fi
  exec 9>&-
  echo "$bin"
}

config() {
  local port="" secret="" out="" tuning=1 history=1000
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --port) port=$2; shift 2 ;;
      --secret) secret=$2; shift 2 ;;
      --out) out=$2; shift 2 ;;
      --memory-tuning) tuning=$2; shift 2 ;;
      --history-size) history=$2; shift 2 ;;
      *) die "config: unknown argument $1" ;;
    esac
  done
  [ -n "$port" ] && [ -n "$secret" ] || die "config needs --port and --secret"
  case "$port" in *[!0-9]*) die "--port must be a number" ;; esac
  case "$secret" in *[\"\\]* | *[[:cntrl:]]*) die "--secret must not hold quotes, backslashes or control characters" ;; esac
  case "$history" in *[!0-9]*) die "--history-size must be a number" ;; esac
  case "$tuning" in 0) tuning=false ;; 1) tuning=true ;; *) die "--memory-tuning 0|1" ;; esac
  local text
  # Memory engine (the default): history in RAM, nothing written to disk.
  # history_size must hold any history prefill of the bench; the recovery
  # and history limits are its defaults, 300 per request (chat-node: 200).
  # Pings every hour and pong timeout of 30 s: no `{}` pings during a run
  # (the client answers them anyway). queue_max_size: its default (1 MiB of
  # bytes queued per connection): a slow reader is closed (3008), not
  # buffered forever.
  # The memory tuning of the free edition (a 1 KiB read buffer, a shared
  # write buffer pool) is on unless --memory-tuning 0.
  text=$(cat <<JSON
{
  "http_server": { "address": "127.0.0.1", "port": $port },
  "log": { "level": "error" },
  "usage_stats": { "disabled": true },
  "engine": { "type": "memory" },
  "client": {
    "token": { "hmac_secret_key": "$secret" },
    "ping_interval": "1h",
    "pong_timeout": "30s",
    "queue_max_size": 1048576,
    "history_max_publication_limit": 300,
    "recovery_max_publication_limit": 300
  },
  "websocket": {
    "read_buffer_size": $([ "$tuning" = true ] && echo 1024 || echo 0),
    "use_write_buffer_pool": $tuning
  },
  "channel": {
    "namespaces": [
      {
        "name": "chat",
        "allow_subscribe_for_client": true,
        "allow_publish_for_subscriber": true,
        "allow_history_for_subscriber": true,
        "history_size": $history,
        "history_ttl": "1h",
        "force_recovery": true,
        "presence": false
      }
    ]
  }
}
JSON
)
  if [ -n "$out" ]; then
    printf '%s\n' "$text" >"$out"
  else
    printf '%s\n' "$text"
  fi
}

cmd=${1:-}
[ "$#" -eq 0 ] || shift
case "$cmd" in
  build) [ "$#" -eq 0 ] || die "build takes no arguments"; build ;;
  config) config "$@" ;;
  version) echo "$VERSION" ;;
  *) die "usage: scripts/centrifugo.sh build | config --port PORT --secret SECRET [--out FILE] [--memory-tuning 0|1] [--history-size N] | version" ;;
esac
