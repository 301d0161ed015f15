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

installed() {
  [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -qx "s3s-fs $VERSION"
}

install() {
  installed && return 0
  mkdir -p "$CACHE"
  # Tests starting at once build once. The lock is let go before any
  # server starts: a server holding it (fd 9 inherited) once kept every
  # other test waiting for as long as it ran.
  exec 9>"$CACHE/lock"
  flock 9
  if ! installed; then
    printf 's3.sh: building s3s-fs %s into %s (first time: about 4 min)\n' \
      "$VERSION" "$CACHE" >&2
    cargo install s3s-fs --version "$VERSION" --features binary --locked \
      --root "$CACHE" -j 2 >&2
  fi
  exec 9>&-
}

# A free loopback port below the kernel's ephemeral range (as
# chat_testkit::free_port picks them): a port from there could be taken by
# an outgoing connection before the server binds it.
free_port() {
  python3 - <<'PY'
import random, socket
for _ in range(1000):
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("no free port")
PY
}

start() {
  local dir=$1
  install
  mkdir -p "$dir/root/$BUCKET"
  local port
  port=$(free_port)
  "$BIN" --host 127.0.0.1 --port "$port" --access-key "$ACCESS_KEY" \
    --secret-key "$SECRET_KEY" "$dir/root" >"$dir/s3s.log" 2>&1 9>&- &
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
    if [ -f "$dir/s3s.pid" ]; then
      pid=$(cat "$dir/s3s.pid")
      kill "$pid" 2>/dev/null || true
      # Gone before this returns, so that the directory may be removed.
      for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
      done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/s3s.pid"
    fi
    ;;
  *) echo "usage: scripts/s3.sh install|binary|start --dir DIR|--dir DIR stop" >&2; exit 2 ;;
esac
