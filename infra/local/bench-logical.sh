#!/usr/bin/env bash
# The logical backup benchmark on the local stack: for each size (default 256 MiB and 1 GiB of
# generated Catalyst Auth data) it measures the logical backup to the local S3 endpoint (wall time
# and peak RSS of the process that ran it), the logical restore into an empty staging database,
# and beside them `pg_dump -Fc` to a file and `pg_restore -j 2` of that file, in alternating
# rounds on a settled server, and prints the medians, the ratios and each round's ratios. Not a
# test: it takes several minutes and a release build.
#   SIZES_MIB=256,1024 ROUNDS=3 PARALLELISM=2 SEGMENT_MIB=64 infra/local/bench-logical.sh
# With `fanout`, the fanned-out backup and restore instead: per-worker throughput and its scaling
# with 1, 2 and 4 concurrent worker processes on a 1 GiB database, beside one invocation and
# pg_dump -Fc (the backup) or pg_restore -j 2 (the restore):
#   SIZES_MIB=1024 WORKERS=1,2,4 ROUNDS=1 BATCH_MIB=256 infra/local/bench-logical.sh fanout
# Set KEEP_STACK=1 to leave the stack running; STATE=dir to use a stack that is already up.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK="$ROOT/infra/local/stack.sh"

if [ -n "${STATE:-}" ] && [ -f "$STATE/env" ]; then
  echo "== using the stack in $STATE" >&2
else
  STATE=${STATE:-$(mktemp -d /tmp/catalyst-dr-bench.XXXXXX)}
  "$STACK" install
  if [ "${KEEP_STACK:-0}" != 1 ]; then trap '"$STACK" down "$STATE"' EXIT; fi
  "$STACK" up "$STATE"
fi
# shellcheck disable=SC1091
source "$STATE/env"

cd "$ROOT"
echo "== cargo build --release --bin bench-logical" >&2
cargo build --release -p catalyst-dr-tests --bin bench-logical
if [ "${1:-}" = fanout ]; then
  RUST_LOG=${RUST_LOG:-warn} "$ROOT/target/release/bench-logical" fanout \
    --sizes-mib "${SIZES_MIB:-1024}" --workers "${WORKERS:-1,2,4}" --rounds "${ROUNDS:-1}" \
    --segment-mib "${SEGMENT_MIB:-64}" --batch-mib "${BATCH_MIB:-256}"
  exit
fi
RUST_LOG=${RUST_LOG:-warn} "$ROOT/target/release/bench-logical" run \
  --sizes-mib "${SIZES_MIB:-256,1024}" --rounds "${ROUNDS:-3}" --parallelism "${PARALLELISM:-2}" --segment-mib "${SEGMENT_MIB:-64}"
