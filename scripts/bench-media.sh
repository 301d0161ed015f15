#!/usr/bin/env bash
# What uploads cost: PARALLEL uploads of SIZE bytes at once (20 x 25 MiB by
# default), streamed with chunked encoding, against a fresh release node
# pinned to core 0, the client (bench/media/uploads.py) on core 1. Prints
# MiB/s, the node's CPU per MiB, and its resident memory idle and at its
# peak: uploads are streamed part by part, so the peak must stay within
# 64 MiB of idle. BACKEND=s3 runs the same against s3s-fs (scripts/s3.sh,
# on core 1 beside the client). Benchmark only on a quiet machine.
#
#   scripts/bench-media.sh
#   BACKEND=s3 PARALLEL=20 SIZE=26214400 scripts/bench-media.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PARALLEL=${PARALLEL:-20}
SIZE=${SIZE:-26214400}
BACKEND=${BACKEND:-local}

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p chat-node
. scripts/lib/bench-node.sh
RUN_DIR=$(bench_run_dir media)
on_exit 'bash scripts/s3.sh --dir "$RUN_DIR" stop'
PORT=$(free_port)
env=(
  "CHAT__AUTH__JWT_SECRET=bench-media-secret-0123456789abcdef"
  "CHAT__MEDIA__QUOTA_BYTES=$((PARALLEL * SIZE * 2))"
  "CHAT__MEDIA__MAX_UPLOAD_BYTES=$SIZE"
)
if [ "$BACKEND" = s3 ]; then
  S3_ENV=$(taskset -c 1 bash scripts/s3.sh start --dir "$RUN_DIR")
  val() { echo "$S3_ENV" | sed -n "s/^$1=//p"; }
  env+=(
    "CHAT__MEDIA__BACKEND=s3"
    "CHAT__MEDIA__S3__ENDPOINT=$(val S3_ENDPOINT)"
    "CHAT__MEDIA__S3__BUCKET=$(val S3_BUCKET)"
    "CHAT__MEDIA__S3__ACCESS_KEY_ID=$(val S3_ACCESS_KEY)"
    "CHAT__MEDIA__S3__SECRET_ACCESS_KEY=$(val S3_SECRET_KEY)"
    "CHAT__MEDIA__S3__ALLOW_HTTP=true"
  )
fi
start_node "$PORT" "$RUN_DIR/data" "${env[@]}"
echo "backend=$BACKEND parallel=$PARALLEL size=$SIZE"
taskset -c 1 python3 bench/media/uploads.py 127.0.0.1 "$PORT" "$NODE_PID" "$PARALLEL" "$SIZE"
