#!/usr/bin/env bash
# The logical backup benchmark on the local stack: for each size (default 256 MiB and 1 GiB of
# generated Catalyst Auth data) it measures the logical backup to the local S3 endpoint (wall time
# and peak RSS of the process that ran it), the logical restore into an empty staging database,
# and beside them `pg_dump -Fc` to a file and `pg_restore -j 2` of that file, in alternating
# rounds on a settled server, and prints the medians, the ratios and each round's ratios. Not a
# test: it takes several minutes and a release build.
#   SIZES_MIB=256,1024 ROUNDS=3 PARALLELISM=2 SEGMENT_MIB=64 infra/local/bench-logical.sh
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
RUST_LOG=${RUST_LOG:-warn} "$ROOT/target/release/bench-logical" run \
  --sizes-mib "${SIZES_MIB:-256,1024}" --rounds "${ROUNDS:-3}" --parallelism "${PARALLELISM:-2}" --segment-mib "${SEGMENT_MIB:-64}"
