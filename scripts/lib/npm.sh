# npm for the JavaScript parts (web/, sdk/ts/): `npm_ready` in the package's
# directory checks npm is there and runs `npm ci` from the lock file when
# node_modules is missing or older than it.

npm_ready() {
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found: install Node.js 20 (apt-get install nodejs npm)" >&2
    exit 1
  fi
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
    npm ci --no-audit --no-fund --loglevel=error
    touch node_modules
  fi
}
