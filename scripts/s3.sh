#!/usr/bin/env bash
# A real S3-compatible object store for the media tests: s3s-fs 0.14.1 from
# crates.io (it checks SigV4 signatures for real; buckets are directories
# under its root), built once into ~/.cache/chat-s3s (about 4 minutes on
# two cores). 0.14.1 is the newest that builds on Rust 1.95.
#
#   scripts/s3.sh install                 builds it (once)
#   scripts/s3.sh binary                  prints its path (building first)
#   scripts/s3.sh start --dir DIR         runs one on a free loopback port
#                                         with bucket `chat-media`; prints
#                                         S3_ENDPOINT=, S3_ACCESS_KEY=,
#                                         S3_SECRET_KEY=, S3_BUCKET=
#   scripts/s3.sh --dir DIR stop          stops it
set -euo pipefail
VERSION=0.14.1
CACHE=${CHAT_S3S_CACHE:-$HOME/.cache/chat-s3s}
BIN=$CACHE/bin/s3s-fs
ACCESS_KEY=chat-test-access
SECRET_KEY=chat-test-secret-key-0123456789
BUCKET=chat-media

install() {
  mkdir -p "$CACHE"
  # Tests starting at once build once.
  exec 9>"$CACHE/lock"
  flock 9
  if [ ! -x "$BIN" ] || ! "$BIN" --version 2>/dev/null | grep -q "$VERSION"; then
    cargo install s3s-fs --version "$VERSION" --features binary --locked \
      --root "$CACHE" -j 2 >&2
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  local dir=$1
  install
  mkdir -p "$dir/root/$BUCKET"
  local port
  port=$(free_port)
  "$BIN" --host 127.0.0.1 --port "$port" --access-key "$ACCESS_KEY" \
    --secret-key "$SECRET_KEY" "$dir/root" >"$dir/s3s.log" 2>&1 &
  echo $! >"$dir/s3s.pid"
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "S3_ENDPOINT=http://127.0.0.1:$port"
      echo "S3_ACCESS_KEY=$ACCESS_KEY"
      echo "S3_SECRET_KEY=$SECRET_KEY"
      echo "S3_BUCKET=$BUCKET"
      return 0
    fi
    kill -0 "$(cat "$dir/s3s.pid")" 2>/dev/null || { cat "$dir/s3s.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "s3s-fs did not answer on port $port" >&2
  exit 1
}

dir=""
cmd=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    install|binary|start|stop) cmd=$1; shift ;;
    *) echo "usage: scripts/s3.sh install|binary|start --dir DIR|--dir DIR stop" >&2; exit 2 ;;
  esac
done
case "$cmd" in
  install) install ;;
  binary) install; echo "$BIN" ;;
  start) [ -n "$dir" ] || { echo "start needs --dir" >&2; exit 2; }; start "$dir" ;;
  stop)
    [ -n "$dir" ] || { echo "stop needs --dir" >&2; exit 2; }
    if [ -f "$dir/s3s.pid" ]; then kill "$(cat "$dir/s3s.pid")" 2>/dev/null || true; rm -f "$dir/s3s.pid"; fi
    ;;
  *) echo "usage: scripts/s3.sh install|binary|start --dir DIR|--dir DIR stop" >&2; exit 2 ;;
esac
