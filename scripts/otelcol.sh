#!/usr/bin/env bash
# A real OpenTelemetry Collector (OTLP in, traces to a JSON-lines file) for
# tests and local operators, built from source with `go build` from
# deploy/otelcol (collector v0.161.0 / v1.67.0 and contrib's fileexporter,
# from the Go module proxy): no prebuilt binary is downloaded. Needs Go 1.26.
#
#   scripts/otelcol.sh build
#       prints the binary's path as its last line; builds it only when it is
#       missing or deploy/otelcol's sources changed (about 2 min on 2
#       cores from a cold Go build cache, under nice)
#   scripts/otelcol.sh run [--grpc HOST:PORT] [--http HOST:PORT] [--file PATH]
#                          [--flush-interval DURATION] [--config PATH] [-- ARGS]
#       builds if needed, then execs the collector with deploy/otelcol/config.yaml
#       (defaults: 127.0.0.1:4317, 127.0.0.1:4318, ./otelcol-traces.jsonl,
#       200ms); ARGS go to the collector (e.g. --set ...)
#
# The binary is cached per source hash (go.mod, go.sum, *.go and the Go
# version) in ${XDG_CACHE_HOME:-$HOME/.cache}/chat-cluster/otelcol/HASH/otelcol;
# CHAT_OTELCOL_CACHE overrides the folder. Concurrent builds are serialized
# with flock. Modules come to Go's usual GOMODCACHE. A test can also build
# once and start the binary itself:
#   OTELCOL_GRPC_ENDPOINT=127.0.0.1:PORT OTELCOL_TRACES_FILE=PATH \
#     "$(scripts/otelcol.sh build)" --config deploy/otelcol/config.yaml
set -euo pipefail
CALLER=$PWD
cd "$(dirname "$0")/.."
ROOT=$PWD
SRC=$ROOT/deploy/otelcol
CACHE=${CHAT_OTELCOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chat-cluster/otelcol}

# -mod=readonly: go.sum is complete (go mod tidy), and a build never
# rewrites the checked-in go.mod/go.sum.
BUILD_FLAGS=(-mod=readonly -trimpath -ldflags=-s\ -w)

die() { printf 'otelcol.sh: %s\n' "$*" >&2; exit 1; }

# What the binary is made from: the module's files, the toolchain and flags.
source_hash() {
  (
    cd "$SRC"
    go version
    printf '%s\n' "${BUILD_FLAGS[*]}"
    for f in go.mod go.sum $(ls -- *.go | LC_ALL=C sort); do
      printf '%s\n' "$f"
      sha256sum <"$f"
    done
  ) | sha256sum | cut -c1-16
}

build() {
  command -v go >/dev/null 2>&1 || die "go not found: deploy/otelcol needs Go 1.26 or newer"
  local dir bin
  dir=$CACHE/$(source_hash)
  bin=$dir/otelcol
  if [ -x "$bin" ]; then
    echo "$bin"
    return 0
  fi
  mkdir -p "$dir"
  exec 9>"$dir/lock"
  flock 9
  if [ ! -x "$bin" ]; then
    printf 'otelcol.sh: building the collector into %s (first build: about 2 min)\n' "$dir" >&2
    local start=$SECONDS
    (cd "$SRC" && nice -n 10 go build "${BUILD_FLAGS[@]}" -o "$bin.tmp" .) >&2 ||
      { rm -f "$bin.tmp"; die "go build failed in deploy/otelcol"; }
    mv -f "$bin.tmp" "$bin"
    printf 'otelcol.sh: built in %d s\n' "$((SECONDS - start))" >&2
  fi
  exec 9>&-
  echo "$bin"
}

run() {
  local grpc=127.0.0.1:4317 http=127.0.0.1:4318 file=otelcol-traces.jsonl
  local flush=200ms config=$SRC/config.yaml
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --grpc) grpc=$2; shift 2 ;;
      --http) http=$2; shift 2 ;;
      --file) file=$2; shift 2 ;;
      --flush-interval) flush=$2; shift 2 ;;
      --config) config=$2; shift 2 ;;
      --) shift; break ;;
      *) die "unknown argument $1" ;;
    esac
  done
  local bin
  bin=$(build | tail -1)
  printf 'otelcol.sh: OTLP gRPC %s, OTLP HTTP %s, traces to %s\n' "$grpc" "$http" "$file" >&2
  # Relative --file and --config paths are the caller's.
  cd "$CALLER"
  OTELCOL_GRPC_ENDPOINT=$grpc OTELCOL_HTTP_ENDPOINT=$http OTELCOL_TRACES_FILE=$file \
    OTELCOL_FLUSH_INTERVAL=$flush exec "$bin" --config "$config" "$@"
}

cmd=${1:-}
[ "$#" -eq 0 ] || shift
case "$cmd" in
  build) [ "$#" -eq 0 ] || die "build takes no arguments"; build ;;
  run) run "$@" ;;
  *) die "usage: scripts/otelcol.sh build | run [--grpc HOST:PORT] [--http HOST:PORT] [--file PATH] [--flush-interval D] [--config PATH] [-- ARGS]" ;;
esac
