#!/usr/bin/env bash
# The Python the push-service stand-in (scripts/push-service.py) runs on: a
# virtualenv with http-ece and py-vapid (which brings `cryptography`), and
# pyotp, the TOTP tests' code generator (independent of the node's own),
# made once under the cache directory and reused.
#
#   scripts/push-service.sh python    prints that Python's path (making the
#                                     virtualenv on first use, ~10 s)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CHAT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chat-cluster}"
VENV="$CACHE/push-venv"
case "${1:-}" in
  python)
    mkdir -p "$CACHE"
    # Tests running at once make it once.
    exec 9>"$CACHE/push-venv.lock"
    flock 9
    if ! "$VENV/bin/python" -c 'import http_ece, py_vapid, pyotp' >/dev/null 2>&1; then
      rm -rf "$VENV"
      python3 -m venv "$VENV" >&2 || {
        echo "python3 -m venv failed: apt-get install python3-venv" >&2
        exit 1
      }
      "$VENV/bin/pip" install -q 'http-ece==1.2.1' 'py-vapid==1.9.6' 'pyotp==2.9.0' >&2
    fi
    echo "$VENV/bin/python"
    ;;
  *)
    echo "usage: scripts/push-service.sh python" >&2
    exit 2
    ;;
esac
