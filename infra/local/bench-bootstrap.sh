#!/usr/bin/env bash
# Bootstrap size and cold start of each function: builds every function on its own (its own
# cargo feature only, as `sam build` does) with the release profile that deploys and with cargo's
# default release profile, brings up its own local stack, and runs infra/local/bench_bootstrap.py
# (sizes, init and first-response times, ratios; exits 1 over 12 MB or 30 ms init). Extra
# arguments go to bench_bootstrap.py (e.g. --rounds 9). KEEP_STACK=1 leaves the stack running.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK="$ROOT/infra/local/stack.sh"
STATE=$(mktemp -d /tmp/catalyst-dr-bench.XXXXXX)

"$STACK" install
cd "$ROOT"
for binary in snapshot-trigger pitr-restore dead-letter-replay drill-validator; do
  for profile in release release-default; do
    cargo build -q --profile "$profile" -p "$binary"
  done
done
cleanup() { [ "${KEEP_STACK:-0}" = 1 ] || "$STACK" down "$STATE"; }
trap cleanup EXIT
"$STACK" up "$STATE"
"$ROOT/.local/venv/bin/python" "$ROOT/infra/local/bench_bootstrap.py" --state "$STATE" "$@"
