#!/usr/bin/env bash
# Benchmark of the local engine's point-in-time restore against the same restore by hand.
# usage: infra/local/bench-pitr.sh [--bytes N] [--rounds N]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK="$ROOT/infra/local/stack.sh"
STATE=$(mktemp -d /tmp/catalyst-dr-bench.XXXXXX)
"$STACK" install
trap '"$STACK" down "$STATE"' EXIT
"$STACK" up "$STATE"
# shellcheck disable=SC1091
source "$STATE/env"
cd "$ROOT"
cargo run -q --release -p catalyst-dr-tests --bin bench-pitr -- "$@"
