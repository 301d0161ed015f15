#!/usr/bin/env bash
# Checks the layering inside the crates whose modules could import each
# other freely: a module may import (`crate::x`) only modules of a lower
# layer, never its own layer or a higher one, so there is no import cycle.
# Crates give this for free between them (Cargo refuses cycles); inside a
# crate this script does. A module that is in no layer fails too: place
# every new module. Test code (`tests.rs` files and the `testing` module,
# compiled only for tests) may use stand-ins from any layer and is not
# checked.
#
#   scripts/layers.sh        exits 1 and names each bad import
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0

# check CRATE_DIR "layer 0 modules" "layer 1 modules" ...
check() {
  local dir=$1
  shift
  local -A rank=()
  local i=0 m
  for layer in "$@"; do
    for m in $layer; do rank[$m]=$i; done
    i=$((i + 1))
  done
  local file mod text used
  while IFS= read -r file; do
    mod=${file#"$dir"/src/}
    mod=${mod%%/*}
    mod=${mod%.rs}
    case $mod in lib | main | testing) continue ;; esac
    case $file in */tests.rs) continue ;; esac
    if [ -z "${rank[$mod]+set}" ]; then
      echo "layers: $dir: module '$mod' ($file) is in no layer; add it to scripts/layers.sh" >&2
      failed=1
      continue
    fi
    # One line per file, comments dropped, so `use crate::{a, b}` spread
    # over lines reads as one; then every name after `crate::` or inside
    # its braces.
    text=$(sed -e 's://.*$::' "$file" | tr '\n' ' ')
    used=$(
      {
        grep -oE 'crate::[a-z_][a-z0-9_]*' <<<"$text" | sed 's/^crate:://' || true
        grep -oE 'crate::\{[^}]*\}' <<<"$text" | sed 's/^crate::{//; s/}$//' | tr ',' '\n' |
          sed -E 's/^[[:space:]]*//; s/[^a-z0-9_].*$//' || true
      } | { grep -v '^$' || true; } | sort -u
    )
    for m in $used; do
      [ "$m" = "$mod" ] && continue
      if [ -z "${rank[$m]+set}" ]; then
        echo "layers: $file imports crate::$m, which is in no layer" >&2
        failed=1
      elif [ "${rank[$m]}" -ge "${rank[$mod]}" ]; then
        echo "layers: $file ($mod, layer ${rank[$mod]}) imports crate::$m (layer ${rank[$m]}): only lower layers" >&2
        failed=1
      fi
    done
  done < <(find "$dir/src" -name '*.rs' | sort)
  return 0
}

# actors/: leaves; connection handles; messages; shared tables; interest;
# fan-out; the actors and the dispatcher; the composition; the Router.
check actors \
  "error maps placement metrics rate telemetry" \
  "conn" \
  "msg" \
  "cluster running watchers" \
  "interest" \
  "fanout" \
  "catch_up" \
  "conversation session dispatch" \
  "services" \
  "router"

# node/: auth; config; membership, HTTP errors and health probes; the shared
# state; the handlers; the admin API (on the handlers' auth); starting and
# serving; the operators' commands (on the store as the node opens it).
check node \
  "auth gate origin" \
  "config" \
  "membership error listener health telemetry" \
  "state" \
  "http ws web" \
  "admin" \
  "app" \
  "operator"

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "layers: ok"
