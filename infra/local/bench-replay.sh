#!/usr/bin/env bash
# dead-letter-replay benchmark: brings up its own local stack, builds the benchmark in release
# mode and runs it (200,000 dead-lettered deliveries over 2,000 loopback endpoints, a tenth
# unhealthy; replay vs one set-based UPDATE; probes vs distinct endpoints; SQS calls per message
# of a filtered redrive), then stops the stack. Extra arguments go to the benchmark
# (e.g. --deliveries 20000 --endpoints 200). KEEP_STACK=1 leaves the stack running.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK="$ROOT/infra/local/stack.sh"
STATE=$(mktemp -d /tmp/catalyst-dr-bench.XXXXXX)

"$STACK" install
cleanup() { [ "${KEEP_STACK:-0}" = 1 ] || "$STACK" down "$STATE"; }
trap cleanup EXIT
"$STACK" up "$STATE"
# shellcheck disable=SC1091
source "$STATE/env"
cd "$ROOT"
cargo build -q --release -p catalyst-dr-tests --bin bench-replay
RUST_LOG=${RUST_LOG:-warn} "$ROOT/target/release/bench-replay" "$@"
