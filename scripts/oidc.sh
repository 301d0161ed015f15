#!/usr/bin/env bash
# A real OpenID Connect provider for the sign-in tests: NAV's
# mock-oauth2-server 6.0.2 from Maven Central (its jars cached, about 30 MB,
# in ~/.cache/chat-oidc), run with plain `java` (17) on a loopback port.
# Its login form is posted by the tests (a username and the claims the ID
# token carries), as a person would fill it in.
#
#   scripts/oidc.sh install       fetches the jars (once)
#   scripts/oidc.sh classpath     prints the java classpath (installing first)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=6.0.2
CACHE=${CHAT_OIDC_CACHE:-$HOME/.cache/chat-oidc}/mock-oauth2-server-$VERSION

install() {
  local need=()
  command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || need+=(maven)
  if [ "${#need[@]}" -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  # Tests starting at once fetch once.
  mkdir -p "$(dirname "$CACHE")"
  exec 9>"$CACHE.lock"
  flock 9
  if [ ! -f "$CACHE/complete" ]; then
    mkdir -p "$CACHE"
    mvn -q -B -f "$ROOT/scripts/oidc/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$CACHE/lib" >&2
    touch "$CACHE/complete"
  fi
}

case "${1:-}" in
  install) install ;;
  classpath)
    install
    echo "$CACHE/lib/*"
    ;;
  *)
    echo "usage: scripts/oidc.sh install|classpath" >&2
    exit 2
    ;;
esac
